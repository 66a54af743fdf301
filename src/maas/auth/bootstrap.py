"""The first admin key: secure by default without a setup step.

On a server with no live admin key, one is minted, written to ``MAAS_HOME/admin.key``
(0600, where the CLI on the same machine finds it) and shown once. An operator who sets
``MAAS_ADMIN_KEY`` chooses the key instead, for automation; changing that setting
revokes the key it named before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maas.auth.keys import KeyStore, write_private_file
from maas.errors import ConfigInvalid
from maas.protocols.keys import KeyCreate

__all__ = ["ADMIN_KEY_FILE", "AdminKeyNotice", "ensure_admin_key"]

ADMIN_KEY_FILE = "admin.key"
_FROM_SETTINGS = "admin (MAAS_ADMIN_KEY)"
_MIN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class AdminKeyNotice:
    """What the start banner tells: the key when minted just now, else where it is."""

    created_key: str | None
    path: Path | None
    from_settings: bool = False


def ensure_admin_key(store: KeyStore, home: Path, admin_key: str | None) -> AdminKeyNotice:
    """Make sure an admin can log in; blocking (SQL)."""
    if admin_key is not None:
        _adopt(store, admin_key)
        return AdminKeyNotice(None, None, from_settings=True)
    path = home / ADMIN_KEY_FILE
    if store.active_admins():
        return AdminKeyNotice(None, path if path.exists() else None)
    created = store.create(KeyCreate(name="admin", role="admin", owner="maas serve"))
    write_private_file(path, created.key + "\n")
    return AdminKeyNotice(created.key, path)


def _adopt(store: KeyStore, admin_key: str) -> None:
    if len(admin_key) < _MIN_LENGTH or not admin_key.isprintable() or " " in admin_key:
        raise ConfigInvalid(
            f"MAAS_ADMIN_KEY must be at least {_MIN_LENGTH} printable characters without spaces"
        )
    found = store.find(admin_key)
    for info in store.active_admins():
        if info.name == _FROM_SETTINGS and (found is None or found[0].key_id != info.id):
            store.revoke(info.id)
    if found is None:
        store.create(KeyCreate(name=_FROM_SETTINGS, role="admin", owner="settings"), key=admin_key)
