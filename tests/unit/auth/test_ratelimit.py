"""Token buckets, budget periods and both rate-limit backends (memory and real Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio

from maas.auth.quotas import Budget, budget_window
from maas.auth.ratelimit import Bucket, MemoryRateLimiter, RateLimitBackend, RedisRateLimiter
from maas.errors import Overloaded

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- bucket math ------------------------------------------------------------------------


def test_bucket_refills_at_its_rate_up_to_capacity() -> None:
    bucket = Bucket("k", capacity=10, rate_per_s=10 / 60, cost=1)
    assert bucket.refill(0, 6) == pytest.approx(1)
    assert bucket.refill(4, 30) == pytest.approx(9)
    assert bucket.refill(4, 3600) == 10
    assert bucket.refill(4, -5) == 4  # a clock that steps back adds nothing


def test_bucket_refuses_below_its_cost_and_says_how_long_to_wait() -> None:
    bucket = Bucket("k", capacity=10, rate_per_s=10 / 60, cost=1)
    assert not bucket.refuses(1)
    assert bucket.refuses(0.5)
    assert bucket.wait_s(0.5) == pytest.approx(3)
    assert bucket.full_in_s(4) == pytest.approx(36)


def test_zero_cost_bucket_is_a_debt_check() -> None:
    tokens = Bucket("k", capacity=600, rate_per_s=10, cost=0)
    assert not tokens.refuses(0)
    assert tokens.refuses(-50)
    assert tokens.wait_s(-50) == pytest.approx(5)


# -- budget periods -----------------------------------------------------------------------


def test_day_window_is_the_utc_calendar_day() -> None:
    window = budget_window("day", datetime(2024, 5, 17, 23, 59, 59, tzinfo=UTC))
    assert window.period_id == "d2024-05-17"
    assert window.start == datetime(2024, 5, 17, tzinfo=UTC)
    assert window.end == datetime(2024, 5, 18, tzinfo=UTC)
    after = budget_window("day", datetime(2024, 5, 18, 0, 0, 0, tzinfo=UTC))
    assert after.period_id == "d2024-05-18"


def test_local_times_fall_in_their_utc_day() -> None:
    tokyo = timezone(timedelta(hours=9))
    window = budget_window("day", datetime(2024, 5, 18, 8, 0, tzinfo=tokyo))
    assert window.period_id == "d2024-05-17"


@pytest.mark.parametrize(
    ("now", "period_id", "end"),
    [
        (datetime(2024, 2, 29, 12, tzinfo=UTC), "m2024-02", datetime(2024, 3, 1, tzinfo=UTC)),
        (datetime(2024, 12, 31, 23, 59, tzinfo=UTC), "m2024-12", datetime(2025, 1, 1, tzinfo=UTC)),
        (datetime(2025, 1, 1, tzinfo=UTC), "m2025-01", datetime(2025, 2, 1, tzinfo=UTC)),
    ],
)
def test_month_window_is_the_utc_calendar_month(
    now: datetime, period_id: str, end: datetime
) -> None:
    window = budget_window("month", now)
    assert (window.period_id, window.end) == (period_id, end)
    assert window.seconds_left(now) == (end - now).total_seconds()


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="week"):
        budget_window("week", datetime.now(UTC))


def test_budget_with_cost_refuses_past_its_limit_and_a_check_at_it() -> None:
    requests = Budget("k", limit=5, cost=1, ttl_s=60)
    assert not requests.refuses(4)
    assert requests.refuses(5)
    tokens = Budget("k", limit=1000, cost=0, ttl_s=60)
    assert not tokens.refuses(999)
    assert tokens.refuses(1000)


# -- backends -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def redis_clients(redis_url: str, prefix: str) -> AsyncIterator[Callable[[], object]]:
    """A factory of separate ``redis.asyncio`` clients; the test's keys are deleted after."""
    made: list[redis.asyncio.Redis] = []

    def make() -> redis.asyncio.Redis:
        made.append(redis.asyncio.from_url(redis_url))
        return made[-1]

    yield make
    cleaner = redis.asyncio.from_url(redis_url)
    async for key in cleaner.scan_iter(f"{prefix}:*"):
        await cleaner.delete(key)
    await cleaner.aclose()
    for client in made:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> RateLimitBackend:
    """Each backend test runs on both; ``redis_clients`` closes the Redis ones."""
    if request.param == "memory":
        return MemoryRateLimiter()
    return RedisRateLimiter(request.getfixturevalue("redis_clients")())


def _rpm(prefix: str, limit: int) -> Bucket:
    return Bucket(f"{prefix}:rpm", float(limit), limit / 60, 1.0)


async def _burst(limiter: RateLimitBackend, bucket: Bucket, calls: int) -> int:
    verdicts = await asyncio.gather(*(limiter.acquire([bucket], []) for _ in range(calls)))
    return sum(v.allowed for v in verdicts)


async def test_fifty_concurrent_acquires_against_ten_let_exactly_ten_through(
    backend: RateLimitBackend, prefix: str
) -> None:
    assert await _burst(backend, _rpm(prefix, 10), 50) == 10


async def test_refusal_says_when_to_retry_and_what_is_left(
    backend: RateLimitBackend, prefix: str
) -> None:
    bucket = _rpm(prefix, 10)
    for expected_left in range(9, -1, -1):
        verdict = await backend.acquire([bucket], [])
        assert verdict.allowed
        assert verdict.levels[0] == pytest.approx(expected_left, abs=0.05)
    refused = await backend.acquire([bucket], [])
    assert refused.denied == 0
    assert 5.5 < refused.retry_after_s <= 6.0


async def test_a_refused_call_spends_nothing(backend: RateLimitBackend, prefix: str) -> None:
    bucket = _rpm(prefix, 100)
    budget = Budget(f"{prefix}:requests:d1", limit=3, cost=1, ttl_s=3600)
    started = time.monotonic()
    for _ in range(3):
        assert (await backend.acquire([bucket], [budget])).allowed
    refused = await backend.acquire([bucket], [budget])
    refilled = bucket.rate_per_s * (time.monotonic() - started)  # a loaded machine is slow
    assert refused.denied == 1
    assert refused.retry_after_s == pytest.approx(3600)
    # The bucket still holds 97 plus what refilled: the refused call took nothing from it.
    assert 97 - 0.01 <= refused.levels[0] <= 97 + refilled + 0.01
    assert refused.levels[1] == 3


async def test_tokens_are_charged_after_the_call_and_refuse_the_next(
    backend: RateLimitBackend, prefix: str
) -> None:
    tokens = Bucket(f"{prefix}:tpm", 600.0, 10.0, 0.0)
    budget = Budget(f"{prefix}:tokens:d1", limit=5000, cost=0, ttl_s=3600)
    assert (await backend.acquire([tokens], [budget])).allowed
    await backend.charge([Bucket(tokens.key, 600.0, 10.0, 700.0)], [])
    refused = await backend.acquire([tokens], [budget])
    assert refused.denied == 0
    assert 9 < refused.retry_after_s <= 10  # 100 tokens of debt at 10 per second
    await backend.charge([], [Budget(budget.key, 5000, 5000, 3600)])
    assert (await backend.acquire([], [budget])).denied == 0


async def test_memory_bucket_refills_with_time() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    bucket = Bucket("k", 10.0, 10 / 60, 1.0)
    assert await _burst(limiter, bucket, 12) == 10
    clock.now += 6.0
    assert await _burst(limiter, bucket, 3) == 1


async def test_memory_budget_restarts_when_its_window_ends() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    budget = Budget("b", limit=2, cost=1, ttl_s=10)
    results = [(await limiter.acquire([], [budget])).allowed for _ in range(3)]
    assert results == [True, True, False]
    clock.now += 10.0
    assert (await limiter.acquire([], [budget])).allowed


async def test_redis_limit_is_exact_across_two_clients(
    redis_clients: Callable[[], object], prefix: str
) -> None:
    """Two clients stand for two server processes: together they pass exactly the limit."""
    first, second = RedisRateLimiter(redis_clients()), RedisRateLimiter(redis_clients())
    bucket = _rpm(prefix, 10)
    budget = Budget(f"{prefix}:requests:d1", limit=25, cost=1, ttl_s=60)
    passed = await asyncio.gather(_burst(first, bucket, 25), _burst(second, bucket, 25))
    assert sum(passed) == 10
    wide = _rpm(f"{prefix}:wide", 1000)
    verdicts = await asyncio.gather(
        *(limiter.acquire([wide], [budget]) for limiter in (first, second) for _ in range(20))
    )
    assert sum(v.allowed for v in verdicts) == 25


async def test_redis_keys_expire_once_whole_again(
    redis_clients: Callable[[], object], prefix: str
) -> None:
    client = redis_clients()
    limiter = RedisRateLimiter(client)
    await limiter.acquire([_rpm(prefix, 60)], [Budget(f"{prefix}:b", 5, 1, 30)])
    bucket_ttl = await client.pttl(f"{prefix}:rpm")  # type: ignore[attr-defined]
    budget_ttl = await client.pttl(f"{prefix}:b")  # type: ignore[attr-defined]
    assert 0 < bucket_ttl <= 2000  # one token short: whole again in one second
    assert 30_000 < budget_ttl <= 90_000


async def test_unreachable_redis_refuses_limited_calls_with_503() -> None:
    limiter = RedisRateLimiter(redis.asyncio.from_url("redis://127.0.0.1:1/0"))
    with pytest.raises(Overloaded) as caught:
        await limiter.acquire([_rpm("x", 10)], [])
    assert caught.value.retry_after == 1.0
    await limiter.charge([_rpm("x", 10)], [])  # a lost charge is logged, not raised
    await limiter.aclose()
