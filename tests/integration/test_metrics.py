"""``GET /metrics`` over a real server: what was sent is what is counted, per code.

Scraped with httpx and parsed with prometheus_client's own text parser, in one process
and in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), where the values go through
files and are summed at scrape time.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.demo_home import copy_home
from tests.integration.server import RunningServer, start_server

_ROW = [5.1, 3.5, 1.4, 0.2]
_GOOD = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": _ROW}]}
_BAD_SHAPE = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": _ROW}]}
_DEFINED = (
    "maas_requests",
    "maas_request_duration_seconds",
    "maas_queue_duration_seconds",
    "maas_inference_duration_seconds",
    "maas_batch_size",
    "maas_queue_depth",
    "maas_loaded_models",
    "maas_model_load_duration_seconds",
    "maas_worker_restarts",
)  # the serving metrics; the generation ones appear once an LLM has served


@pytest.fixture(scope="module", params=["one-process", "multiprocess"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[RunningServer]:
    """The iris demo, one server per mode for the module: its tests count what they sent
    as the difference between two scrapes, so they share it in any order."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    env = {}
    if request.param == "multiprocess":
        (tmp_path / "prom").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
    home = copy_home(demo_template, tmp_path / "home")
    running = start_server(home, "--demo", "--no-auth", env=env)
    yield running
    running.stop()


def _scrape(http: httpx.Client, **kwargs: object) -> dict[str, list[Sample]]:
    response = http.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels`` (0 when absent)."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def test_requests_are_counted_per_model_version_and_code(server: RunningServer) -> None:
    sent = {"200": 0, "400": 0, "404": 0}
    with server.client() as http:
        before = _scrape(http)
        for path in ["/v2/models/iris/infer"] * 6 + ["/v2/models/iris/versions/1/infer"] * 3:
            assert http.post(path, json=_GOOD).status_code == 200
            sent["200"] += 1
        for body in [_BAD_SHAPE] * 3 + [{"inputs": "not a list"}] * 2:
            assert http.post("/v2/models/iris/infer", json=body).status_code == 400
            sent["400"] += 1
        for name in ["no-such-model", "another-missing", "no-such-model", "x"]:
            assert http.post(f"/v2/models/{name}/infer", json=_GOOD).status_code == 404
            sent["404"] += 1
        families = _scrape(http)

    def added(family: str, name: str, **labels: str) -> float:
        # In multiprocess mode a metric with no value yet is absent from the scrape.
        earlier = _value(before.get(family, []), name, **labels)
        return _value(families[family], name, **labels) - earlier

    requests = families["maas_requests"]
    iris = {"model": "iris", "version": "1", "protocol": "v2"}
    assert added("maas_requests", "maas_requests_total", **iris, code="200") == sent["200"]
    assert added("maas_requests", "maas_requests_total", **iris, code="400") == sent["400"]
    unresolved = {"model": "", "version": "", "protocol": "v2"}
    assert added("maas_requests", "maas_requests_total", **unresolved, code="404") == sent["404"]
    # A caller's made-up model names never become label values.
    assert {s.labels["model"] for s in requests} <= {"iris", ""}

    latency = "maas_request_duration_seconds"
    iris_total = sent["200"] + sent["400"]
    assert added(latency, f"{latency}_count", **iris) == iris_total
    assert added(latency, f"{latency}_bucket", **iris, le="+Inf") == iris_total
    assert added(latency, f"{latency}_sum", **iris) > 0
    assert added(latency, f"{latency}_count", **unresolved) == sent["404"]
    buckets = [
        s.value for s in families[latency] if s.name.endswith("_bucket") and s.labels["model"]
    ]
    assert buckets == sorted(buckets), "cumulative buckets never decrease"

    assert set(_DEFINED) <= set(families), set(_DEFINED) - set(families)
    # The demo aliases iris and iris-onnx; both are loaded before the server is ready.
    loaded = families["maas_loaded_models"]
    for model in ("iris", "iris-onnx"):
        assert _value(loaded, "maas_loaded_models", model=model, version="1") == 1
    assert _value(families["process_cpu_seconds"], "process_cpu_seconds_total") > 0


def test_a_second_scrape_counts_only_what_came_between(server: RunningServer) -> None:
    iris = {"model": "iris", "version": "1", "protocol": "v2", "code": "200"}
    with server.client() as http:
        # In multiprocess mode a metric with no value yet is absent from the scrape.
        before = _value(_scrape(http).get("maas_requests", []), "maas_requests_total", **iris)
        for _ in range(4):
            assert http.post("/v2/models/iris/infer", json=_GOOD).status_code == 200
        after = _value(_scrape(http)["maas_requests"], "maas_requests_total", **iris)
    assert after - before == 4


def test_metrics_require_an_admin_or_metrics_key_by_default(tmp_path: Path) -> None:
    running = start_server(tmp_path / "home")
    try:
        with running.client() as admin, running.client(headers={}) as anonymous:
            refused = anonymous.get("/metrics")
            assert refused.status_code == 401, refused.text
            assert refused.json()["code"] == "unauthenticated"
            created = admin.post("/api/v1/keys", json={"name": "app", "role": "consumer"})
            assert created.status_code == 201, created.text
            consumer = {"Authorization": f"Bearer {created.json()['key']}"}
            forbidden = anonymous.get("/metrics", headers=consumer)
            assert forbidden.status_code == 403, forbidden.text
            assert forbidden.json()["code"] == "forbidden"
            _scrape(admin)
    finally:
        running.stop()


def test_metrics_can_be_public_with_auth_on(tmp_path: Path) -> None:
    running = start_server(tmp_path / "home", env={"MAAS_AUTH__METRICS_PUBLIC": "true"})
    try:
        with running.client(headers={}) as anonymous:
            assert anonymous.post("/v2/models/iris/infer", json=_GOOD).status_code == 401
            families = _scrape(anonymous)
    finally:
        running.stop()
    assert "maas_requests" in families


def test_live_gauges_count_only_live_processes_across_restarts(
    tmp_path: Path, demo_template: Path
) -> None:
    prom, home = tmp_path / "prom", copy_home(demo_template, tmp_path / "home")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(prom)}
    clean = start_server(home, "--demo", "--no-auth", env=env)
    assert clean.stop() in (0, -signal.SIGTERM), "".join(clean.output)
    # A clean exit drops its live gauges (its counters stay: their counts happened).
    assert not list(prom.glob(f"gauge_live*_{clean.process.pid}.db"))

    killed = start_server(home, "--demo", "--no-auth", env=env)
    killed.process.kill()  # no teardown: its files still say two models are loaded
    killed.process.wait()
    killed.stop()  # closes its output pipe
    assert list(prom.glob(f"gauge_livesum_{killed.process.pid}.db"))

    running = start_server(home, "--demo", "--no-auth", env=env)
    try:
        with running.client() as http:
            assert http.post("/v2/models/iris/infer", json=_GOOD).status_code == 200
            families = _scrape(http)
        # Only the server writes values: its scikit-learn worker processes write no file.
        writers = {path.stem.rsplit("_", 1)[1] for path in prom.glob("*.db")}
        assert writers == {str(running.process.pid)}
    finally:
        running.stop()
    loaded = families["maas_loaded_models"]
    for model in ("iris", "iris-onnx"):
        assert _value(loaded, "maas_loaded_models", model=model, version="1") == 1
    depths = [s.value for s in families["maas_queue_depth"] if s.name == "maas_queue_depth"]
    assert depths and set(depths) == {0}
    iris = {"model": "iris", "version": "1", "protocol": "v2", "code": "200"}
    assert _value(families["maas_requests"], "maas_requests_total", **iris) == 1
