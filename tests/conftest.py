"""Fixtures shared by every tier: the machine's PostgreSQL and Redis, when they answer."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


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


@pytest.fixture(scope="session", autouse=True)
def shared_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One cache of derived model files (a GGUF file's dequantized weights) for every
    server and runtime of the session, so the dequantization runs once, not per server."""
    previous = os.environ.get("MAAS_CACHE_DIR")
    os.environ["MAAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if previous is None:
        os.environ.pop("MAAS_CACHE_DIR", None)
    else:
        os.environ["MAAS_CACHE_DIR"] = previous
