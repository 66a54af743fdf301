"""Schemas of the security API (``/api/v1/keys``, ``/api/v1/audit``).

A key's secret appears in exactly one answer, ``KeyCreated`` (create and rotate); every
other view of a key shows its public prefix only, never the secret or its hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

__all__ = ["AuditRecord", "KeyCreate", "KeyCreated", "KeyInfo", "KeyLimitsSpec"]

RoleName = Literal["admin", "deployer", "consumer", "metrics"]

#: Printable text only: names, owners and patterns are shown in listings, logs and the
#: audit trail, where a newline or a terminal escape would forge or hide a line.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
#: A limit is a whole number: JSON ``true`` is not 1, nor is the string ``"5"`` five.
_Limit = Annotated[StrictInt, Field(ge=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KeyLimitsSpec(_Frozen):
    """Per-key limits; ``None`` means unlimited (enforced by the rate limiter)."""

    requests_per_minute: _Limit | None = None
    tokens_per_minute: _Limit | None = None
    request_budget: _Limit | None = None
    token_budget: _Limit | None = None
    budget_period: Literal["day", "month"] = "month"


class KeyCreate(_Frozen):
    name: str = Field(min_length=1, max_length=128, pattern=_PRINTABLE)
    role: RoleName = "consumer"
    models: list[Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)]] = Field(
        default_factory=lambda: ["*"],
        max_length=64,
        description="fnmatch patterns of the models this key may use ('iris*').",
    )
    owner: str | None = Field(None, min_length=1, max_length=128, pattern=_PRINTABLE)
    expires_at: datetime | None = Field(None, description="Aware time; never expires if absent.")
    limits: KeyLimitsSpec = Field(default_factory=KeyLimitsSpec)


class KeyInfo(_Frozen):
    id: str
    prefix: str = Field(description="Public part of the key, for recognising it in lists.")
    name: str
    owner: str | None
    role: RoleName
    models: list[str]
    limits: KeyLimitsSpec
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyInfo):
    key: str = Field(description="The secret, shown this once: store it now.")
    replaces: str | None = Field(
        None, description="On rotation: the id of the key this one replaces (now revoked)."
    )


class AuditRecord(_Frozen):
    id: int
    at: datetime
    actor_key_id: str | None
    actor_name: str
    action: str
    target: str
    source: str | None
    outcome: Literal["ok", "denied", "error"]
    code: str | None
    details: dict[str, Any] = Field(default_factory=dict)
