"""JobStore: one claim per job, one outcome per job, events in order, honest requeues."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

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


def test_a_running_job_is_settled_only_by_its_runner_or_once_its_heartbeat_is_stale(
    store: JobStore,
) -> None:
    job_id = _create(store)
    claimed = store.claim(job_id, "r1", "host-1")
    assert claimed is not None and claimed.heartbeat_at is not None
    assert (claimed.runner, claimed.runner_host) == ("r1", "host-1")
    fresh = claimed.heartbeat_at - timedelta(seconds=1)
    assert store.stale(fresh) == []
    assert not store.requeue(job_id, "not stale yet", stale_before=fresh)
    assert not store.finish(job_id, "failed", runner="r2")  # not r2's to end
    assert store.heartbeat("r1", [job_id, "b" * 32]) == {job_id}
    assert store.heartbeat("r2", [job_id]) == set()

    later = datetime.now(UTC) + timedelta(seconds=1)
    assert [job.id for job in store.stale(later)] == [job_id]
    assert store.requeue(job_id, "its runner went silent", stale_before=later)
    queued = store.get(job_id)
    assert (queued.state, queued.runner, queued.heartbeat_at) == ("queued", None, None)
    assert store.claim(job_id, "r2", "host-2") is not None
    assert not store.finish(job_id, "succeeded", runner="r1")  # the old runner is too late
    assert store.heartbeat("r1", [job_id]) == set()  # ... and learns it is no longer its
    assert store.finish(job_id, "succeeded", runner="r2")


def test_servers_appending_to_one_job_at_once_number_its_events_in_turn(engine: Engine) -> None:
    """The runner and the server a cancel came through append to the same job: each a
    store of its own (its own process lock), on one database."""
    job_id = _create(JobStore(session_factory(engine)))
    servers = [JobStore(session_factory(engine)) for _ in range(2)]

    def append(store: JobStore) -> None:
        for n in range(40):
            store.append_events(job_id, [("log", {"line": f"{n}"}), ("log", {"line": "again"})])

    with ThreadPoolExecutor(len(servers)) as pool:
        for done in [pool.submit(append, store) for store in servers]:
            done.result()
    seqs = [event.seq for event in servers[0].events(job_id, types=("log",), limit=1000)]
    assert len(seqs) == 2 * 40 * 2 and len(set(seqs)) == len(seqs)
