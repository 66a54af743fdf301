"""Usage totals (``GET /api/v1/usage``): per key, model and day, as JSON or CSV.

An admin sees every key's usage (and may pick one with ``key``); any other key sees
only its own, and asking for another key's is refused.
"""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.auth.admission import principal_of
from maas.auth.principal import Action, Principal
from maas.auth.usage import parse_group_by
from maas.errors import Forbidden, InvalidRequest
from maas.protocols.bounds import UtcDatetime
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])

_TOTALS = (
    "requests",
    "errors",
    "rows",
    "prompt_tokens",
    "completion_tokens",
    "compute_s",
    "audio_s",
    "characters",
    "mean_latency_ms",
)


@router.get("", summary="Usage totals grouped by key, model and/or day")
async def usage(
    request: Request,
    group_by: str = Query("key,model", description="Comma-separated: key, model, day."),
    since: UtcDatetime | None = Query(None, description="From this time (ISO 8601; UTC if naive)."),
    until: UtcDatetime | None = Query(
        None, description="Before this time (exclusive; UTC if naive)."
    ),
    key: str | None = Query(None, description="One key's usage (admins only for other keys)."),
    format: str = Query("json", pattern="^(json|csv)$", description="json or csv."),
    services: Services = Depends(get_services),
) -> Response:
    groups = parse_group_by(group_by)
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("until must be after since")
    key_id = _visible_key(principal_of(request.state), key)
    await services.usage.flush()  # this server's calls so far are counted
    rows = await asyncio.to_thread(
        services.usage.summarize, groups, since=since, until=until, key_id=key_id
    )
    if format == "csv":
        return _csv(groups, rows)
    return json_response({"group_by": list(groups), "rows": rows})


def _visible_key(principal: Principal, asked: str | None) -> str | None:
    """The key whose usage may be shown: ``None`` for all keys (admins only)."""
    if principal.allows(Action.ADMIN):
        return asked
    if principal.key_id is None or (asked is not None and asked != principal.key_id):
        raise Forbidden("a key may only see its own usage")
    return principal.key_id


def _csv(groups: tuple[str, ...], rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*groups, *_TOTALS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    headers = {"Content-Disposition": 'attachment; filename="usage.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
