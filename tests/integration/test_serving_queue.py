"""A deployment's queue against the real server: batching configured in the registry,
disconnects and timeouts that remove queued work, and metrics that count exactly what
was sent.

A long ``max_queue_delay_us`` keeps a request queued for as long as a test needs, so
"queued" is a state the test observes (deployment status), not a race it hopes to win.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from tests.integration.server import RunningServer, start_server
from tests.integration.serving_helpers import ROW, deploy, metric, push, scrape, status, wait_until

FLOWERS = {"model": "flowers", "version": "1"}
#: Long enough that only a full batch, a timeout or a disconnect ends a wait.
_MINUTE_US = 60_000_000


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory: pytest.TempPathFactory, iris_model: LogisticRegression) -> Path:
    path = tmp_path_factory.mktemp("iris") / "iris.skops"
    skops.io.dump(iris_model, path)
    return path


def _server_with_flowers(home: Path, iris_file: Path, **env: str) -> RunningServer:
    server = start_server(home, env=env)
    push(server, iris_file, "flowers", alias="production")
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_file: Path) -> Iterator[RunningServer]:
    running = _server_with_flowers(tmp_path_factory.mktemp("queue-home"), iris_file)
    yield running
    running.stop()


def _rows(features: np.ndarray) -> dict[str, object]:
    data = features.ravel().tolist()
    shape = [len(features), 4]
    return {"inputs": [{"name": "input", "datatype": "FP64", "shape": shape, "data": data}]}


def _predicted(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    [predict] = [o for o in response.json()["outputs"] if o["name"] == "predict"]
    data: list[int] = predict["data"]
    return data


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_rows(
    server: RunningServer, iris_model: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    features = iris[0]
    parts = [features[18 * i : 18 * i + i + 1] for i in range(8)]  # 1 to 8 rows, all classes
    total = sum(len(part) for part in parts)
    # The batch is full exactly when every request has arrived; the delay never fires.
    deploy(server, "flowers", 1, max_batch_size=total, max_queue_delay_us=_MINUTE_US)
    with server.client() as http, concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        before = scrape(http)
        posted = [pool.submit(http.post, "/v2/models/flowers/infer", json=_rows(p)) for p in parts]
        responses = [future.result(timeout=60) for future in posted]
        after = scrape(http)
    for part, response in zip(parts, responses, strict=True):
        assert _predicted(response) == iris_model.predict(part).tolist()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    ok = {**FLOWERS, "protocol": "v2", "code": "200"}
    assert delta("maas_requests_total", **ok) == len(parts)
    assert delta("maas_batch_size_count", **FLOWERS) == 1  # one runtime call for all
    assert delta("maas_batch_size_sum", **FLOWERS) == total  # every row, once
    assert delta("maas_batch_size_bucket", **FLOWERS, le="32.0") == 0  # a batch of > 32 rows
    assert delta("maas_inference_duration_seconds_count", **FLOWERS) == 1
    assert delta("maas_queue_duration_seconds_count", **FLOWERS) == len(parts)
    assert metric(after, "maas_queue_depth", **FLOWERS) == 0
    assert metric(after, "maas_loaded_models", **FLOWERS) == 1  # the redeploy left one


def test_a_deployment_the_version_cannot_serve_is_refused(server: RunningServer) -> None:
    with server.client() as http:
        refused = http.put(
            "/api/v1/models/flowers/versions/1/deployment",
            json={"max_batch_size": 8, "preferred_batch_sizes": [4, 16]},
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "invalid_deployment"
        assert refused.json()["details"]["preferred_batch_sizes"] == [16]


def test_a_client_that_disconnects_while_queued_leaves_no_work(server: RunningServer) -> None:
    deploy(server, "flowers", 1, max_batch_size=64, max_queue_delay_us=_MINUTE_US)
    body = orjson.dumps(ROW)
    head = (
        "POST /v2/models/flowers/infer HTTP/1.1\r\n"
        f"Host: {server.hostport}\r\nAuthorization: Bearer {server.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    host, port = server.hostport.rsplit(":", 1)
    with server.client() as http:
        before = scrape(http)
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(head.encode() + body)
            wait_until(lambda: status(http, "flowers", 1)["queue_depth"] == 1)
        # The server's default timeout is a minute: only the hang-up can empty the queue.
        wait_until(lambda: status(http, "flowers", 1)["queue_depth"] == 0, timeout_s=20)
        assert status(http, "flowers", 1)["in_flight"] == 0
        after = scrape(http)
    for name in ("maas_batch_size_count", "maas_inference_duration_seconds_count"):
        assert metric(after, name, **FLOWERS) == metric(before, name, **FLOWERS), name
    assert metric(after, "maas_queue_depth", **FLOWERS) == 0


@pytest.fixture(scope="module")
def short_timeouts(
    tmp_path_factory: pytest.TempPathFactory, iris_file: Path
) -> Iterator[RunningServer]:
    """Requests wait a minute in the queue; the server's default timeout is 1 s and the
    most a caller may ask for is 2 s."""
    env = {"MAAS_SERVING__REQUEST_TIMEOUT_S": "1", "MAAS_SERVING__MAX_REQUEST_TIMEOUT_S": "2"}
    running = _server_with_flowers(tmp_path_factory.mktemp("timeouts-home"), iris_file, **env)
    deploy(running, "flowers", 1, max_batch_size=64, max_queue_delay_us=_MINUTE_US)
    yield running
    running.stop()


def _timed_out(http: httpx.Client, **kwargs: object) -> dict[str, object]:
    """Post ROW, expect a 504, and check its queued work left the queue."""
    response = http.post("/v2/models/flowers/infer", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 504, response.text
    body: dict[str, object] = response.json()
    assert body["code"] == "request_timeout"
    assert status(http, "flowers", 1)["queue_depth"] == 0  # removed before the answer
    return body


def test_the_server_default_timeout_applies_when_the_caller_sets_none(
    short_timeouts: RunningServer,
) -> None:
    with short_timeouts.client() as http:
        before = scrape(http)
        assert _timed_out(http, json=ROW)["details"] == {"timeout_s": 1.0}
        shorter = _timed_out(http, json=ROW, headers={"X-Maas-Timeout": "0.2"})
        assert shorter["details"] == {"timeout_s": 0.2}
        after = scrape(http)
    assert metric(after, "maas_batch_size_count", **FLOWERS) == metric(
        before, "maas_batch_size_count", **FLOWERS
    )  # timed-out requests never reached the model
    assert metric(after, "maas_queue_depth", **FLOWERS) == 0


def test_a_caller_timeout_past_the_maximum_is_capped(short_timeouts: RunningServer) -> None:
    with short_timeouts.client() as http:
        asked = {**ROW, "parameters": {"timeout": 1000}}
        body = _timed_out(http, json=asked)
        header = _timed_out(http, json=ROW, headers={"X-Maas-Timeout": "1000"})
    assert body["details"] == {"timeout_s": 2.0, "requested_timeout_s": 1000.0}
    assert header["details"] == body["details"]
    assert "maximum" in str(body["error"])
