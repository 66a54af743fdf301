"""``GET /api/v1/whoami``: what the calling key is and may do.

The console asks it once at log-in to hide what the key may not do (the server checks
every call anyway); scripts use it to check a key without touching a model.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from maas.api.access import caller
from maas.api.responses import json_response
from maas.auth.principal import Action

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["keys"])


@router.get("/whoami", summary="The calling key: id, name, role, model patterns, actions")
async def whoami(request: Request) -> Response:
    principal = caller(request)
    return json_response(
        {
            "key_id": principal.key_id,
            "name": principal.name,
            "role": principal.role.value,
            "owner": principal.owner,
            "models": list(principal.model_patterns),
            "actions": [action.value for action in Action if principal.allows(action)],
        }
    )
