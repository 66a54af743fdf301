"""The serving engine against the real server: workers, backpressure, rollout (the drain
has ``test_drain.py``)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.neighbors import KNeighborsClassifier

from maas.client import Client
from maas.protocols.management import DeploymentSpec
from tests.forked import run_maas
from tests.integration.server import RunningServer, start_server
from tests.integration.serving_helpers import ROW, metric, push, scrape, status, wait_until


@pytest.fixture(scope="module")
def slow_skops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Brute-force nearest neighbours: a big request takes a noticeable while (about
    1.7 CPU-s for 5,000 rows against 80,000), which its small body spends in the worker,
    not decoding JSON in the server."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80_000, 4))
    model = KNeighborsClassifier(n_neighbors=3, algorithm="brute")
    model.fit(features, (features[:, 0] > 0).astype(int))
    path = tmp_path_factory.mktemp("slow") / "knn.skops"
    skops.io.dump(model, path)
    return path


def _big_request(rows: int = 5_000) -> dict[str, object]:
    data = np.random.default_rng(1).normal(size=(rows, 4))
    return {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [rows, 4], "data": data.ravel().tolist()}
        ]
    }


def test_a_killed_worker_is_restarted_and_its_call_fails_fast(
    fresh_server: RunningServer, slow_skops: Path
) -> None:
    push(fresh_server, slow_skops, "knn", alias="production")
    with fresh_server.client() as http, fresh_server.client() as watcher:
        before = status(http, "knn", "production")
        assert before["workers"] == "shared" and before["ready"] is True  # a small model
        [pid] = before["pids"]  # type: ignore[misc]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(http.post, "/v2/models/knn/infer", json=_big_request())
            # The call is decoded and in the deployment (queued or with the worker).
            wait_until(lambda: status(watcher, "knn", "production")["in_flight"] == 1)
            os.kill(pid, signal.SIGKILL)
            response = in_flight.result(timeout=60)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "worker_crashed"
        wait_until(lambda: (s := status(http, "knn", "production"))["ready"] and s["pids"] != [pid])
        after = http.post("/v2/models/knn/infer", json=ROW)
        assert after.status_code == 200, after.text


def test_a_model_is_not_ready_while_its_only_worker_is_dead(
    tmp_path: Path, iris_skops: Path
) -> None:
    # A 3 s backoff keeps the worker dead long enough to look at the server meanwhile.
    server = start_server(tmp_path / "home", env={"MAAS_SERVING__WORKER_RESTART_BACKOFF_S": "3"})
    try:
        push(server, iris_skops, "flowers", alias="production")
        with server.client() as http:
            [pid] = status(http, "flowers", "production")["pids"]  # type: ignore[misc]
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: http.get("/v2/models/flowers/ready").status_code == 503)
            assert http.get("/v2/models/flowers/versions/1/ready").status_code == 503
            assert http.get("/v2/health/ready").status_code == 503  # an aliased model is down
            refused = http.post("/v2/models/flowers/infer", json=ROW)
            assert refused.status_code == 503 and refused.json()["code"] == "worker_crashed"
            assert "retry-after" in refused.headers

            wait_until(lambda: http.get("/v2/health/ready").status_code == 200)
            assert http.get("/v2/models/flowers/ready").status_code == 200
            assert status(http, "flowers", "production")["pids"] not in ([], [pid])
            assert http.post("/v2/models/flowers/infer", json=ROW).status_code == 200
            families = scrape(http)
    finally:
        server.stop()
    flowers = {"model": "flowers", "version": "1"}
    # The restarted worker is the shared pool's (the small models' own), counted as such.
    assert metric(families, "maas_worker_restarts_total", model="(shared)", version="") == 1
    assert metric(families, "maas_loaded_models", **flowers) == 1
    assert metric(families, "maas_queue_depth", **flowers) == 0
    ok = {**flowers, "protocol": "v2", "code": "200"}
    assert metric(families, "maas_requests_total", **ok) == 1
    assert metric(families, "maas_batch_size_sum", **flowers) == 1  # the one row served


def test_a_scikit_learn_worker_never_loads_torch(
    fresh_server: RunningServer, slow_skops: Path
) -> None:
    push(fresh_server, slow_skops, "knn", alias="production")
    with fresh_server.client() as http:
        [pid] = status(http, "knn", "production")["pids"]  # type: ignore[misc]
        assert http.post("/v2/models/knn/infer", json=ROW).status_code == 200
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "libtorch" not in maps
    assert "sklearn" in maps or "scipy" in maps  # the worker did load its own stack


def test_a_full_queue_answers_503_with_retry_after_and_a_timeout_504(
    fresh_server: RunningServer, slow_skops: Path
) -> None:
    version = push(fresh_server, slow_skops, "knn", alias="production")
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        client.set_deployment("knn", version, DeploymentSpec(max_queue_size=1, instances=1))
    # Encoded once: eight callers encoding it each under one GIL arrive further apart.
    body = json.dumps(_big_request()).encode()
    headers = {"Content-Type": "application/json"}
    with fresh_server.client() as http, concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda _: http.post("/v2/models/knn/infer", content=body, headers=headers),
                range(8),
            )
        )
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes, codes
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.json()["code"] == "overloaded" and "retry-after" in refused.headers

        # The worker computes a call to its end after its caller got the 504: a fifth of
        # the rows still takes it several times the deadline.
        smaller = _big_request(1_000)
        timed_out = http.post(
            "/v2/models/knn/infer", json=smaller, headers={"X-Maas-Timeout": "0.05"}
        )
        assert timed_out.status_code == 504 and timed_out.json()["code"] == "request_timeout"
        in_parameters = http.post(
            "/v2/models/knn/infer", json={**smaller, "parameters": {"timeout": 0.05}}
        )
        assert in_parameters.status_code == 504
        bad = http.post("/v2/models/knn/infer", json=ROW, headers={"X-Maas-Timeout": "soon"})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_input"


def _stream(server: RunningServer, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    with server.client() as http:
        while not stop.is_set():
            response = http.post("/v2/models/flowers/infer", json=ROW)
            version = response.headers.get("x-model-version", "")
            if response.status_code == 200:
                assert response.json()["model_version"] == version
            seen.append((response.status_code, version))


def test_moving_an_alias_under_load_drops_no_request(
    fresh_server: RunningServer, iris_skops: Path
) -> None:
    push(fresh_server, iris_skops, "flowers", alias="production")
    second = push(fresh_server, iris_skops, "flowers")
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    streams = [threading.Thread(target=_stream, args=(fresh_server, stop, seen)) for _ in range(3)]
    for thread in streams:
        thread.start()
    try:
        wait_until(lambda: len(seen) > 20)
        with fresh_server.client() as http:
            moved = http.put("/api/v1/models/flowers/aliases/production", json={"version": second})
            assert moved.status_code == 200, moved.text
            before = len(seen)
            wait_until(lambda: len(seen) > before + 20)
            old = status(http, "flowers", 1)
            assert old["state"] == "unloaded"
    finally:
        stop.set()
        for thread in streams:
            thread.join()
    assert {code for code, _ in seen} == {200}
    versions = [version for _, version in seen]
    assert versions[0] == "1" and versions[-1] == str(second)


@pytest.mark.parametrize("load_at_start", ["true", "false"])
def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    tmp_path: Path, iris_skops: Path, slow_skops: Path, load_at_start: str
) -> None:
    server = start_server(tmp_path / "home", env={"MAAS_SERVING__LOAD_AT_START": load_at_start})
    try:
        _check_failed_rollout(server, iris_skops, slow_skops)
    finally:
        server.stop()


def _check_failed_rollout(server: RunningServer, good: Path, other: Path) -> None:
    push(server, good, "flowers", alias="production")
    with Client(server.url, api_key=server.api_key) as client:
        broken = client.push(other, "flowers")
    digest = broken.digest.split(":", 1)[1]
    blob = next((server.home / "artifacts").rglob(digest))
    blob.chmod(0o644)
    blob.write_bytes(b"corrupted after upload")
    with server.client() as http:
        refused = http.put(  # forced past the signature gate: the load is what fails
            "/api/v1/models/flowers/aliases/production",
            params={"force": "true"},
            json={"version": broken.version},
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "rollout_failed"
        assert refused.json()["details"]["cause"] == "artifact_corrupted"
        aliases = http.get("/api/v1/models/flowers/aliases").json()
        assert aliases == [{"model": "flowers", "alias": "production", "version": 1}]
        served = http.post("/v2/models/flowers/infer", json=ROW)
        assert served.status_code == 200 and served.headers["x-model-version"] == "1"
        assert http.get("/v2/health/ready").status_code == 200


def test_a_deployment_can_run_a_scikit_learn_model_in_the_server_process(
    fresh_server: RunningServer, iris_skops: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """``workers: threads`` per deployment: in the server's own process, no pipe, same answers;
    ``processes`` puts it in a worker of its own. The server's default for small models is
    the pool of workers they share."""
    push(fresh_server, iris_skops, "tiny", alias="production")
    push(fresh_server, iris_skops, "other", alias="production")
    features, _ = iris
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [3, 4],
                        "data": features[:3].ravel().tolist()}]}  # fmt: skip
    with fresh_server.client() as http:
        by_process = http.post("/v2/models/tiny/infer", json=body).json()["outputs"]
        shared = status(http, "other", "production")
        assert shared["workers"] == "shared" and shared["ready"] is True
        assert status(http, "tiny", "production")["pids"] == shared["pids"]  # one process
        assert shared["pids"] != [fresh_server.process.pid]
        result = run_maas(
            ["models", "deploy", "tiny:1", "--workers", "threads"],
            {
                **os.environ,
                "MAAS_URL": fresh_server.url,
                "MAAS_API_KEY": fresh_server.api_key or "",
            },
        )
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(lambda: status(http, "tiny", "production")["workers"] == "threads")
        inline = status(http, "tiny", "production")
        assert inline["pids"] == [fresh_server.process.pid] and inline["ready"] is True
        assert http.post("/v2/models/tiny/infer", json=body).json()["outputs"] == by_process
        assert status(http, "other", "production")["workers"] == "shared"
        on_loop = http.put(
            "/api/v1/models/tiny/versions/1/deployment",
            json={**inline["spec"], "workers": "inline"},  # type: ignore[dict-item]
        )
        assert on_loop.status_code == 200, on_loop.text
        wait_until(lambda: status(http, "tiny", "production")["workers"] == "inline")
        assert status(http, "tiny", "production")["pids"] == [fresh_server.process.pid]
        assert http.post("/v2/models/tiny/infer", json=body).json()["outputs"] == by_process
        back = http.put(
            "/api/v1/models/tiny/versions/1/deployment",
            json={**inline["spec"], "workers": "processes"},  # type: ignore[dict-item]
        )
        assert back.status_code == 200, back.text
        wait_until(lambda: status(http, "tiny", "production")["workers"] == "processes")
        own = status(http, "tiny", "production")["pids"]
        assert len(own) == 1 and own != shared["pids"]  # type: ignore[arg-type]
        assert http.post("/v2/models/tiny/infer", json=body).json()["outputs"] == by_process
        bad = http.put("/api/v1/models/tiny/versions/1/deployment",
                       json={**inline["spec"], "workers": "fibres"})  # fmt: skip
        assert bad.status_code in (400, 422) and "workers" in bad.text
