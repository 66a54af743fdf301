"""What a server loads at start, read from its SQLite registry before SQLAlchemy is
imported (``maas.registry.probe``): the real registry's tables, through the standard
library, so that ``maas serve`` starts a worker ahead only when one will be used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from maas.protocols.management import VersionInfo
from maas.registry.probe import aliased_frameworks
from maas.registry.service import RegistryService


def test_the_frameworks_of_aliased_versions_are_read_without_sqlalchemy(
    tmp_path: Path, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    assert aliased_frameworks(url) == set()  # migrated, nothing aliased: nothing loads
    version = publish("iris")
    assert aliased_frameworks(url) == set()  # a version no alias names is not loaded
    registry.set_alias(version.model, "production", version.version)
    assert aliased_frameworks(url) == {"sklearn"}


def test_a_new_or_unknown_database_says_nothing_is_known(tmp_path: Path) -> None:
    assert aliased_frameworks(f"sqlite:///{tmp_path / 'not-yet.db'}") == set()
    assert aliased_frameworks("postgresql+psycopg://127.0.0.1/test") is None
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, " * 100)
    assert aliased_frameworks(f"sqlite:///{garbage}") is None
