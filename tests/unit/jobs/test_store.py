"""JobStore: one claim per job, one outcome per job, events in order, honest requeues."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from maas.errors import JobNotFound
from maas.jobs.store import JobStore
from maas.registry.db import session_factory


@pytest.fixture
def store(engine: Engine) -> JobStore:
    return JobStore(session_factory(engine))


def _create(store: JobStore, job_id: str = "a" * 32) -> str:
    store.create(job_id, "train", "tickets", {"kind": "train"}, "alice")
    return job_id


def test_a_job_is_claimed_once_and_ends_once(store: JobStore) -> None:
    job_id = _create(store)
    with ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda _: store.claim(job_id), range(4)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].state == "running" and winners[0].attempts == 1
    assert store.finish(job_id, "succeeded", result={"versions": [1]})
    assert not store.finish(job_id, "cancelled", from_states=("queued", "running"))
    job = store.get(job_id)
    assert job.state == "succeeded" and job.result == {"versions": [1]} and job.finished
    states = [e.data["state"] for e in store.events(job_id, types=("state",))]
    assert states == ["queued", "running", "succeeded"]


def test_requeue_keeps_the_attempt_count_and_says_why(store: JobStore) -> None:
    job_id = _create(store)
    assert store.claim(job_id) is not None
    store.set_pid(job_id, 4242)
    assert store.requeue(job_id, "interrupted: server stopped")
    job = store.get(job_id)
    assert (job.state, job.attempts, job.pid) == ("queued", 1, None)
    assert store.claim(job_id) is not None and store.get(job_id).attempts == 2
    last = store.events(job_id, types=("state",))[-2]
    assert last.data == {"state": "queued", "reason": "interrupted: server stopped"}
    assert not store.requeue("b" * 32, "nothing")


def test_events_are_numbered_in_order_across_writers(store: JobStore) -> None:
    job_id = _create(store)
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(lambda i: store.append_events(job_id, [("log", {"line": str(i)})]), range(20))
        )
    events = store.events(job_id)
    assert [e.seq for e in events] == list(range(1, 22))
    assert [e.seq for e in store.events(job_id, after=15)] == list(range(16, 22))
    assert len(store.events(job_id, types=("log",))) == 20


def test_listing_and_queue_order(store: JobStore) -> None:
    first, second = _create(store, "1" * 32), _create(store, "2" * 32)
    assert [j.id for j in store.queued(10)] == [first, second]
    assert [j.id for j in store.list_jobs(model="tickets")] == [second, first]
    assert store.list_jobs(state="running") == []
    with pytest.raises(JobNotFound):
        store.get("f" * 32)
