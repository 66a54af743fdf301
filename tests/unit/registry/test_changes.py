"""The change feed on SQLite and PostgreSQL: each registry change that other servers must
apply writes one row in its own transaction, readers see them in order past an id, a
refused change writes none, old rows are pruned."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, update
from tests.unit.registry.conftest import PushVersion

from maas.auth.keys import KeyHasher, KeyStore
from maas.errors import VersionInUse
from maas.protocols.keys import KeyCreate
from maas.protocols.management import DeploymentSpec
from maas.registry.changes import ChangeLog, record
from maas.registry.db import session_factory
from maas.registry.service import RegistryService
from maas.registry.tables import RegistryChange


@pytest.fixture
def feed(engine: Engine) -> ChangeLog:
    return ChangeLog(session_factory(engine))


def _seen(feed: ChangeLog, after: int = 0) -> list[tuple[str, str | None, int | None]]:
    return [(c.kind, c.model, c.version) for c in feed.since(after)]


def test_every_change_other_servers_apply_is_in_the_feed(
    engine: Engine, feed: ChangeLog, registry: RegistryService, push: PushVersion
) -> None:
    assert feed.latest_id() == 0
    push("iris")
    push("iris", b"other bytes")
    registry.set_alias("iris", "production", 1)
    registry.update_deployment("iris", 2, DeploymentSpec(max_batch_size=4))
    registry.set_alias("iris", "production", 2)
    registry.delete_version("iris", 1)
    registry.delete_alias("iris", "production")
    registry.delete_model("iris")
    keys = KeyStore(session_factory(engine), KeyHasher(b"secret"))
    created = keys.create(KeyCreate(name="app", role="consumer"))
    keys.revoke(created.id)
    keys.revoke(created.id)  # revoked already: nothing changed, nothing to say
    assert _seen(feed) == [
        ("version", "iris", 1),
        ("version", "iris", 2),
        ("alias", "iris", None),
        ("deployment", "iris", 2),
        ("alias", "iris", None),
        ("version_deleted", "iris", 1),
        ("alias", "iris", None),
        ("model_deleted", "iris", None),
        ("key", None, None),
    ]
    ids = [c.id for c in feed.since(0)]
    assert ids == sorted(ids) and feed.latest_id() == ids[-1]
    assert _seen(feed, ids[5]) == _seen(feed)[6:]  # past an id: only what came after


def test_a_refused_change_leaves_no_row(
    feed: ChangeLog, registry: RegistryService, push: PushVersion
) -> None:
    push("iris")
    registry.set_alias("iris", "production", 1)
    before = feed.latest_id()
    with pytest.raises(VersionInUse):
        registry.delete_version("iris", 1)
    assert feed.latest_id() == before


def test_concurrent_writers_commit_in_id_order(engine: Engine, feed: ChangeLog) -> None:
    """Ids become visible in order: a reader never sees a later id before an earlier
    one commits (PostgreSQL: the writers' table lock)."""
    sessions = session_factory(engine)
    first_added = threading.Event()
    release_first = threading.Event()

    def slow_writer() -> None:
        with sessions.begin() as session:
            record(session, "alias", "slow")
            first_added.set()
            release_first.wait(10)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert first_added.wait(10)
    second = threading.Thread(target=lambda: _write(sessions, "fast"))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # it waits for the first to commit (it takes milliseconds)
    assert [c.model for c in feed.since(0)] == []
    release_first.set()
    writer.join(10)
    second.join(10)
    changes = feed.since(0)
    assert [c.model for c in changes] == ["slow", "fast"]
    assert changes[0].id < changes[1].id


def _write(sessions: object, model: str) -> None:
    with sessions.begin() as session:  # type: ignore[attr-defined]
        record(session, "alias", model)


def test_old_changes_are_pruned(engine: Engine, feed: ChangeLog) -> None:
    sessions = session_factory(engine)
    _write(sessions, "old")
    _write(sessions, "new")
    with sessions.begin() as session:
        session.execute(
            update(RegistryChange)
            .where(RegistryChange.model == "old")
            .values(at=datetime.now(UTC) - timedelta(hours=2))
        )
    assert feed.prune(3600) == 1
    assert [c.model for c in feed.since(0)] == ["new"]
    assert feed.prune(3600) == 0
