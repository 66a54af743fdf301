"""``Principal``: who is calling, resolved once per request from the API key.

The API layer puts one on every request (``request.state.principal``); services and
routers ask it what it may do. A model a principal may not see must look exactly like
a model that does not exist (404), so callers learn nothing about other teams' models.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from maas.errors import Forbidden, ModelNotFound
from maas.registry.names import validate_name

__all__ = ["ANONYMOUS_ADMIN", "Action", "KeyLimits", "Principal", "Role", "authorize"]


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, keys included
    DEPLOYER = "deployer"  # push, alias, delete, jobs on the models its patterns match
    CONSUMER = "consumer"  # inference and metadata on the models its patterns match
    METRICS = "metrics"  # a Prometheus scraper: /metrics and nothing else


class Action(enum.StrEnum):
    READ = "read"  # metadata, listings
    INFER = "infer"
    WRITE = "write"  # push, alias, delete, jobs
    ADMIN = "admin"  # keys, usage of others, audit
    METRICS = "metrics"  # scrape /metrics, which names every model and version


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.DEPLOYER: frozenset({Action.READ, Action.INFER, Action.WRITE}),
    Role.CONSUMER: frozenset({Action.READ, Action.INFER}),
    Role.METRICS: frozenset({Action.METRICS}),
}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Per-key limits; ``None`` means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    request_budget: int | None = None  # per budget period
    token_budget: int | None = None  # per budget period
    budget_period: str = "month"  # "day" or "month"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str | None
    name: str
    role: Role
    model_patterns: tuple[str, ...] = ("*",)
    owner: str | None = None
    limits: KeyLimits = field(default_factory=KeyLimits)

    def can_see(self, model: str) -> bool:
        if self.role is Role.METRICS:  # a scraper's key sees no model, whatever its patterns
            return False
        return self.role is Role.ADMIN or any(fnmatchcase(model, p) for p in self.model_patterns)

    def allows(self, action: Action) -> bool:
        return action in _ALLOWED[self.role]


#: The principal of every request when the server runs with ``--no-auth``.
ANONYMOUS_ADMIN = Principal(key_id=None, name="anonymous", role=Role.ADMIN)


def authorize(principal: Principal, action: Action, model: str | None = None) -> Principal:
    """``principal``, if it may do ``action`` (on ``model``); else ``Forbidden``,
    ``InvalidName`` or ``ModelNotFound``.

    The role check comes first and names no model, so a consumer pushing gets 403
    whether or not the model exists. A name that could not be registered is refused
    before any lookup, record or metric label sees it. A model the principal may not
    see answers exactly as a missing one, so a key learns nothing of other teams'.
    Every transport (``maas.api``, the gRPC service) checks through this one function.
    """
    if not principal.allows(action):
        raise Forbidden(f"a {principal.role.value} key may not {action.value}")
    if model is not None:
        validate_name("model", model)
        if not principal.can_see(model):
            raise ModelNotFound(f"model {model!r} not found")
    return principal
