"""SIGTERM against a real server: in-flight requests finish, the rest is refused, and
the process is gone by the drain deadline whatever is still running."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.integration.server import start_server
from tests.integration.serving_helpers import ROW, deploy, push, status, wait_until


def _rows(features: np.ndarray) -> dict[str, object]:
    data = features.ravel().tolist()
    return {
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [len(features), 4], "data": data}]
    }


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_sigterm_lets_in_flight_requests_finish(
    tmp_path: Path,
    iris_skops: Path,
    iris_model: LogisticRegression,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(tmp_path / "home", env={"MAAS_SERVING__DRAIN_GRACE_S": "5"})
    try:
        version = push(server, iris_skops, "flowers", alias="production")
        # A batch waits 4 s for company: a queued request is provably in flight.
        deploy(server, "flowers", version, max_batch_size=64, max_queue_delay_us=4_000_000)
        parts = [iris[0][i : i + 3] for i in (0, 50, 100, 120)]
        with server.client() as http, concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(http.post, "/v2/models/flowers/infer", json=_rows(p)) for p in parts
            ]
            wait_until(lambda: status(http, "flowers", version)["queue_depth"] == 4)
            server.process.send_signal(signal.SIGTERM)
            ready = http.get("/v2/health/ready")
            model_ready = http.get("/v2/models/flowers/ready")
            refused = http.post("/v2/models/flowers/infer", json=ROW)
            responses = [f.result(timeout=60) for f in futures]
        assert server.process.wait(60) in (0, -signal.SIGTERM), "".join(server.output)
    finally:
        server.stop()

    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert model_ready.status_code == 503 and model_ready.json()["ready"] is False
    # Within the grace the listener still answers: a clear, retryable refusal.
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "shutting_down" and "retry-after" in refused.headers
    for part, response in zip(parts, responses, strict=True):
        assert response.status_code == 200, response.text
        [predict] = [o for o in response.json()["outputs"] if o["name"] == "predict"]
        assert predict["data"] == iris_model.predict(part).tolist()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")
    # The usage of the requests that finished during the drain was written before exit.
    with sqlite3.connect(server.home / "maas.db") as db:
        [(metered,)] = db.execute(
            "SELECT count(*) FROM usage_records WHERE model = 'flowers' AND status = 200"
        ).fetchall()
    assert metered == len(parts)


def test_the_process_exits_by_the_drain_deadline_whatever_still_runs(
    tmp_path: Path, iris_skops: Path
) -> None:
    drain_timeout_s = 4.0
    env = {"MAAS_SERVING__DRAIN_TIMEOUT_S": str(drain_timeout_s)}
    server = start_server(tmp_path / "home", env=env)
    try:
        push(server, iris_skops, "flowers", alias="production")
        with server.client() as http, concurrent.futures.ThreadPoolExecutor(1) as pool:
            [pid] = status(http, "flowers", "production")["pids"]  # type: ignore[misc]
            os.kill(pid, signal.SIGSTOP)  # the worker takes the call and never answers
            stuck = pool.submit(http.post, "/v2/models/flowers/infer", json=ROW)
            wait_until(lambda: status(http, "flowers", "production")["in_flight"] == 1)
            server.process.send_signal(signal.SIGTERM)
            # Without a deadline the teardown waits for that answer forever.
            server.process.wait(drain_timeout_s + 10)
            outcome = stuck.exception(timeout=30) or stuck.result()
    finally:
        server.stop()
    assert not (isinstance(outcome, httpx.Response) and outcome.status_code == 200)
    wait_until(lambda: _gone(pid), timeout_s=10)  # the stuck worker was killed, not orphaned
    wait_until(lambda: "shutdown deadline passed" in "".join(server.output), timeout_s=10)
