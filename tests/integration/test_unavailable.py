"""503s of a healthy server in a bad moment (a worker crash, a drain): a clear answer to
each caller, one log line for the event, and a count per request in the metrics."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.demo_home import copy_home
from tests.integration.server import start_server
from tests.integration.serving_helpers import ROW, deploy, metric, scrape, status, wait_until


def _error_lines(output: list[str], needle: str) -> list[str]:
    return [line for line in output if line.startswith("ERROR") and needle in line]


# -- item 10: log the event once, count the requests ----------------------------------------


def test_a_worker_crash_logs_once_and_counts_each_failed_request(
    tmp_path: Path, demo_template: Path
) -> None:
    home = copy_home(demo_template, tmp_path / "home")
    server = start_server(home, "--demo", timeout_s=300)  # iris: scikit-learn, in processes
    try:
        deploy(server, "iris", 1, instances=1, max_batch_size=1)
        with server.client() as http, concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200
            [pid] = status(http, "iris", "production")["pids"]  # type: ignore[misc]
            os.kill(pid, signal.SIGSTOP)  # the calls pile up in the worker's pipe
            calls = [pool.submit(http.post, "/v2/models/iris/infer", json=ROW) for _ in range(6)]
            wait_until(lambda: status(http, "iris", "production")["in_flight"] >= 2)
            os.kill(pid, signal.SIGKILL)
            answers = [call.result(timeout=60) for call in calls]
            crashed = [a for a in answers if a.status_code == 503]
            assert len(crashed) >= 2, [a.text for a in answers]
            assert all(a.json()["code"] == "worker_crashed" for a in crashed)
            assert all("retry-after" in a.headers for a in crashed)
            counted = metric(scrape(http), "maas_unavailable_total", code="worker_crashed")
    finally:
        server.stop()
    assert counted == len(crashed)
    assert _error_lines(server.output, "worker_crashed") == [], "".join(server.output)
    assert len([line for line in server.output if f"worker process {pid} died" in line]) == 1


def test_a_drain_logs_once_and_counts_each_refused_request(
    tmp_path: Path, demo_template: Path
) -> None:
    home = copy_home(demo_template, tmp_path / "home")
    server = start_server(home, "--demo", env={"MAAS_SERVING__DRAIN_GRACE_S": "3"}, timeout_s=300)
    try:
        with server.client() as http:
            assert http.get("/v2/health/ready").status_code == 200  # a connection before
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: http.get("/v2/health/ready").status_code == 503)
            refused = [http.post("/v2/models/iris/infer", json=ROW) for _ in range(5)]
            counted = metric(scrape(http), "maas_unavailable_total", code="shutting_down")
        server.process.wait(30)
    finally:
        server.stop()
    assert [r.status_code for r in refused] == [503] * 5
    assert counted == 5
    assert _error_lines(server.output, "shutting_down") == [], "".join(server.output)


# -- item 4: requests cut by the drain deadline ---------------------------------------------


def test_requests_cut_by_the_drain_deadline_get_503_and_the_teardown_completes(
    tmp_path: Path, demo_template: Path
) -> None:
    drain_timeout_s = 4.0
    env = {"MAAS_SERVING__DRAIN_TIMEOUT_S": str(drain_timeout_s)}
    server = start_server(
        copy_home(demo_template, tmp_path / "home"), "--demo", env=env, timeout_s=300
    )
    try:
        version = 1
        # A batch that waits a minute for company: the request is in flight, in the queue.
        deploy(server, "iris", version, max_batch_size=64, max_queue_delay_us=60_000_000)
        with server.client() as http, concurrent.futures.ThreadPoolExecutor(2) as pool:
            stuck = [pool.submit(http.post, "/v2/models/iris/infer", json=ROW) for _ in range(2)]
            wait_until(lambda: status(http, "iris", version)["queue_depth"] == 2)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            answers = [call.result(timeout=30) for call in stuck]
            server.process.wait(drain_timeout_s + 10)
            took_s = time.monotonic() - signalled
    finally:
        server.stop()
    output = "".join(server.output)
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "shutting_down", answer.text
        assert "retry-after" in answer.headers
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output
    # The watchdog never had to act (the teardown share itself: test_drain_plan.py).
    assert "still runs" not in output, output
    assert took_s < drain_timeout_s + 2, took_s
    assert server.process.returncode in (0, -signal.SIGTERM), output
    with httpx.Client() as probe, pytest.raises(httpx.ConnectError):
        probe.get(f"{server.url}/v2/health/live")
