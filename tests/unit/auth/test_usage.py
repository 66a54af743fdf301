"""Usage records (batched writes, aggregates) and the admission facade, over real SQLite
and PostgreSQL (``engine`` from conftest)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, func, select

from maas.auth.admission import Admission, principal_of
from maas.auth.principal import ANONYMOUS_ADMIN, KeyLimits, Principal, Role
from maas.auth.ratelimit import MemoryRateLimiter
from maas.auth.usage import MeteredCall, UsageLedger, parse_group_by
from maas.errors import InvalidName, InvalidRequest, ModelNotFound, QuotaExceeded, RateLimited
from maas.registry.db import create_engine_for, session_factory, upgrade_to_head
from maas.registry.tables import UsageRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ledger(engine: Engine) -> UsageLedger:
    return UsageLedger(session_factory(engine))


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(UsageRecord)).scalar_one())


def _call(
    key: str | None, model: str, status: int = 200, *, at: float | None = None
) -> MeteredCall:
    at = time.time() if at is None else at
    return MeteredCall(key, model, 1, "v2.infer", status, 2.0, 3, 0, 0, 0.001, at)


def _key(name: str, **limits: int | str) -> Principal:
    return Principal(key_id=f"id-{name}", name=name, role=Role.CONSUMER, limits=KeyLimits(**limits))  # type: ignore[arg-type]


# -- the ledger ---------------------------------------------------------------------------


async def test_close_writes_every_pending_record(ledger: UsageLedger, engine: Engine) -> None:
    await ledger.start()
    for i in range(1234):
        ledger.record(_call(f"k{i % 3}", "iris"))
    await ledger.aclose()
    assert _count(engine) == 1234


async def test_a_flush_cancelled_mid_write_sees_its_write_through(
    ledger: UsageLedger, engine: Engine
) -> None:
    """A cancelled flush (a reader who left, a shutdown) must not give up a batch its
    thread is still writing, nor let the next flush write beside it."""
    for i in range(20_000):
        ledger.record(_call(f"k{i % 3}", "iris"))
    flushing = asyncio.ensure_future(ledger.flush())
    await asyncio.sleep(0.01)  # the batch is taken and its thread is writing
    flushing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flushing
    assert _count(engine) == 20_000  # done by the time the cancellation came through
    ledger.record(_call("late", "iris"))
    await ledger.aclose()
    assert _count(engine) == 20_001


async def test_closing_while_the_writer_writes_loses_nothing(
    ledger: UsageLedger, engine: Engine
) -> None:
    await ledger.start()
    for i in range(20_000):  # a full batch wakes the writer at once
        ledger.record(_call(f"k{i % 3}", "iris"))
    await asyncio.sleep(0.01)
    ledger.record(_call("late", "iris"))
    await ledger.aclose()
    assert _count(engine) == 20_001


async def test_summary_groups_by_key_model_and_day(ledger: UsageLedger) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).timestamp()
    for call in (
        _call("a", "iris"),
        _call("a", "iris", 404),
        _call("a", "wine"),
        _call("b", "iris", 429),
        _call("b", "iris", at=yesterday),
    ):
        ledger.record(call)
    await ledger.flush()
    by_key_model = ledger.summarize(("key", "model"))
    assert [(r["key"], r["model"], r["requests"], r["errors"]) for r in by_key_model] == [
        ("a", "iris", 2, 1),
        ("a", "wine", 1, 0),
        ("b", "iris", 2, 1),
    ]
    assert by_key_model[0]["rows"] == 6
    days = ledger.summarize(("day",))
    today = datetime.now(UTC).date()
    assert [(r["day"], r["requests"]) for r in days] == [
        ((today - timedelta(days=1)).isoformat(), 1),
        (today.isoformat(), 4),
    ]
    midnight = datetime.combine(today, datetime.min.time())
    assert ledger.summarize(("key",), until=midnight)[0]["requests"] == 1
    assert [r["requests"] for r in ledger.summarize(("model",), since=midnight)] == [3, 1]
    assert ledger.summarize(("model",), key_id="b") == [
        {
            "model": "iris",
            "requests": 2,
            "errors": 1,
            "rows": 6,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "compute_s": pytest.approx(0.002),
            "audio_s": 0.0,
            "characters": 0,
            "mean_latency_ms": 2.0,
        }
    ]


async def test_a_bad_record_is_dropped_alone_and_never_blocks_later_writes(
    ledger: UsageLedger, engine: Engine
) -> None:
    """NUL bytes, names past the column and unencodable text are what PostgreSQL refuses;
    fitted or dropped, they must not take the batch or the next flushes with them."""
    for model in ("iris", "a\x00b", "x" * 300, "bad\ud800", "wine"):
        ledger.record(_call("k", model))
    await ledger.flush()
    ledger.record(_call("k", "later"))
    await ledger.flush()
    models = {row["model"] for row in ledger.summarize(("model",))}
    assert {"iris", "wine", "later", "a\ufffdb", "x" * 128, "bad?"} == models
    assert _count(engine) == 6


async def test_a_record_the_database_refuses_is_dropped_and_the_rest_written(
    ledger: UsageLedger, engine: Engine
) -> None:
    """Past what fitting can repair (a number out of the column's range), the batch is
    written row by row and only the refused record is lost."""
    ledger.record(_call("k", "iris"))
    ledger.record(MeteredCall("k", "huge", 2**40, "v2.infer", 200, 1.0, 1, 0, 0, 0.0, time.time()))
    ledger.record(_call("k", "wine"))
    await ledger.flush()
    ledger.record(_call("k", "later"))
    await ledger.flush()
    expected = ["huge", "iris", "later", "wine"]
    if engine.dialect.name == "postgresql":  # SQLite stores any integer in any column
        expected.remove("huge")
    assert [r["model"] for r in ledger.summarize(("model",))] == expected


async def test_records_wait_while_the_database_cannot_take_them(database_url: str) -> None:
    """A failure of the database itself (here: no table yet) drops nothing; the records
    are written by a later flush."""
    engine = create_engine_for(database_url)
    try:
        ledger = UsageLedger(session_factory(engine))
        ledger.record(_call("k", "iris"))
        await ledger.flush()
        upgrade_to_head(engine)
        ledger.record(_call("k", "wine"))
        await ledger.flush()
        assert _count(engine) == 2
    finally:
        engine.dispose()


@pytest.mark.parametrize("text", [",", "key,key", "tenant", "model,week"])
def test_bad_group_by_is_the_callers_fault(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_group_by(text)


def test_group_by_defaults_to_key_and_model() -> None:
    assert parse_group_by(None) == ("key", "model")
    assert parse_group_by(" day , model ") == ("day", "model")


# -- admission ----------------------------------------------------------------------------


@pytest.fixture
def admission(ledger: UsageLedger) -> Admission:
    return Admission(MemoryRateLimiter(), ledger, prefix="unit")


def test_requests_without_a_principal_are_the_anonymous_admin() -> None:
    assert principal_of(SimpleNamespace()) is ANONYMOUS_ADMIN
    key = _key("x")
    assert principal_of(SimpleNamespace(principal=key)) is key


async def test_a_key_without_limits_is_metered_with_no_headers(
    admission: Admission, ledger: UsageLedger
) -> None:
    with await admission.admit(ANONYMOUS_ADMIN, "iris", "v2.infer") as ticket:
        assert dict(ticket.headers) == {}
        ticket.version = 3
        ticket.finish(200, {"rows": 7}, 0.25)
    with pytest.raises(ModelNotFound), await admission.admit(ANONYMOUS_ADMIN, "nope", "v2.infer"):
        raise ModelNotFound()
    with pytest.raises(ZeroDivisionError), await admission.admit(ANONYMOUS_ADMIN, "iris", "x"):
        _ = 1 / 0
    await ledger.flush()
    rows = ledger.summarize(("model",))
    assert [(r["model"], r["requests"], r["errors"], r["rows"]) for r in rows] == [
        ("iris", 2, 1, 7),
        ("nope", 1, 1, 0),
    ]
    assert rows[0]["compute_s"] == pytest.approx(0.25)


async def test_speech_is_metered_in_seconds_of_audio_and_characters(
    admission: Admission, ledger: UsageLedger
) -> None:
    """Speech to text is sold by the second, text to speech by the character: both are
    recorded beside the tokens, which they do not spend."""
    key = _key("speech", token_budget=10)
    for seconds in (1.25, 2.5):
        (await admission.admit(key, "whisper", "openai.transcriptions")).finish(
            200, {"audio_s": seconds}
        )
    (await admission.admit(key, "espeak", "openai.speech")).finish(200, {"characters": 11})
    await ledger.flush()
    rows = {r["model"]: r for r in ledger.summarize(("model",))}
    assert rows["whisper"]["audio_s"] == 3.75 and rows["whisper"]["characters"] == 0
    assert rows["espeak"]["characters"] == 11 and rows["espeak"]["audio_s"] == 0.0
    assert rows["espeak"]["prompt_tokens"] == 0
    await admission.admit(key, "espeak", "openai.speech")  # no tokens were charged


@pytest.mark.parametrize("model", ["a\x00b", "x" * 300, "../etc", ""])
async def test_a_name_no_model_can_have_is_refused_before_metering(
    admission: Admission, ledger: UsageLedger, engine: Engine, model: str
) -> None:
    with pytest.raises(InvalidName):
        await admission.admit(_key("rpm", requests_per_minute=5), model, "v2.infer")
    await ledger.flush()
    assert _count(engine) == 0


async def test_request_rate_refuses_with_429_and_headers(
    admission: Admission, ledger: UsageLedger
) -> None:
    key = _key("rpm", requests_per_minute=2)
    first = await admission.admit(key, "iris", "v2.infer")
    assert dict(first.headers) == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "1",
        "X-RateLimit-Reset": "30",
    }
    second = await admission.admit(key, "iris", "v2.infer")
    assert second.headers["X-RateLimit-Remaining"] == "0"
    with pytest.raises(RateLimited) as caught:
        await admission.admit(key, "iris", "v2.infer")
    error = caught.value
    assert error.retry_after is not None and 29 < error.retry_after <= 30
    assert error.details == {"limit": 2, "remaining": 0, "reset_s": 60}
    await ledger.flush()  # the refusal is metered; the two open tickets are not, yet
    [refused] = ledger.summarize(("key",))
    assert (refused["key"], refused["requests"], refused["errors"]) == ("id-rpm", 1, 1)


async def test_request_budget_refuses_with_quota_exceeded(admission: Admission) -> None:
    key = _key("budget", request_budget=5, budget_period="day")
    for _ in range(5):
        (await admission.admit(key, "iris", "v2.infer")).finish(200)
    with pytest.raises(QuotaExceeded) as caught:
        await admission.admit(key, "iris", "v2.infer")
    assert caught.value.details["limit"] == 5
    midnight = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time())
    left = midnight.replace(tzinfo=UTC) - datetime.now(UTC)
    assert caught.value.retry_after == pytest.approx(left.total_seconds(), abs=5)


async def test_tokens_per_minute_refuse_the_call_after_the_one_that_spent_them(
    admission: Admission,
) -> None:
    key = _key("tpm", tokens_per_minute=100, token_budget=10_000)
    ticket = await admission.admit(key, "llm", "openai.chat")
    assert ticket.headers["X-RateLimit-Limit"] == "100"
    ticket.finish(200, {"prompt_tokens": 80, "completion_tokens": 50}, 0.5)
    await asyncio.sleep(0)  # the charge runs as its own task, off the request
    with pytest.raises(RateLimited, match="tokens per minute") as caught:
        await admission.admit(key, "llm", "openai.chat")
    assert caught.value.retry_after == pytest.approx(18, abs=0.5)  # 30 tokens of debt
    assert caught.value.details["remaining"] == 0


async def test_token_budget_is_spent_by_usage(admission: Admission) -> None:
    key = _key("tokbudget", token_budget=100)
    (await admission.admit(key, "llm", "openai.chat")).finish(200, {"completion_tokens": 100})
    await asyncio.sleep(0)
    with pytest.raises(QuotaExceeded, match="tokens budget"):
        await admission.admit(key, "llm", "openai.chat")


async def test_unknown_units_are_a_programming_error(admission: Admission) -> None:
    ticket = await admission.admit(ANONYMOUS_ADMIN, "llm", "openai.chat")
    with pytest.raises(ValueError, match="total_tokens"):
        ticket.finish(200, {"total_tokens": 3})
