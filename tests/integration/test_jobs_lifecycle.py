"""A job's life against the real server: cancelled (its process really stops), queued
behind another, interrupted by a server restart or crash (re-queued or failed with the
reason, never lost), and refused with clear 4xx errors when the input is wrong."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import maas.errors
from maas.client import Client
from maas.protocols.jobs import JobInfo
from tests.integration.jobs_helpers import cli, pid_alive, sdk, wait_until
from tests.integration.server import RunningServer, start_server
from tests.jobs_data import tickets_csv, wine_jsonl


def _long_search(seconds: float, model: str = "wine") -> dict[str, Any]:
    """A real training job whose optuna search runs for about ``seconds``."""
    return {
        "kind": "train",
        "model": model,
        "dataset": "wine",
        "task": "tabular_classification",
        "target": "cultivar",
        "estimator": "logistic_regression",
        "params": {"max_iter": 200},
        "search": {
            "n_trials": 10_000,
            "timeout_s": seconds,
            "cv": 2,
            "space": {"C": {"low": 0.001, "high": 100, "log": True}},
        },
        "onnx": False,
    }


def _yaml(spec: dict[str, Any], line: str) -> str:
    """``spec`` as YAML with one more line, for what only YAML can say (``!!binary``)."""
    return "".join(f"{key}: {value}\n" for key, value in spec.items()) + line + "\n"


def _running_with_pid(job: JobInfo) -> bool:
    return job.state == "running" and job.pid is not None and bool(job.progress)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("lifecycle-home")
    # The suite runs with one BLAS thread (tests/conftest.py); the server gets two, so a
    # job's one (threads_per_job) shows that the job's own environment pins it.
    running = start_server(home, env={"MAAS_JOBS__CANCEL_GRACE_S": "2", "OMP_NUM_THREADS": "2"})
    with sdk(running) as client:
        client.push_dataset(wine_jsonl(home / "wine.jsonl"), "wine")
        client.push_dataset(tickets_csv(home / "tickets.csv", n=60), "tickets")
    yield running
    assert running.stop() in (0, -signal.SIGTERM), "".join(running.output)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[Client]:
    with sdk(server) as sdk_client:
        yield sdk_client


def test_cancel_stops_the_running_process_and_queued_jobs_never_start(
    server: RunningServer, client: Client
) -> None:
    running = client.submit_job(_long_search(120))
    queued = client.submit_job(_long_search(120))
    job = wait_until(client, running.id, _running_with_pid)
    assert job.pid is not None and pid_alive(job.pid)
    environ = Path(f"/proc/{job.pid}/environ").read_bytes().split(b"\0")
    assert b"OMP_NUM_THREADS=1" in environ and b"HF_HUB_OFFLINE=1" in environ
    assert os.getpgid(job.pid) == job.pid  # a process group of its own: cancel kills it all
    assert client.get_job(queued.id).state == "queued"  # one job at a time by default

    cancelled_queued = client.cancel_job(queued.id)
    assert (cancelled_queued.state, cancelled_queued.attempts) == ("cancelled", 0)

    done = cli(server, "jobs", "cancel", running.id)
    assert done.returncode == 0 and "cancelled" in done.stdout, done.stderr
    assert not pid_alive(job.pid)
    final = client.get_job(running.id)
    assert final.state == "cancelled" and final.pid is None and final.finished_at is not None
    states = [e.data for e in client.job_logs(running.id, type="state")]
    assert states[-1]["state"] == "cancelled" and "stopped" in states[-1]["reason"]

    with pytest.raises(maas.errors.JobFinished):
        client.cancel_job(running.id)


def test_bad_datasets_are_refused_with_clear_errors(
    server: RunningServer, client: Client, tmp_path: Path
) -> None:
    cases = {
        "ragged.csv": (b"a,b\n1,2\n3\n", "invalid_dataset", "CSV"),
        "broken.parquet": (b"PAR1 not really parquet", "invalid_dataset", "PARQUET"),
        "broken.jsonl": (b'{"a": 1}\n{"a": \n', "invalid_dataset", "JSONL"),
        "header-only.csv": (b"a,b\n", "invalid_dataset", "no rows"),
        "table.xlsx": (b"PK\x03\x04", "invalid_dataset", ".csv, .parquet or .jsonl"),
        "empty.csv": (b"", "invalid_input", "empty"),
    }
    with server.client() as http:
        for filename, (body, code, words) in cases.items():
            answer = http.post(
                "/api/v1/datasets", params={"name": "bad", "filename": filename}, content=body
            )
            assert answer.status_code == 400, (filename, answer.text)
            assert answer.json()["code"] == code, (filename, answer.text)
            assert words in answer.json()["error"], (filename, answer.text)
        bad_name = http.post(
            "/api/v1/datasets", params={"name": "Bad Name", "filename": "a.csv"}, content=b"a\n1\n"
        )
        assert bad_name.status_code == 400 and bad_name.json()["code"] == "invalid_name"
    assert client.list_datasets("bad") == []
    with pytest.raises(maas.errors.DatasetNotFound):
        client.get_dataset("nothing-here")
    pushed = cli(server, "datasets", "push", str(tmp_path / "missing.csv"), "-n", "x")
    assert pushed.returncode != 0


def test_bad_specs_are_refused_before_they_queue(server: RunningServer, client: Client) -> None:
    good = {
        "kind": "train",
        "model": "tickets",
        "dataset": "tickets",
        "task": "text_classification",
        "target": "label",
        "text_column": "text",
    }
    evaluate = {"kind": "evaluate", "model": "m", "dataset": "wine", "target": "cultivar"}
    cases: list[tuple[Any, str, str]] = [
        ({**good, "kind": "dance"}, "invalid_spec", "kind"),
        ({**good, "task": "clustering"}, "invalid_spec", "task"),
        ({**good, "target": "nope"}, "invalid_spec", "no column 'nope'"),
        ({**good, "text_column": "label2"}, "invalid_spec", "no column"),
        ({**good, "estimator": "random_forest"}, "invalid_spec", "unknown estimator"),
        ({**good, "params": {"not_a_param": 1}}, "invalid_spec", "no parameter 'not_a_param'"),
        ({**good, "test_size": 1.5}, "invalid_spec", "test_size"),
        ({**good, "typo_field": 1}, "invalid_spec", "typo_field"),
        ({**good, "dataset": "missing"}, "dataset_not_found", "missing"),
        (
            {**good, "task": "tabular_classification", "text_column": None, "features": ["text"]},
            "invalid_spec",
            "must be numeric",
        ),
        (
            {"kind": "evaluate", "model": "m", "dataset": "tickets"},
            "invalid_spec",
            "evaluate needs target",
        ),
        ({**good, "model": "Bad Name"}, "invalid_name", "invalid model name"),
        (
            {
                "kind": "train",
                "model": "w",
                "dataset": "tickets",
                "task": "tabular_regression",
                "target": "label",
            },
            "invalid_spec",
            "numeric target",
        ),
        (
            {"kind": "optimize", "model": "nope", "dataset": "wine", "method": "onnx"},
            "model_not_found",
            "nope",
        ),
        ("kind: [unclosed", "invalid_spec", "YAML"),
        ("- just\n- a list\n", "invalid_spec", "mapping"),
        # Values JSON cannot hold: refused by the schema, not a 500 when stored.
        (_yaml(good, "params: {C: !!binary gAAA}"), "invalid_spec", "bytes value is not JSON"),
        (_yaml(good, "params: {C: 2026-01-01}"), "invalid_spec", "date value is not JSON"),
        (_yaml(good, "params: {C: .nan}"), "invalid_spec", "not a finite number"),
        (_yaml(good, "params: {C: 99999999999999999999}"), "invalid_spec", "64-bit"),
        (_yaml(good, 'estimator: "a\\0b"'), "invalid_spec", "NUL"),
        # Numbers past what their use takes, and versions that must exist.
        ({**good, "seed": 2**32}, "invalid_spec", "seed"),
        ({**good, "seed": -1}, "invalid_spec", "seed"),
        ({**good, "parent": 2**31}, "invalid_spec", "parent"),
        ({**good, "model": "never-trained", "parent": 1}, "model_not_found", "never-trained"),
        ({**evaluate, "version": "³"}, "invalid_name", "alias"),
        ({**evaluate, "version": 1e20}, "invalid_spec", "version"),
    ]
    with server.client() as http:
        for spec, code, words in cases:
            if isinstance(spec, str):
                answer = http.post(
                    "/api/v1/jobs", content=spec, headers={"Content-Type": "application/yaml"}
                )
            else:
                answer = http.post("/api/v1/jobs", json=spec)
            assert 400 <= answer.status_code < 500, (spec, answer.text)
            assert answer.json()["code"] == code, (spec, answer.text)
            assert words in answer.json()["error"], (spec, answer.text)
        assert http.get("/api/v1/jobs/0123").json()["code"] == "job_not_found"
    assert client.list_jobs(model="w") == []


def test_event_positions_past_the_log_or_not_ascii_digits_are_refused(
    server: RunningServer, client: Client
) -> None:
    job = client.submit_job(_long_search(60, model="odd-positions"))
    client.cancel_job(job.id)
    logs_path, events_path = f"/api/v1/jobs/{job.id}/logs", f"/api/v1/jobs/{job.id}/events"
    with server.client() as http:
        for path in (logs_path, events_path):
            for after in (2**31, 2**63, 10**20):  # past the INTEGER column of sequence numbers
                answer = http.get(path, params={"after": after})
                assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
        # "²" (sent as latin-1, as a header is read) passes str.isdigit(), not int().
        for header in (b"\xb2", b"9" * 30, b"-1", b"1e3"):
            answer = http.get(events_path, headers={"Last-Event-ID": header})
            assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
            assert "Last-Event-ID" in answer.json()["error"]
        # A real position resumes after it: the later events, then the end.
        seqs = [event["seq"] for event in http.get(logs_path).json()]
        with http.stream("GET", events_path, headers={"Last-Event-ID": str(seqs[0])}) as stream:
            body = stream.read().decode()
    ids = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
    assert ids == seqs[1:] and body.rstrip().splitlines()[-2] == "event: end", body


def test_sources_a_job_cannot_load_are_refused_at_submit(
    demo_server: RunningServer, tmp_path: Path
) -> None:
    """A GGUF file or a text generator used to fail minutes later ("neither a zip nor a
    tar"); a parent or source version that does not exist, never noticed."""
    with sdk(demo_server) as client:
        client.push_dataset(tickets_csv(tmp_path / "tickets.csv", n=30), "odd-tickets")
        on = {"dataset": "odd-tickets", "target": "label", "text_column": "text"}
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"kind": "evaluate", "model": "smollm2", **on}, "invalid_spec", "GGUF"),
            (
                {"kind": "optimize", "model": "smollm2", "method": "onnx", **on},
                "invalid_spec",
                "GGUF",
            ),
            (
                {"kind": "evaluate", "model": "iris", "version": "99999999999999999999", **on},
                "version_not_found",
                "iris",
            ),
            (
                {
                    "kind": "train",
                    "model": "iris",
                    "task": "text_classification",
                    "parent": 99,
                    **on,
                },
                "version_not_found",
                "no version 99",
            ),
        ]
        with demo_server.client() as http:
            for spec, code, words in cases:
                answer = http.post("/api/v1/jobs", json=spec)
                assert 400 <= answer.status_code < 500, (spec, answer.text)
                assert answer.json()["code"] == code, (spec, answer.text)
                assert words in answer.json()["error"], (spec, answer.text)
        assert client.list_jobs(model="smollm2") == client.list_jobs(model="iris") == []


def test_job_submit_needs_a_deployer_and_is_audited(server: RunningServer, client: Client) -> None:
    with server.client() as http:
        consumer = http.post(
            "/api/v1/keys", json={"name": "reader", "role": "consumer", "models": ["*"]}
        ).json()["key"]
        spec = {**_long_search(1), "search": None}
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {consumer}"}
        ) as reader:
            refused = reader.post("/api/v1/jobs", json=spec)
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
            assert reader.get("/api/v1/jobs").status_code == 200
        job = client.submit_job(spec)
        audit = http.get("/api/v1/audit", params={"action": "job.submit"}).json()
    assert [a["outcome"] for a in audit[:2]] == ["ok", "denied"]
    assert audit[0]["details"]["job"] == job.id
    assert client.wait_job(job.id).state == "succeeded"


def test_a_teams_key_sees_and_uses_only_its_own_datasets(
    server: RunningServer, client: Client, tmp_path: Path
) -> None:
    with server.client() as http:
        key = http.post(
            "/api/v1/keys", json={"name": "team-a", "role": "deployer", "models": ["team-a*"]}
        ).json()["key"]
    with Client(server.url, api_key=key) as team:
        own = team.push_dataset(wine_jsonl(tmp_path / "team-a-wine.jsonl"), "team-a-wine")
        assert [d.name for d in team.list_datasets()] == [own.name]
        with pytest.raises(maas.errors.DatasetNotFound):
            team.get_dataset("wine")  # another team's: as if it did not exist
        with pytest.raises(maas.errors.Forbidden):
            team.push_dataset(tmp_path / "team-a-wine.jsonl", "wine-copy")
        spec = {**_long_search(1), "model": "team-a-wine", "search": None}
        with pytest.raises(maas.errors.DatasetNotFound):
            team.submit_job(spec)
        job = team.submit_job({**spec, "dataset": "team-a-wine"})
        assert team.wait_job(job.id).state == "succeeded"
    assert {"wine", "team-a-wine"} <= {d.name for d in client.list_datasets()}  # admin: all


def test_restart_during_a_job_requeues_it_and_it_finishes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_server(home)
    try:
        with sdk(server) as client:
            client.push_dataset(wine_jsonl(tmp_path / "wine.jsonl"), "wine")
            job = client.submit_job(_long_search(2))
            running = wait_until(client, job.id, _running_with_pid)
        assert running.pid is not None
        follower = sdk(server)
        events = follower.follow_job(job.id)
        next(events)  # an SSE stream is open while the server stops
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 15, "the server waited on the SSE follower"
        assert not pid_alive(running.pid), "the job's process outlived the server"
        rest = list(events)  # the stream ended with the server, without a final state
        assert not any(isinstance(item, JobInfo) for item in rest)
        follower.close()
        server = start_server(home)
        with sdk(server) as client:
            done = wait_until(client, job.id, lambda j: j.finished, timeout_s=90)
            assert done.state == "succeeded", done
            assert done.attempts == 2 and done.result["versions"] == [1]
            reasons = [e.data.get("reason", "") for e in client.job_logs(job.id, type="state")]
        assert any("interrupted" in r and "queued again" in r for r in reasons), reasons
    finally:
        server.stop()


def test_crash_during_a_job_fails_it_with_the_reason_when_attempts_are_spent(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    # The crashed server's heartbeat is stale (2 s) by the time the last one starts: it
    # settles the job at once, as it would any dead server's after jobs.runner_stale_s.
    env = {"MAAS_JOBS__MAX_ATTEMPTS": "1", "MAAS_JOBS__RUNNER_STALE_S": "2"}
    server = start_server(home, env=env)
    with sdk(server) as client:
        client.push_dataset(wine_jsonl(tmp_path / "wine.jsonl"), "wine")
        job = client.submit_job(_long_search(60))
        running = wait_until(client, job.id, _running_with_pid)
    assert running.pid is not None
    server.process.send_signal(signal.SIGKILL)  # no shutdown: the job is left "running"
    server.stop()
    deadline = time.monotonic() + 10
    while pid_alive(running.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(running.pid), "an orphaned job process kept running"
    replica = start_server(home, env={**env, "MAAS_JOBS__ENABLED": "false"})
    try:  # a server that runs no jobs leaves the job pool's jobs alone
        with sdk(replica) as client:
            assert client.get_job(job.id).state == "running"
            waiting = client.submit_job({**_long_search(1), "search": None})
            time.sleep(1)
            assert client.get_job(waiting.id).state == "queued"
    finally:
        replica.stop()
    assert (home / "jobs" / job.id).is_dir()  # the crashed attempt's files
    server = start_server(home, env=env)
    try:
        assert not (home / "jobs" / job.id).exists()
        with sdk(server) as client:
            failed = client.get_job(job.id)
            assert failed.state == "failed" and failed.error_code == "job_interrupted"
            assert failed.error is not None and "attempt 1 of 1" in failed.error
            shown = cli(server, "jobs", "show", job.id)
            assert shown.returncode == 0 and "job_interrupted" in shown.stdout
            assert client.wait_job(waiting.id).state == "succeeded"  # the pool took it up
    finally:
        server.stop()
