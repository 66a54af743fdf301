"""Jobs end to end against the real server: datasets, training with metrics and
lineage, serving the trained version over V2, SSE and the CLI, evaluation."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maas.client import Client
from maas.protocols.jobs import JobEvent, JobInfo
from tests.integration.jobs_helpers import cli, sdk
from tests.integration.server import RunningServer, start_server
from tests.jobs_data import tickets_csv, wine_jsonl


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("jobs-home"))
    yield server
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)


@pytest.fixture(scope="module")
def client(jobs_server: RunningServer) -> Iterator[Client]:
    with sdk(jobs_server) as sdk_client:
        yield sdk_client


def test_text_dataset_to_trained_version_served_over_v2(
    jobs_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    dataset = client.push_dataset(tickets_csv(tmp_path / "tickets.csv"), "tickets")
    assert (dataset.rows, dataset.format) == (240, "csv")
    assert [(c.name, c.type) for c in dataset.columns] == [("text", "string"), ("label", "string")]
    again = client.push_dataset(tmp_path / "tickets.csv", "tickets")
    assert again.digest == dataset.digest and len(client.list_datasets("tickets")) == 1
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a b", "c d"], "label": [1, 0]}), tmp_path / "t.parquet")
    parquet = client.push_dataset(tmp_path / "t.parquet", "tiny")
    assert (parquet.format, parquet.rows, parquet.columns[1].type) == ("parquet", 2, "int64")
    assert client.get_dataset(f"tiny@{parquet.digest[:15]}").digest == parquet.digest

    job = client.submit_job(
        "kind: train\nmodel: tickets\ndataset: tickets\ntask: text_classification\n"
        "target: label\ntext_column: text\n"
    )
    assert job.state == "queued"
    seen = list(client.follow_job(job.id))
    final = seen[-1]
    assert isinstance(final, JobInfo) and final.state == "succeeded", (final.error, seen)
    events = [e for e in seen if isinstance(e, JobEvent)]
    assert [e.data["state"] for e in events if e.type == "state"] == [
        "queued",
        "running",
        "succeeded",
    ]
    assert any(e.type == "progress" and "metrics" in e.data for e in events)
    assert final.result["metrics"]["accuracy"] > 0.9
    skops_version, onnx_version = final.result["versions"]

    version = client.get_version("tickets", skops_version)
    assert version.framework == "sklearn" and version.filename == "model.skops"
    assert set(version.metrics) >= {"accuracy", "f1_macro", "roc_auc"}
    assert version.lineage["dataset"]["digest"] == dataset.digest
    assert version.lineage["job"] == job.id and version.lineage["spec"]["task"] == (
        "text_classification"
    )
    twin = client.get_version("tickets", onnx_version)
    assert twin.framework == "onnx"
    assert twin.lineage["parent"] == {"model": "tickets", "version": skops_version}

    client.set_alias("tickets", "production", skops_version)
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["pump leak near the valve", "breaker fuse short again"],
            }
        ]
    }
    with jobs_server.client() as http:
        answer = http.post("/v2/models/tickets/infer", json=body)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["predict"] == ["hydraulic", "electrical"]
        onnx_answer = http.post(
            f"/v2/models/tickets/versions/{onnx_version}/infer",
            json={"inputs": [{**body["inputs"][0], "name": "text", "shape": [2, 1]}]},
        )
        assert onnx_answer.status_code == 200, onnx_answer.text
        labels = next(o for o in onnx_answer.json()["outputs"] if o["name"] == "label")
        assert labels["data"] == ["hydraulic", "electrical"]


def test_tabular_search_with_optuna_then_evaluate_and_compare(
    jobs_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    pushed = cli(
        jobs_server, "datasets", "push", str(wine_jsonl(tmp_path / "wine.jsonl")), "-n", "wine"
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "178 rows" in pushed.stdout
    shown = cli(jobs_server, "datasets", "show", "wine")
    assert shown.returncode == 0 and "cultivar" in shown.stdout and "double" in shown.stdout

    spec = tmp_path / "wine.yaml"
    spec.write_text(
        "kind: train\nmodel: wine\ndataset: wine\ntask: tabular_classification\n"
        "target: cultivar\nestimator: logistic_regression\nparams: {max_iter: 2000}\n"
        "search:\n  n_trials: 4\n  cv: 2\n  space:\n    C: {low: 0.01, high: 10, log: true}\n"
    )
    run = cli(jobs_server, "jobs", "submit", str(spec), "--follow")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "succeeded: wine:1" in run.stdout
    assert "state: running" in run.stderr  # the progress view printed the job's states

    version = client.get_version("wine", 1)
    assert version.metrics["accuracy"] > 0.85 and "roc_auc" in version.metrics
    assert 0.01 <= version.metadata["params"]["C"] <= 10

    job = client.submit_job(
        {"kind": "evaluate", "model": "wine", "version": 2, "dataset": "wine", "target": "cultivar"}
    )
    done = client.wait_job(job.id)
    assert done.state == "succeeded", done
    evaluated = client.get_version("wine", 2)
    assert evaluated.metrics["eval"]["wine"]["accuracy"] > 0.85

    compared = cli(jobs_server, "models", "compare", "wine", "1", "2")
    assert compared.returncode == 0, compared.stderr
    assert "eval.wine.accuracy" in compared.stdout and "onnx" in compared.stdout

    converted = client.submit_job(
        {
            "kind": "optimize",
            "model": "wine",
            "version": 1,
            "method": "onnx",
            "dataset": "wine",
            "target": "cultivar",
            "latency_budget_s": 0.2,
        }
    )
    done = client.wait_job(converted.id)
    assert done.state == "succeeded", done
    report = done.result["report"]
    assert report["method"] == "onnx" and report["quality"]["agreement"] > 0.98
    assert abs(report["quality_drop"]) < 0.02
    onnx_version = client.get_version("wine", done.result["versions"][0])
    assert onnx_version.framework == "onnx" and onnx_version.lineage["parent"]["version"] == 1

    listed = cli(jobs_server, "jobs", "list", "--model", "wine")
    assert listed.returncode == 0 and listed.stdout.count("succeeded") == 3
    logs = cli(jobs_server, "jobs", "logs", job.id)
    assert logs.returncode == 0 and "classification on 178 rows" in logs.stdout


def test_regression_reports_r2_and_mae(
    jobs_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    path = tmp_path / "diabetes.csv"
    header = ",".join([*data.feature_names, "progression"])
    rows = [",".join(map(str, [*x, y])) for x, y in zip(data.data, data.target, strict=True)]
    path.write_text("\n".join([header, *rows]) + "\n")
    client.push_dataset(path, "diabetes")
    job = client.submit_job(
        {
            "kind": "train",
            "model": "diabetes",
            "dataset": "diabetes",
            "task": "tabular_regression",
            "target": "progression",
            "estimator": "ridge",
            "params": {"alpha": 0.1},
            "onnx": False,
        }
    )
    done = client.wait_job(job.id)
    assert done.state == "succeeded", done
    metrics = client.get_version("diabetes", 1).metrics
    assert set(metrics) == {"r2", "mae"} and metrics["r2"] > 0.3 and metrics["mae"] < 60


def test_sse_resumes_after_a_sequence_number(
    jobs_server: RunningServer, client: Client, tmp_path: Path
) -> None:
    # A job of its own: the test must not depend on which tests ran before it.
    path = tmp_path / "line.csv"
    path.write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(40)))
    client.push_dataset(path, "line")
    job = client.submit_job({"kind": "train", "model": "line", "dataset": "line",
                             "task": "tabular_regression", "target": "y",
                             "estimator": "ridge", "onnx": False})  # fmt: skip
    assert client.wait_job(job.id).state == "succeeded"
    everything = [e for e in client.follow_job(job.id) if isinstance(e, JobEvent)]
    later = [e for e in client.follow_job(job.id, after=2) if isinstance(e, JobEvent)]
    assert [e.seq for e in later] == [e.seq for e in everything if e.seq > 2]
    with (
        httpx.Client(base_url=jobs_server.url, headers=jobs_server.auth_headers) as http,
        http.stream("GET", f"/api/v1/jobs/{job.id}/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    assert text.count("event: state") == 3 and "event: end" in text
