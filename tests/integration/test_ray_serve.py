"""``maas serve --ray ADDRESS``: a real server process whose iris runs as Ray actors on
a (simulated) cluster of a head and a worker node on loopback, called with tritonclient;
and whose jobs run there too, and die with it."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.integration.jobs_helpers import cli, pid_alive, sdk, wait_until
from tests.integration.server import RunningServer, start_server
from tests.integration.serving_helpers import ROW
from tests.jobs_data import wine_jsonl
from tests.ray_cluster import Cluster, loopback_cluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with loopback_cluster(workers=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home: Path = tmp_path_factory.mktemp("ray-home")
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MAAS_DEMO_MODELS": '["iris"]'}
    running = start_server(home, "--demo", "--ray", cluster.address, env=env, timeout_s=180)
    try:
        yield running
    finally:
        running.stop()


def test_iris_answers_from_ray_actors(server: RunningServer, iris: Any, iris_model: Any) -> None:
    features, _ = iris
    rows = features[:10]
    client = server.triton()
    tensor = triton_http.InferInput("input", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    result = client.infer("iris", [tensor])
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_model.predict(rows))
    with server.client() as http:
        status = http.get("/api/v1/models/iris/versions/1/deployment/status").json()
    assert status["workers"] == "ray" and status["ready"]
    assert len(status["pids"]) == 1 and server.process.pid not in status["pids"]
    assert len(status["nodes"]) == 1


def test_a_deployment_the_cluster_cannot_hold_is_refused_clearly(server: RunningServer) -> None:
    spec = {"instances": 1, "cpus": 16}  # each node has 2
    with server.client() as http:
        response = http.put("/api/v1/models/iris/versions/1/deployment", json=spec)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["code"] == "placement_infeasible", body
        assert "16 CPU" in body["error"]
        # The version that serves stays as it was, and so does the registry's spec
        # (which other gateways, and this one's next start, follow).
        status = http.get("/api/v1/models/iris/versions/1/deployment/status").json()
        stored = http.get("/api/v1/models/iris/versions/1").json()["deployment"]
    assert status["ready"] and status["spec"]["cpus"] == 1.0
    assert stored["cpus"] == 1.0


def test_cluster_status_shows_the_nodes_and_where_iris_runs(
    server: RunningServer, cluster: Cluster
) -> None:
    as_json = cli(server, "--output", "json", "cluster", "status")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["backend"] == "ray" and body["address"] == cluster.address
    alive = {node["node_id"] for node in body["nodes"] if node["alive"]}
    assert len(alive) == 2  # the head and the worker
    [iris] = [d for d in body["deployments"] if d["model"] == "iris"]
    [replica] = iris["replicas"]
    assert replica["alive"] and replica["node"] in alive and replica["pid"] != server.process.pid
    table = cli(server, "cluster", "status")
    assert table.returncode == 0, table.stderr
    assert "ray backend" in table.stdout and "2 of 2 nodes alive" in table.stdout
    assert "iris:1" in table.stdout and replica["node"][:12] in table.stdout
    with server.client(headers={}) as anonymous:
        assert anonymous.get("/api/v1/cluster").status_code == 401


def test_a_second_gateway_shares_the_replicas_and_leaves_them_when_it_stops(
    cluster: Cluster, server: RunningServer
) -> None:
    """Another ``maas serve`` on the same registry and cluster attaches to the replicas
    the first created (the same processes) instead of making its own, and its shutdown
    leaves them serving the first."""
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    path = "/api/v1/models/iris/versions/1/deployment/status"
    with server.client() as http:
        pids = http.get(path).json()["pids"]
    second = start_server(server.home, "--ray", cluster.address, env=env, timeout_s=180)
    try:
        with second.client() as http:
            status = http.get(path).json()
        assert status["workers"] == "ray" and status["pids"] == pids
    finally:
        assert second.stop() in (0, -signal.SIGTERM), "".join(second.output)
    with server.client() as http:
        assert http.get(path).json()["pids"] == pids
        answer = http.post("/v2/models/iris/infer", json=ROW)
    assert answer.status_code == 200, answer.text


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nPPid:\t", 1)[1].split()[0])


def test_a_job_runs_under_an_actor_and_dies_with_its_server(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    server = start_server(tmp_path / "home", "--ray", cluster.address, env=env, timeout_s=180)
    try:
        with sdk(server) as client:
            client.push_dataset(wine_jsonl(tmp_path / "wine.jsonl"), "wine")
            search = {
                "n_trials": 10_000,
                "timeout_s": 120,
                "cv": 2,
                "space": {"C": {"low": 0.01, "high": 10}},
            }
            spec = {
                "kind": "train",
                "model": "wine",
                "dataset": "wine",
                "target": "cultivar",
                "task": "tabular_classification",
                "estimator": "logistic_regression",
                "search": search,
                "onnx": False,
            }
            job = client.submit_job(spec)
            running = wait_until(
                client, job.id, lambda j: j.pid is not None and bool(j.progress), timeout_s=120
            )
            lines = [str(e.data.get("line")) for e in client.job_logs(job.id, type="log")]
        assert running.pid is not None and pid_alive(running.pid)
        assert any(line.startswith("running on Ray node ") for line in lines), lines
        assert _parent(running.pid) != server.process.pid  # a child of its actor, not of maas
        server.process.send_signal(signal.SIGKILL)  # no shutdown: Ray's ownership must do it
    finally:
        server.stop()
    deadline = time.monotonic() + 60
    while pid_alive(running.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(running.pid), "the job's process outlived its server"
