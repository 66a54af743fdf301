"""Fixtures shared by every tier: the machine's PostgreSQL and Redis, when they answer."""

from __future__ import annotations

import os
import socket
import sys
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

# Three xdist workers and the servers they start share this machine's two cores, where
# llama.cpp's and ONNX Runtime's threads, which spin while they wait for each other, burn
# a core for every one that is descheduled: the language-model demo server took three
# times the CPU in a full run that it takes alone. One thread per model call, in every
# server a test starts (in process or not); the default is tested where it is decided.
# BLAS and OpenMP (numpy, scikit-learn, torch) likewise spin, in every process the
# session starts from here on (xdist's workers too): one thread each.
os.environ.setdefault("MAAS_SERVING__RUNTIME_THREADS", "1")
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# Each server, worker and job a test starts is a new interpreter that imports maas from
# the working tree. Where PYTHONDONTWRITEBYTECODE is set (this CI image sets it), none of
# them finds a cached .pyc, and each compiles maas from source again: about 0.2 s of CPU
# per process, hundreds of times a run. Cache the bytecode, as an installed package has
# it (``__pycache__`` is ignored by git). The xdist workers start after this, without it.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False


def pytest_collection(session: pytest.Session) -> None:
    """Test modules import skops.io, which lists scikit-learn's estimators as it is
    imported: plainly, that loads torch, pandas and pyarrow too (2 s of CPU and 200 MB
    in each xdist worker, before one test runs). Import it first, as the servers do,
    without them; the tests that use torch import it themselves. Here, not when this
    module is imported: an xdist worker's coverage starts with its session, and maas
    modules imported before it would count as unrun."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from maas.runtimes.sklearn import import_skops

        import_skops()


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


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup`` (the README's command), the groups of
    ``tests/groups.py``: one worker runs each module, so a module's servers start once,
    and the tests that use ``demo_server`` share one worker, so it starts once."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.groups import GroupScheduling

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Orders the tests by the place of their group (``tests/groups.py``): the longest
    groups first."""
    from tests.groups import rank

    items.sort(key=lambda item: rank(item.nodeid))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fails a test that uses the language-model demo server outside its group: the
    scheduler sees node ids only, not fixtures, so ``tests/groups.py`` lists them."""
    from tests.groups import LLM_DEMO, group_of

    uses_llm_demo = "demo_server" in getattr(item, "fixturenames", ())
    in_integration = item.path.parent.name == "integration"
    if uses_llm_demo and in_integration and group_of(item.nodeid) != LLM_DEMO:
        pytest.fail(f"{item.nodeid} uses demo_server: list it in tests/groups.py")
