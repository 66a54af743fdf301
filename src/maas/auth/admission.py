"""``Admission``: the one call an inference route makes before and after the model runs.

    ticket = await admission.admit(principal_of(request.state), model, "v2.infer")
    with ticket:                      # records the call even when it raises
        ...
        ticket.version = served_version
        ticket.finish(200, {"rows": n}, compute_s)
    response.headers.update(ticket.headers)

``admit`` checks the request rate and the budgets (one Redis round trip, or none for
in-process limits) and raises ``RateLimited`` or ``QuotaExceeded`` (429, with
``Retry-After``) after recording the refused call. ``finish`` records the call's usage
and charges its tokens. Tokens are known only once generated, so a tokens-per-minute
limit works as OpenAI's does: a call is admitted while the key's token bucket is not
negative, its tokens are taken afterwards (the bucket may go below zero), and the
*next* calls are refused until the bucket refills. Token budgets work the same way.

A key without limits costs one dataclass comparison and a list append: no await.
``admit`` refuses a model name that could not be registered (``InvalidName``) before
anything is metered: routes check names first, this keeps the usage table safe
whatever a route forgets.

``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (seconds until the limit is
whole again) describe the limit that refused the call, or else the first the key has
of: requests per minute, tokens per minute, request budget, token budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType

from maas.auth.principal import ANONYMOUS_ADMIN, KeyLimits, Principal
from maas.auth.quotas import Budget, budget_window
from maas.auth.ratelimit import Bucket, RateLimitBackend, Verdict
from maas.auth.usage import MeteredCall, UsageLedger
from maas.errors import MaasError, QuotaExceeded, RateLimited
from maas.registry.names import validate_name

__all__ = ["Admission", "Ticket", "principal_of"]

_UNLIMITED = KeyLimits()
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_UNITS = ("rows", "prompt_tokens", "completion_tokens", "audio_s", "characters")
_CLIENT_CLOSED = 499  # the caller went away before the answer (nginx's convention)


def principal_of(state: object) -> Principal:
    """The caller of a request (``request.state``); the anonymous admin until keys are on."""
    principal: Principal = getattr(state, "principal", ANONYMOUS_ADMIN)
    return principal


@dataclass(frozen=True, slots=True)
class _Plan:
    """The limits of one key, as the backend's buckets and budgets, for one call."""

    buckets: tuple[Bucket, ...]
    budgets: tuple[Budget, ...]
    limits: tuple[float, ...]  # each limit's size, in verdict order
    tokens_bucket: Bucket | None
    tokens_budget: Budget | None

    def headers(self, verdict: Verdict) -> dict[str, str]:
        index = verdict.denied if verdict.denied >= 0 else 0
        level = verdict.levels[index]
        if index < len(self.buckets):
            bucket = self.buckets[index]
            remaining, reset_s = level, bucket.full_in_s(level)
        else:
            budget = self.budgets[index - len(self.buckets)]
            remaining, reset_s = budget.limit - level, budget.ttl_s
        return {
            "X-RateLimit-Limit": str(int(self.limits[index])),
            "X-RateLimit-Remaining": str(max(0, math.floor(remaining))),
            "X-RateLimit-Reset": str(math.ceil(reset_s)),
        }

    def refusal(self, verdict: Verdict, headers: dict[str, str]) -> MaasError:
        details: dict[str, object] = {
            "limit": int(self.limits[verdict.denied]),
            "remaining": int(headers["X-RateLimit-Remaining"]),
            "reset_s": int(headers["X-RateLimit-Reset"]),
        }
        if verdict.denied < len(self.buckets):
            kind = "tokens" if self.buckets[verdict.denied] is self.tokens_bucket else "requests"
            message = f"{kind} per minute limit of this key exceeded"
            return RateLimited(message, details=details, retry_after=verdict.retry_after_s)
        kind = (
            "tokens" if self.budgets[verdict.denied - len(self.buckets)].cost == 0 else "requests"
        )
        message = f"{kind} budget of this key is spent for this period"
        return QuotaExceeded(message, details=details, retry_after=verdict.retry_after_s)


def _plan(key: str, limits: KeyLimits, prefix: str, now: datetime) -> _Plan:
    # {key} is a Redis Cluster hash tag: all of a key's limits live in one slot.
    base = f"{prefix}:{{{key}}}"
    buckets: list[Bucket] = []
    budgets: list[Budget] = []
    tokens_bucket = tokens_budget = None
    if limits.requests_per_minute is not None:
        rpm = float(limits.requests_per_minute)
        buckets.append(Bucket(f"{base}:rpm", rpm, rpm / 60.0, 1.0))
    if limits.tokens_per_minute is not None:
        tpm = float(limits.tokens_per_minute)
        tokens_bucket = Bucket(f"{base}:tpm", tpm, tpm / 60.0, 0.0)
        buckets.append(tokens_bucket)
    if limits.request_budget is not None or limits.token_budget is not None:
        window = budget_window(limits.budget_period, now)
        ttl_s = window.seconds_left(now)
        if limits.request_budget is not None:
            key_ = f"{base}:requests:{window.period_id}"
            budgets.append(Budget(key_, limits.request_budget, 1, ttl_s))
        if limits.token_budget is not None:
            tokens_budget = Budget(
                f"{base}:tokens:{window.period_id}", limits.token_budget, 0, ttl_s
            )
            budgets.append(tokens_budget)
    sizes = tuple(b.capacity for b in buckets) + tuple(float(b.limit) for b in budgets)
    return _Plan(tuple(buckets), tuple(budgets), sizes, tokens_bucket, tokens_budget)


class Ticket:
    """One admitted call: records its usage once, when finished or when its block exits."""

    __slots__ = (
        "_admission",
        "_done",
        "_plan",
        "_started",
        "endpoint",
        "headers",
        "key_id",
        "model",
        "version",
    )

    def __init__(
        self,
        admission: Admission,
        key_id: str | None,
        model: str,
        endpoint: str,
        plan: _Plan | None,
        headers: Mapping[str, str],
        started: float,
    ) -> None:
        self._admission = admission
        self._plan = plan
        self._started = started
        self._done = False
        self.key_id = key_id
        self.model = model
        self.endpoint = endpoint
        self.version: int | None = None
        #: ``X-RateLimit-*`` for the response; empty for keys without limits.
        self.headers = headers

    def finish(
        self, status: int, units: Mapping[str, float] | None = None, compute_s: float = 0.0
    ) -> bool:
        """Record the call (status, ``rows`` or ``prompt_tokens``/``completion_tokens``,
        ``audio_s`` or ``characters``, compute seconds) and charge its tokens. Only the
        first call counts: the answer says whether this was it."""
        if self._done:
            return False
        self._done = True
        counts = _counts(units)
        self._admission._finished(self, status, counts, compute_s)
        return True

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, MaasError):
            self.finish(exc.status)
        elif isinstance(exc, asyncio.CancelledError):
            self.finish(_CLIENT_CLOSED)
        else:
            self.finish(200 if exc is None else 500)


@dataclass(frozen=True, slots=True)
class _Counts:
    rows: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_s: float = 0.0
    characters: int = 0


_NOTHING = _Counts()


def _counts(units: Mapping[str, float] | None) -> _Counts:
    if not units:
        return _NOTHING
    unknown = set(units) - set(_UNITS)
    if unknown:
        raise ValueError(f"unknown usage units {sorted(unknown)}; known: {_UNITS}")
    return _Counts(
        int(units.get("rows", 0)),
        int(units.get("prompt_tokens", 0)),
        int(units.get("completion_tokens", 0)),
        float(units.get("audio_s", 0.0)),
        int(units.get("characters", 0)),
    )


class Admission:
    """Rate limits and budgets before a call, usage records and token charges after it."""

    def __init__(self, backend: RateLimitBackend, ledger: UsageLedger, *, prefix: str) -> None:
        self._backend = backend
        self._ledger = ledger
        self._prefix = prefix
        self._charges: set[asyncio.Task[None]] = set()

    async def admit(self, principal: Principal, model: str, endpoint: str) -> Ticket:
        """Admit a call or raise ``RateLimited``/``QuotaExceeded`` (after recording it);
        ``InvalidName`` for a model name that cannot exist (recorded nowhere)."""
        validate_name("model", model)
        started = time.perf_counter()
        limits = principal.limits
        if limits is _UNLIMITED or limits == _UNLIMITED:
            return Ticket(self, principal.key_id, model, endpoint, None, _NO_HEADERS, started)
        key = principal.key_id or principal.name
        plan = _plan(key, limits, self._prefix, datetime.now(UTC))
        verdict = await self._backend.acquire(plan.buckets, plan.budgets)
        headers = plan.headers(verdict)
        ticket = Ticket(self, principal.key_id, model, endpoint, plan, headers, started)
        if verdict.allowed:
            return ticket
        error = plan.refusal(verdict, headers)
        ticket.finish(int(error.status))
        raise error

    async def aclose(self) -> None:
        """Wait for the token charges still on their way to the backend, then close it."""
        while self._charges:
            await asyncio.gather(*self._charges)
        await self._backend.aclose()

    def _finished(self, ticket: Ticket, status: int, counts: _Counts, compute_s: float) -> None:
        latency_ms = (time.perf_counter() - ticket._started) * 1000.0
        self._ledger.record(
            MeteredCall(
                ticket.key_id, ticket.model, ticket.version, ticket.endpoint, status,
                latency_ms, counts.rows, counts.prompt_tokens, counts.completion_tokens,
                compute_s, time.time(), counts.audio_s, counts.characters,
            )
        )  # fmt: skip
        tokens = counts.prompt_tokens + counts.completion_tokens
        plan = ticket._plan
        if tokens and plan is not None and (plan.tokens_bucket or plan.tokens_budget):
            self._charge(plan, tokens)

    def _charge(self, plan: _Plan, tokens: int) -> None:
        buckets = () if plan.tokens_bucket is None else (replace(plan.tokens_bucket, cost=tokens),)
        budgets = () if plan.tokens_budget is None else (replace(plan.tokens_budget, cost=tokens),)
        task = asyncio.get_running_loop().create_task(self._backend.charge(buckets, budgets))
        self._charges.add(task)
        task.add_done_callback(self._charges.discard)
