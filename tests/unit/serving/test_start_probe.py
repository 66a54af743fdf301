"""What a server loads at start, read from its SQLite registry before SQLAlchemy is
imported (``maas.registry.probe``): the real registry's tables, through the standard
library, so that ``maas serve`` starts a worker ahead only when one will be used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.unit.runtimes import trained

from maas.cli.serve import loads_worker_models_at_start
from maas.config import Settings
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


def test_maas_serve_starts_a_worker_ahead_only_for_models_that_run_in_one(
    tmp_path: Path, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    """The decision ``maas serve`` makes before its imports: yes for an aliased
    scikit-learn version, no for ONNX alone (threads), nor when models run on Ray or
    in the server's threads."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
    )
    onnx = publish(
        "iris-onnx",
        source=trained.write_onnx(trained.iris_classifier(), tmp_path / "iris.onnx"),
    )
    registry.set_alias(onnx.model, "production", onnx.version)
    assert not loads_worker_models_at_start(settings)
    iris = publish("iris")
    registry.set_alias(iris.model, "production", iris.version)
    assert loads_worker_models_at_start(settings)
    threads = settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"worker_mode": "threads"})}
    )
    on_ray = settings.model_copy(
        update={"cluster": settings.cluster.model_copy(update={"ray_address": "127.0.0.1:1"})}
    )
    assert not loads_worker_models_at_start(threads)
    assert not loads_worker_models_at_start(on_ray)
