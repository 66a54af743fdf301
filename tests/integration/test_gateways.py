"""Stateless gateways: two real ``maas serve`` processes on one PostgreSQL database, one
Redis and one artifact store (S3, served by moto in server mode on loopback, or a
directory both share). What one is told, the other does within a second: the change
feed (``maas.services.changes``) brings it a quarter of a second later.

Each propagation is polled on the second gateway with the promised deadline of one
second, and the time it took is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import POSTGRES_URL, REDIS_URL, require_service
from tests.databases import postgres_schema
from tests.integration.server import RunningServer, start_server
from tests.keys import as_key, bearer, limited_key, make_key

pytestmark = pytest.mark.timeout(300)

#: What the gateways promise: a change made through one is applied by every other within it.
PROPAGATION_S = 1.0
ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
#: moto accepts any credentials; these only keep boto from looking for real ones.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    """moto's S3 in server mode on a free loopback port: its endpoint URL."""
    port = _free_port()
    server = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "moto_server exited"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(endpoint, timeout=1).status_code < 500:
                    break
            assert time.monotonic() < deadline, "moto_server never answered"
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module", params=["s3", "directory"])
def store_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The artifact store both gateways use, as their environment says it."""
    if request.param == "directory":
        return {"MAAS_STORAGE__ARTIFACT_URL": str(tmp_path_factory.mktemp("shared-store"))}
    import boto3

    endpoint: str = request.getfixturevalue("moto_s3")
    bucket = f"maas-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    s3.create_bucket(Bucket=bucket)
    return {
        **S3_CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "MAAS_STORAGE__ARTIFACT_URL": f"s3://{bucket}/artifacts",
    }


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, store_env: dict[str, str]
) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Two gateways, each with a home (and a temp dir, where a remote store's local
    cache lives) of its own: all they share is the database, Redis and the store. One
    pair per store for the module: each test uses models of its own."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"gw-{uuid.uuid4().hex}"
    shared = {
        "MAAS_REDIS_URL": REDIS_URL,
        "MAAS_REDIS_PREFIX": prefix,
        "MAAS_AUTH__HASH_SECRET": uuid.uuid4().hex,  # keys hash alike on every gateway
        "MAAS_SERVING__WORKER_MODE": "threads",
        **store_env,
    }
    started: list[RunningServer] = []
    with postgres_schema(POSTGRES_URL, "gw") as database_url:
        try:
            for name in ("a", "b"):  # one after the other: the first migrates the database
                home = tmp_path_factory.mktemp(f"gateway-{name}")
                (home / "tmp").mkdir()
                env = {**shared, "MAAS_DATABASE_URL": database_url, "TMPDIR": str(home / "tmp")}
                started.append(start_server(home, env=env))
            yield started[0], started[1]
        finally:
            for server in started:
                server.stop()
            client = redis.Redis.from_url(REDIS_URL)
            for key in client.scan_iter(f"{prefix}:*"):
                client.delete(key)
            client.close()


def _infer(server: RunningServer, key: str | None = None, ref: str = "iris") -> httpx.Response:
    headers = bearer(key) if key is not None else server.auth_headers
    with server.client(headers=headers) as http:
        return http.post(f"/v2/models/{ref}/infer", json=ROW)


def _followed(what: str, condition: Callable[[], bool]) -> float:
    """Seconds until ``condition`` holds, polled from now; fails past the promise."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < PROPAGATION_S, f"{what}: not followed within {PROPAGATION_S} s"
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    print(f"\n{what}: followed by the other gateway in {elapsed * 1000:.0f} ms")
    return elapsed


def _stored(store_env: dict[str, str], digest: str) -> bool:
    """Whether the store both gateways use (S3 or the directory) holds the blob."""
    url = store_env["MAAS_STORAGE__ARTIFACT_URL"]
    hex_digest = digest.removeprefix("sha256:")
    if not url.startswith("s3://"):
        return (Path(url) / "sha256" / hex_digest[:2] / hex_digest).is_file()
    import boto3

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=store_env["AWS_ENDPOINT_URL"], **_boto_credentials())
    key = f"{prefix}/sha256/{hex_digest[:2]}/{hex_digest}"
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1)


def _push(
    server: RunningServer, skops_bytes: bytes, alias: str | None = None, model: str = "iris"
) -> dict[str, Any]:
    params = {"filename": "iris.skops", **({"alias": alias} if alias else {})}
    with server.client() as http:
        response = http.post(f"/api/v1/models/{model}/versions", params=params, content=skops_bytes)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_what_one_gateway_is_told_the_other_does_within_a_second(
    gateways: tuple[RunningServer, RunningServer], skops_bytes: bytes, store_env: dict[str, str]
) -> None:
    a, b = gateways
    # A model pushed through A answers on B, from the same bytes.
    first = _push(a, skops_bytes, alias="production")
    with b.client() as http:
        on_b = http.get("/api/v1/models/iris/versions/1").json()
    assert on_b["digest"] == first["digest"]
    assert _stored(store_env, first["digest"])
    answer = _infer(b)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"

    # An alias moved on A: B serves the new version (which it loads and warms).
    _push(a, skops_bytes)
    with a.client() as http:
        moved = http.put("/api/v1/models/iris/aliases/production", json={"version": 2})
    assert moved.status_code == 200, moved.text
    _followed("alias move", lambda: _infer(b).json().get("model_version") == "2")

    # A deployment change on A: B redeploys the version it serves.
    with a.client() as http:
        spec = {"max_batch_size": 8, "max_queue_delay_us": 500}
        changed = http.put("/api/v1/models/iris/versions/2/deployment", json=spec)
    assert changed.status_code == 200, changed.text

    def b_redeployed() -> bool:
        with b.client() as http:
            status = http.get("/api/v1/models/iris/versions/2/deployment/status").json()
        return bool(status["spec"]["max_batch_size"] == 8 and status["ready"])

    _followed("deployment change", b_redeployed)
    assert _infer(b).status_code == 200

    # A key revoked on A is refused by B.
    created = make_key(a, name="app", role="consumer")
    key = str(created["key"])
    assert _infer(b, key).status_code == 200  # B has it cached now
    with a.client() as http:
        assert http.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    _followed("key revocation", lambda: _infer(b, key).status_code == 401)

    # A version deleted on A is unloaded by B (which loaded it on its own).
    with b.client() as http:
        assert http.post("/api/v1/models/iris/versions/1/deployment/load").status_code == 200
    with a.client() as http:
        assert http.delete("/api/v1/models/iris/versions/1").status_code == 204

    def b_unloaded() -> bool:
        with b.client() as http:
            loaded = http.get("/api/v1/deployments").json()
        return not [d for d in loaded if d["model"] == "iris" and d["version"] == 1]

    _followed("version deletion", b_unloaded)


def test_a_rate_limit_is_shared_by_the_gateways(
    gateways: tuple[RunningServer, RunningServer], skops_bytes: bytes
) -> None:
    a, b = gateways
    _push(a, skops_bytes, alias="production", model="limited")
    assert _infer(b, ref="limited").status_code == 200
    key_id, key = limited_key(a, str(a.api_key), requests_per_minute=4)
    statuses = [_infer(server, key, ref="limited").status_code for server in (a, b) * 5]
    assert sorted(statuses) == [200] * 4 + [429] * 6, statuses
    with as_key(b, key) as http:  # both gateways agree on what is left
        assert http.post("/v2/models/limited/infer", json=ROW).status_code == 429
    assert key_id
