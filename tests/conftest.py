"""Fixtures shared by every tier: the machine's PostgreSQL and Redis, when they answer."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"

# Ray reads this once, when it is imported: off, Ray keeps 127.0.0.1 as given instead of
# swapping in the machine's address, so a test cluster stays on loopback. Set here, before
# any test module can import ray (tests/ray_cluster.py).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a stated reason where the service is absent; CI sets
    MAAS_REQUIRE_SERVICES so that an absent service fails instead of hiding tests."""
    if _answers(host, port):
        return
    reason = f"no {name} answers at {host}:{port}"
    if os.environ.get("MAAS_REQUIRE_SERVICES"):
        pytest.fail(reason + " (MAAS_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, dropped afterwards."""
    from tests.databases import postgres_schema

    with postgres_schema(postgres_url, "it") as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def shared_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One cache of derived model files (a GGUF file's dequantized weights) for every
    server and runtime of the session, so the dequantization runs once, not per server."""
    previous = os.environ.get("MAAS_CACHE_DIR")
    os.environ["MAAS_CACHE_DIR"] = str(_model_cache(tmp_path_factory))
    yield
    if previous is None:
        os.environ.pop("MAAS_CACHE_DIR", None)
    else:
        os.environ["MAAS_CACHE_DIR"] = previous


def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache, or under pytest-xdist the one every worker of the run
    shares (their base temp folders have one parent): a conversion writes to a temp
    folder and renames it into place, so workers racing on one file are safe."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return tmp_path_factory.mktemp("model-cache")
    shared = tmp_path_factory.getbasetemp().parent / "model-cache"
    shared.mkdir(exist_ok=True)
    return shared


#: The admin key of every test server, in process or not (``MAAS_ADMIN_KEY``).
TEST_ADMIN_KEY = "maas_testtest_" + "0123456789abcdef" * 2


@pytest.fixture(scope="session")
def iris() -> tuple[Any, Any]:
    """Iris features and labels (scikit-learn imported only where a test asks)."""
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return features, labels


@pytest.fixture(scope="session")
def iris_model(iris: tuple[Any, Any]) -> Any:
    """What the demo trains: the same data and estimator, so the same classes."""
    from sklearn.linear_model import LogisticRegression

    features, labels = iris
    return LogisticRegression(max_iter=1000).fit(features, labels)


@pytest.fixture
def iris_skops(tmp_path: Path, iris_model: Any) -> Path:
    """``iris_model`` as a ``.skops`` file to push."""
    import skops.io

    path = tmp_path / "iris.skops"
    skops.io.dump(iris_model, path)
    return path


@pytest.fixture(scope="module")
def skops_bytes(iris_model: Any, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The iris classifier of the ``iris_model`` fixture as ``.skops`` bytes."""
    import skops.io

    path = tmp_path_factory.mktemp("skops") / "iris.skops"
    skops.io.dump(iris_model, path)
    return path.read_bytes()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the iris demo registered (``tests/demo_home.py``), built once."""
    from tests.demo_home import build_demo_home

    return build_demo_home(tmp_path_factory.mktemp("demo-template"), TEST_ADMIN_KEY)


#: Where each part of the suite runs in the order of a run, first to last: xdist
#: hands the groups out in this order (``--no-loadscope-reorder``), so the longest
#: (a server with language models, a browser, servers in subprocesses, the LLM and
#: type-check units) start first and the short ones fill in behind them.
_ORDER = (
    "llm-demo",
    "tests/browser/",
    "tests/integration/",
    "tests/unit/serving/",
    "tests/unit/runtimes/",
    "tests/unit/test_quality.py",
    "tests/inprocess/",
    "tests/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``), one worker runs each module, so a
    module's servers start once; and the tests that use ``demo_server`` (the demo with
    its language models, in ``tests/integration``) share one worker, so it starts once.
    Modules keep their tests together, in the order of ``_ORDER``."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        fixtures = getattr(item, "fixturenames", ())
        uses_llm_demo = "demo_server" in fixtures and item.path.parent.name == "integration"
        group = "llm-demo" if uses_llm_demo else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_rank)


def _rank(item: pytest.Item) -> int:
    marker = item.get_closest_marker("xdist_group")
    group = str(marker.kwargs.get("name", marker.args[0] if marker.args else "")) if marker else ""
    ranks = (i for i, prefix in enumerate(_ORDER) if group.startswith(prefix))
    return next(ranks, len(_ORDER))
