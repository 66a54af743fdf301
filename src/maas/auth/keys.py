"""API keys: minting, keyed hashing and the ``api_keys`` table.

A key reads ``maas_<prefix>_<secret>``. The 8-character prefix is public: listings
show it and lookups use it. Only an HMAC-SHA256 of the whole key, under a server
secret, is stored, so a copy of the database does not let anyone call the server, and
a guessed hash cannot be checked offline without the secret. Hashes are compared with
``hmac.compare_digest``.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maas.auth.principal import KeyLimits, Principal, Role
from maas.errors import KeyNotFound
from maas.protocols.keys import KeyCreate, KeyCreated, KeyInfo, KeyLimitsSpec
from maas.registry import changes
from maas.registry.ids import by_id_or_prefix
from maas.registry.tables import ApiKey

__all__ = ["KeyHasher", "KeyStore", "mint_key", "write_private_file"]

_KEY_FORMAT = re.compile(r"maas_([a-z0-9]{8})_[a-z0-9]{16,128}")


def mint_key() -> str:
    """A new key: ``maas_`` + 8 public characters + 40 secret ones (about 200 bits)."""
    return f"maas_{secrets.token_hex(4)}_{secrets.token_hex(20)}"


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


class KeyHasher:
    """HMAC-SHA256 of keys under the server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> KeyHasher:
        """The secret kept in ``path`` (0600), created at first use."""
        if not path.exists():
            write_private_file(path, secrets.token_hex(32))
        return cls(path.read_text().strip().encode())

    def digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode("utf-8", "surrogateescape"), sha256).hexdigest()

    @staticmethod
    def lookup_prefix(key: str, digest: str) -> str:
        """The prefix a key is filed under: its public part, or for a key chosen by an
        operator in another format (``MAAS_ADMIN_KEY``), the start of its digest."""
        match = _KEY_FORMAT.fullmatch(key)
        return match.group(1) if match else digest[:8]


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        prefix=row.prefix,
        name=row.name,
        owner=row.owner,
        role=Role(row.role).value,
        models=list(row.model_patterns),
        limits=KeyLimitsSpec(**row.limits),
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at) if row.expires_at else None,
        revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
    )


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time maas stores is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def principal_of(row: ApiKey) -> Principal:
    return Principal(
        key_id=row.id,
        name=row.name,
        role=Role(row.role),
        model_patterns=tuple(row.model_patterns),
        owner=row.owner,
        limits=KeyLimits(**row.limits),
    )


class KeyStore:
    """The ``api_keys`` table. Blocking (SQL): call from a worker thread."""

    def __init__(self, sessions: sessionmaker[Session], hasher: KeyHasher) -> None:
        self._sessions = sessions
        self.hasher = hasher
        #: Counts this process's revocations (rotations too): a cache of resolved keys
        #: (``maas.auth.resolver``) that sees it move drops what it holds at once.
        self.revision = 0
        self._revision_lock = threading.Lock()

    def _revoked(self) -> None:
        with self._revision_lock:
            self.revision += 1

    def create(self, spec: KeyCreate, *, key: str | None = None) -> KeyCreated:
        """Store a new key (``key`` when the operator chose it) and return its secret once."""
        secret = key or mint_key()
        digest = self.hasher.digest(secret)
        limits = KeyLimits(**spec.limits.model_dump())
        row = ApiKey(
            id=secrets.token_hex(8),
            prefix=self.hasher.lookup_prefix(secret, digest),
            key_hash=digest,
            name=spec.name,
            owner=spec.owner,
            role=spec.role,
            model_patterns=list(spec.models),
            limits=asdict(limits),
            created_at=datetime.now(UTC),
            expires_at=spec.expires_at,
        )
        with self._sessions() as session, session.begin():
            session.add(row)
        return KeyCreated(**_info(row).model_dump(), key=secret)

    def list_keys(self, *, include_revoked: bool = False) -> list[KeyInfo]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        with self._sessions() as session:
            return [_info(row) for row in session.scalars(query)]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key; revoking a revoked key changes nothing."""
        with self._sessions() as session, session.begin():
            row = self._row(session, key_id)
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                changes.record(session, "key")  # other servers forget their cached keys
            info = _info(row)
        self._revoked()
        return info

    def rotate(self, key_id: str) -> KeyCreated:
        """A new secret with the same name, role, models and limits; the old one is revoked."""
        with self._sessions() as session, session.begin():
            old = self._row(session, key_id)
            if old.revoked_at is not None:
                raise KeyNotFound(f"key {key_id!r} is revoked")
            old.revoked_at = datetime.now(UTC)
            changes.record(session, "key")
            replaces = old.id
            spec = KeyCreate(
                name=old.name,
                role=Role(old.role).value,
                models=list(old.model_patterns),
                owner=old.owner,
                expires_at=old.expires_at,
                limits=KeyLimitsSpec(**old.limits),
            )
        self._revoked()
        return self.create(spec).model_copy(update={"replaces": replaces})

    def find(self, key: str) -> tuple[Principal, datetime | None] | None:
        """The principal of a live key and its expiry, or ``None``; the caller checks expiry."""
        digest = self.hasher.digest(key)
        query = select(ApiKey).where(
            ApiKey.prefix == self.hasher.lookup_prefix(key, digest), ApiKey.revoked_at.is_(None)
        )
        with self._sessions() as session:
            for row in session.scalars(query):
                if hmac.compare_digest(row.key_hash, digest):
                    expires = _aware(row.expires_at) if row.expires_at else None
                    return principal_of(row), expires
        return None

    def active_admins(self) -> Sequence[KeyInfo]:
        return [info for info in self.list_keys() if info.role == Role.ADMIN.value]

    def _row(self, session: Session, key_id: str) -> ApiKey:
        """The key by its id or a unique start of it (listings cut ids)."""
        return by_id_or_prefix(
            session, ApiKey, key_id, lambda: KeyNotFound(f"key {key_id!r} not found")
        )
