"""Token buckets and budget counters, checked and spent in one atomic step.

One ``RateLimitBackend`` protocol, two implementations:

* ``MemoryRateLimiter``: state in a dict of this process. ``acquire`` never awaits
  between reading and writing a bucket, so on one event loop no two calls can
  interleave: 50 concurrent calls against a limit of 10 let exactly 10 through.
* ``RedisRateLimiter``: state in Redis, shared by every worker and replica. Each call
  is one Lua script (``EVALSHA``), which Redis runs atomically, and which takes the
  time from Redis itself so replicas with skewed clocks still agree.

A call passes every bucket and budget or none: a refused call spends nothing. A
bucket with ``cost`` 0 is a debt check (tokens per minute): the call passes while
the bucket is not negative, and ``charge`` later takes the tokens the call used,
possibly driving it below zero, which refuses the following calls until it refills.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from maas.auth.quotas import Budget
from maas.errors import Overloaded

__all__ = [
    "Bucket",
    "MemoryRateLimiter",
    "RateLimitBackend",
    "RedisRateLimiter",
    "Verdict",
]

log = logging.getLogger("maas.auth")


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket holding at most ``capacity`` tokens, refilled at ``rate_per_s``.

    A per-minute limit ``n`` is ``Bucket(capacity=n, rate_per_s=n / 60)``: a full
    minute's worth may come in one burst, then one more every ``60 / n`` seconds.
    """

    key: str
    capacity: float
    rate_per_s: float
    cost: float

    def refill(self, tokens: float, elapsed_s: float) -> float:
        return min(self.capacity, tokens + max(0.0, elapsed_s) * self.rate_per_s)

    def refuses(self, tokens: float) -> bool:
        return tokens < self.cost if self.cost > 0 else tokens < 0

    def wait_s(self, tokens: float) -> float:
        """Seconds until this bucket would pass the call."""
        return max(0.0, (max(self.cost, 0.0) - tokens) / self.rate_per_s)

    def full_in_s(self, tokens: float) -> float:
        """Seconds until the bucket is full again (the ``X-RateLimit-Reset`` of a rate)."""
        return max(0.0, (self.capacity - tokens) / self.rate_per_s)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check decided.

    ``levels`` holds, after the call, each bucket's tokens and then each budget's
    used count, in the order given. ``denied`` indexes the first refusing limit in
    that order, or is -1 when the call passed.
    """

    denied: int
    retry_after_s: float
    levels: tuple[float, ...]

    @property
    def allowed(self) -> bool:
        return self.denied < 0


class RateLimitBackend(Protocol):
    """Where buckets and budgets live. Both methods are atomic over all the limits given."""

    async def acquire(self, buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> Verdict:
        """Take each limit's cost if every one of them allows it, else take nothing."""

    async def charge(self, buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> None:
        """Take each cost unconditionally (usage known only after the call)."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryRateLimiter:
    """Limits of one process; exact under asyncio concurrency because it never awaits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._counters: dict[str, tuple[float, float]] = {}  # key -> (used, expires at)

    async def acquire(self, buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> Verdict:
        return self._apply(buckets, budgets, check=True)

    async def charge(self, buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> None:
        self._apply(buckets, budgets, check=False)

    async def aclose(self) -> None:
        self._buckets.clear()
        self._counters.clear()

    def _apply(
        self, buckets: Sequence[Bucket], budgets: Sequence[Budget], *, check: bool
    ) -> Verdict:
        now = self._clock()
        tokens = [self._tokens(bucket, now) for bucket in buckets]
        used = [self._used(budget, now) for budget in budgets]
        if check:
            verdict = _first_refusal(buckets, budgets, tokens, used)
            if verdict is not None:
                return verdict
        levels: list[float] = []
        for bucket, level in zip(buckets, tokens, strict=True):
            self._buckets[bucket.key] = (level - bucket.cost, now)
            levels.append(level - bucket.cost)
        for budget, count in zip(budgets, used, strict=True):
            self._counters[budget.key] = (count + budget.cost, now + budget.ttl_s)
            levels.append(count + budget.cost)
        return Verdict(-1, 0.0, tuple(levels))

    def _tokens(self, bucket: Bucket, now: float) -> float:
        state = self._buckets.get(bucket.key)
        return bucket.capacity if state is None else bucket.refill(state[0], now - state[1])

    def _used(self, budget: Budget, now: float) -> float:
        state = self._counters.get(budget.key)
        return 0.0 if state is None or state[1] <= now else state[0]


def _first_refusal(
    buckets: Sequence[Bucket], budgets: Sequence[Budget], tokens: list[float], used: list[float]
) -> Verdict | None:
    levels = (*tokens, *used)
    for index, (bucket, level) in enumerate(zip(buckets, tokens, strict=True)):
        if bucket.refuses(level):
            return Verdict(index, bucket.wait_s(level), levels)
    for index, (budget, count) in enumerate(zip(budgets, used, strict=True)):
        if budget.refuses(count):
            return Verdict(len(buckets) + index, budget.ttl_s, levels)
    return None


# KEYS: bucket keys, then budget keys. ARGV: check (1/0), bucket count, then
# (capacity, rate, cost) per bucket and (limit, ttl, cost) per budget. Returns the
# refusing index (-1: passed), the wait, and every level, as strings (Lua numbers
# would be truncated to integers).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local check = ARGV[1] == '1'
local nb = tonumber(ARGV[2])
local levels, denied, wait = {}, -1, 0
for i = 1, #KEYS do
  local a = 3 + (i - 1) * 3
  local x, y, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if i <= nb then
    local s = redis.call('HMGET', KEYS[i], 't', 'ts')
    local level = x
    if s[1] then
      level = math.min(x, tonumber(s[1]) + math.max(0, now - tonumber(s[2])) * y)
    end
    levels[i] = level
    local short = (cost > 0 and level < cost) or (cost <= 0 and level < 0)
    if check and denied < 0 and short then
      denied, wait = i - 1, (math.max(cost, 0) - level) / y
    end
  else
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    levels[i] = used
    local over = (cost > 0 and used + cost > x) or (cost <= 0 and used >= x)
    if check and denied < 0 and over then denied, wait = i - 1, y end
  end
end
if denied < 0 then
  for i = 1, #KEYS do
    local a = 3 + (i - 1) * 3
    local x, y, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    levels[i] = levels[i] - (i <= nb and cost or -cost)
    if i <= nb then
      redis.call('HSET', KEYS[i], 't', tostring(levels[i]), 'ts', tostring(now))
      redis.call('PEXPIRE', KEYS[i], math.ceil((x - levels[i]) / y * 1000) + 1000)
    elseif cost > 0 then
      redis.call('INCRBY', KEYS[i], cost)
      redis.call('PEXPIRE', KEYS[i], math.ceil(y * 1000) + 60000)
    end
  end
end
local out = {tostring(denied), tostring(wait)}
for i = 1, #KEYS do out[#out + 1] = tostring(levels[i]) end
return out
"""


class RedisRateLimiter:
    """Limits shared through Redis by every process that uses the same URL and prefix.

    When Redis cannot be reached, limited keys are refused with 503 ``overloaded``
    (fail closed: a quota must not become unlimited because a cache is down); keys
    without limits never touch Redis and keep working.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._script = client.register_script(_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> RedisRateLimiter:
        import redis.asyncio

        return cls(redis.asyncio.from_url(url))

    async def acquire(self, buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> Verdict:
        from redis.exceptions import RedisError

        try:
            reply = await self._script(
                keys=_keys(buckets, budgets), args=_args(buckets, budgets, 1)
            )
        except RedisError as exc:
            log.warning("rate limit store unavailable: %s", exc)
            raise Overloaded("rate limit store unavailable", retry_after=1.0) from None
        values = [float(v) for v in reply]
        return Verdict(int(values[0]), values[1], tuple(values[2:]))

    async def charge(self, buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> None:
        from redis.exceptions import RedisError

        try:
            await self._script(keys=_keys(buckets, budgets), args=_args(buckets, budgets, 0))
        except RedisError as exc:
            log.warning("usage could not be charged to the rate limit store: %s", exc)

    async def aclose(self) -> None:
        await self._client.aclose()


def _keys(buckets: Sequence[Bucket], budgets: Sequence[Budget]) -> list[str]:
    return [b.key for b in buckets] + [b.key for b in budgets]


def _args(buckets: Sequence[Bucket], budgets: Sequence[Budget], check: int) -> list[Any]:
    args: list[Any] = [check, len(buckets)]
    for bucket in buckets:
        args += (repr(bucket.capacity), repr(bucket.rate_per_s), repr(bucket.cost))
    for budget in budgets:
        args += (budget.limit, math.ceil(budget.ttl_s), budget.cost)
    return args
