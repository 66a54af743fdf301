"""Keys, the resolver cache, the admin key bootstrap and the audit log, on real SQLite
and PostgreSQL (``engine`` from conftest)."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from maas.auth.audit import AuditEntry, AuditLog
from maas.auth.bootstrap import ensure_admin_key
from maas.auth.keys import KeyHasher, KeyStore
from maas.auth.principal import Role
from maas.auth.resolver import KeyResolver
from maas.errors import ConfigInvalid, KeyNotFound
from maas.protocols.keys import KeyCreate
from maas.registry.db import create_engine_for, session_factory, upgrade_to_head
from maas.registry.tables import ApiKey


@pytest.fixture
def store(engine: Engine, tmp_path: Path) -> KeyStore:
    return KeyStore(session_factory(engine), KeyHasher.from_file(tmp_path / "auth.secret"))


def test_only_a_keyed_hash_is_stored_and_the_key_resolves(store: KeyStore) -> None:
    spec = KeyCreate(
        name="app", role="consumer", models=["iris*"], limits={"requests_per_minute": 5}
    )
    created = store.create(spec)
    assert created.key.startswith(f"maas_{created.prefix}_") and len(created.prefix) == 8
    with store._sessions() as session:
        row = session.get(ApiKey, created.id)
        assert row is not None and created.key not in (row.key_hash, row.prefix)
        assert row.key_hash == store.hasher.digest(created.key)
    found = store.find(created.key)
    assert found is not None
    principal, expires = found
    assert (principal.role, principal.model_patterns, expires) == (Role.CONSUMER, ("iris*",), None)
    assert principal.limits.requests_per_minute == 5
    assert store.find(created.key + "0") is None
    assert KeyHasher(b"other").digest(created.key) != row.key_hash


def test_revoke_and_rotate(store: KeyStore) -> None:
    created = store.create(KeyCreate(name="app", models=["a"]))
    rotated = store.rotate(created.id)
    assert store.find(created.key) is None and store.find(rotated.key) is not None
    assert rotated.models == ["a"] and rotated.id != created.id
    with pytest.raises(KeyNotFound):
        store.rotate(created.id)
    store.revoke(rotated.id)
    assert store.find(rotated.key) is None
    assert [k.id for k in store.list_keys()] == []
    assert len(store.list_keys(include_revoked=True)) == 2
    with pytest.raises(KeyNotFound):
        store.revoke("missing")


def test_resolver_caches_for_its_ttl_and_honours_expiry(
    store: KeyStore, engine: Engine, tmp_path: Path
) -> None:
    live = store.create(KeyCreate(name="live"))
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = store.create(KeyCreate(name="old", expires_at=past))
    resolver = KeyResolver(store, ttl_s=60)
    # Another replica: same database and secret, a store (and revision) of its own.
    replica = KeyStore(session_factory(engine), KeyHasher.from_file(tmp_path / "auth.secret"))

    async def scenario() -> None:
        assert (await resolver.resolve(live.key)) is not None
        assert (await resolver.resolve(expired.key)) is None
        replica.revoke(live.id)
        assert (await resolver.resolve(live.key)) is not None  # cached for the TTL
        fresh = KeyResolver(store, ttl_s=0)
        assert (await fresh.resolve(live.key)) is None

    asyncio.run(scenario())


def test_an_answer_in_use_is_renewed_in_the_background_before_it_expires(
    store: KeyStore, engine: Engine, tmp_path: Path
) -> None:
    """Past half its time, an answer is still given at once while one background query
    renews it: calls in flight never wait for the database together."""
    live = store.create(KeyCreate(name="live"))
    resolver = KeyResolver(store, ttl_s=2.0)
    replica = KeyStore(session_factory(engine), KeyHasher.from_file(tmp_path / "auth.secret"))

    async def scenario() -> None:
        assert (await resolver.resolve(live.key)) is not None
        replica.revoke(live.id)  # another server: this resolver learns it by asking again
        assert (await resolver.resolve(live.key)) is not None  # fresh: no query yet
        assert not resolver._renewing
        await asyncio.sleep(1.05)  # past half the answer's time: the time is the subject
        answers = await asyncio.gather(*(resolver.resolve(live.key) for _ in range(16)))
        assert all(a is not None for a in answers)  # given at once, still within its time
        assert len(resolver._renewing) == 1  # one query for all sixteen
        await asyncio.gather(*resolver._renewing.values())
        assert (await resolver.resolve(live.key)) is None  # the renewal saw the revocation

    asyncio.run(scenario())


def test_a_revocation_through_the_resolvers_own_store_drops_the_cache(store: KeyStore) -> None:
    revoked, rotated = store.create(KeyCreate(name="a")), store.create(KeyCreate(name="b"))
    resolver = KeyResolver(store, ttl_s=60)

    async def scenario() -> None:
        assert (await resolver.resolve(revoked.key)) is not None
        assert (await resolver.resolve(rotated.key)) is not None
        store.revoke(revoked.id)
        assert (await resolver.resolve(revoked.key)) is None
        new = store.rotate(rotated.id)
        assert (await resolver.resolve(rotated.key)) is None
        assert (await resolver.resolve(new.key)) is not None

    asyncio.run(scenario())


def test_bootstrap_mints_once_and_adopts_the_settings_key(store: KeyStore, tmp_path: Path) -> None:
    first = ensure_admin_key(store, tmp_path, None)
    assert first.created_key is not None and first.path == tmp_path / "admin.key"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.path.read_text().strip() == first.created_key
    again = ensure_admin_key(store, tmp_path, None)
    assert again.created_key is None and again.path == first.path

    ensure_admin_key(store, tmp_path, "operator-chosen-key-1")
    ensure_admin_key(store, tmp_path, "operator-chosen-key-2")
    assert store.find("operator-chosen-key-1") is None  # replaced by the new setting
    found = store.find("operator-chosen-key-2")
    assert found is not None and found[0].role is Role.ADMIN
    with pytest.raises(ConfigInvalid):
        ensure_admin_key(store, tmp_path, "short")


def test_audit_log_writes_off_the_caller_and_folds_login_failures(engine: Engine) -> None:
    log = AuditLog(session_factory(engine))

    async def scenario() -> None:
        log.record(AuditEntry("k1", "ci", "model.push", "iris", "10.0.0.1", "ok", None, {"v": 1}))
        for _ in range(20):
            log.record_auth_failure("10.0.0.9", "invalid key")
        log.record_auth_failure("10.0.0.8", "invalid key")
        await log.aclose()

    asyncio.run(scenario())
    records = log.query(limit=100)
    assert [r.action for r in records].count("auth.failure") == 2
    push = log.query(actor="ci", action="model.push")
    assert len(push) == 1 and push[0].details == {"v": 1} and push[0].at.tzinfo is not None
    assert log.query(since=datetime.now(UTC) + timedelta(minutes=1)) == []


def _entry(target: str, **changes: object) -> AuditEntry:
    fields: dict[str, object] = {
        "actor_key_id": "k1",
        "actor_name": "ci",
        "action": "model.delete",
        "target": target,
        "source": "10.0.0.1",
        "outcome": "denied",
        "code": "invalid_name",
        "details": {},
    }
    fields.update(changes)
    return AuditEntry(**fields)  # type: ignore[arg-type]


def test_a_bad_audit_record_is_kept_fitted_and_never_blocks_later_ones(engine: Engine) -> None:
    """A target from a URL path may hold a NUL byte or run past its column: stored
    fitted, and the records around it (and after it) are written all the same."""
    log = AuditLog(session_factory(engine))

    async def scenario() -> None:
        log.record(_entry("first"))
        log.record(_entry("a\x00b", details={"name\x00": ["x\x00", "\ud800"]}))
        log.record(_entry("y" * 300, actor_name="n" * 300))
        await log.flush()
        log.record(_entry("later"))
        await log.aclose()

    asyncio.run(scenario())
    targets = {r.target: r for r in log.query(limit=10)}
    assert set(targets) == {"first", "a\ufffdb", "y" * 255, "later"}
    assert targets["a\ufffdb"].details == {"name\ufffd": ["x\ufffd", "?"]}
    assert targets["y" * 255].actor_name == "n" * 128


def test_an_audit_record_the_database_refuses_is_dropped_alone(engine: Engine) -> None:
    log = AuditLog(session_factory(engine))
    unserializable = {"value": object()}  # no JSON for it: refused, whatever the backend

    async def scenario() -> None:
        log.record(_entry("first"))
        log.record(_entry("bad", details=unserializable))
        log.record(_entry("last"))
        await log.aclose()

    asyncio.run(scenario())
    assert sorted(r.target for r in log.query(limit=10)) == ["first", "last"]


def test_audit_records_wait_while_the_database_cannot_take_them(database_url: str) -> None:
    engine = create_engine_for(database_url)
    log = AuditLog(session_factory(engine))
    try:
        asyncio.run(_record_and_flush(log, _entry("before")))
        upgrade_to_head(engine)
        asyncio.run(_record_and_flush(log, _entry("after")))
        assert sorted(r.target for r in log.query(limit=10)) == ["after", "before"]
    finally:
        engine.dispose()


async def _record_and_flush(log: AuditLog, entry: AuditEntry) -> None:
    log.record(entry)
    await log.aclose()
