"""Keys, the resolver cache, the admin key bootstrap and the audit log, on real SQLite."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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
def store(tmp_path: Path) -> KeyStore:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade_to_head(engine)
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


def test_resolver_caches_for_its_ttl_and_honours_expiry(store: KeyStore) -> None:
    live = store.create(KeyCreate(name="live"))
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = store.create(KeyCreate(name="old", expires_at=past))
    resolver = KeyResolver(store, ttl_s=60)

    async def scenario() -> None:
        assert (await resolver.resolve(live.key)) is not None
        assert (await resolver.resolve(expired.key)) is None
        store.revoke(live.id)
        assert (await resolver.resolve(live.key)) is not None  # cached for the TTL
        fresh = KeyResolver(store, ttl_s=0)
        assert (await fresh.resolve(live.key)) is None

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


def test_audit_log_writes_off_the_caller_and_folds_login_failures(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'audit.sqlite'}")
    upgrade_to_head(engine)
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
