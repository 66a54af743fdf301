"""The README's train → optimize → compare flow as a new user runs it on tabular data:
what quantization can do to each kind of ONNX graph, clean job logs, finished
progress, and a comparison that reads well."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

import maas.errors
from maas.client import Client
from tests.integration.jobs_helpers import cli, sdk
from tests.integration.server import RunningServer, start_server
from tests.jobs_data import digits_csv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("reports-home"))
    yield running
    assert running.stop() in (0, -signal.SIGTERM), "".join(running.output)


@pytest.fixture(scope="module")
def client(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with sdk(server) as sdk_client:
        path = digits_csv(tmp_path_factory.mktemp("digits") / "digits.csv", stop=600)
        sdk_client.push_dataset(path, "digits")
        yield sdk_client


def _train(
    server: RunningServer, client: Client, model: str, estimator: str, params: str
) -> tuple[int, int]:
    """Train through the server; the versions it registers: (.skops, ONNX twin)."""
    job = client.submit_job(
        f"kind: train\nmodel: {model}\ndataset: digits\ntask: tabular_classification\n"
        f"target: digit\nestimator: {estimator}\nparams: {params}\n"
    )
    done = client.wait_job(job.id)
    assert done.state == "succeeded", (done.error, client.job_logs(job.id))
    skops_version, onnx_version = done.result["versions"]
    assert done.progress["fraction"] == 1.0  # a finished job is at 100 %, not 95 %
    listed = _cli_ok(server, "jobs", "list")
    assert "100%" in listed and "95%" not in listed, listed
    return skops_version, onnx_version


def _cli_ok(server: RunningServer, *args: str) -> str:
    ran = cli(server, *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def test_quantizing_a_graph_of_ml_operators_only_is_refused_at_submit(
    server: RunningServer, client: Client
) -> None:
    _, onnx_version = _train(server, client, "digits-lr", "logistic_regression", "{max_iter: 200}")
    with pytest.raises(maas.errors.InvalidSpec, match="nothing to quantize") as refused:
        client.submit_job(
            {
                "kind": "optimize",
                "model": "digits-lr",
                "version": onnx_version,
                "method": "quantize_int8",
                "dataset": "digits",
                "target": "digit",
            }
        )
    assert "LinearClassifier" in refused.value.message and "prune" in refused.value.message


def test_int8_job_logs_are_clean_and_compare_shows_both_sides(
    server: RunningServer, client: Client
) -> None:
    _, onnx_version = _train(
        server, client, "digits-mlp", "mlp", "{hidden_layer_sizes: [64], max_iter: 60}"
    )
    job = client.submit_job(
        {
            "kind": "optimize",
            "model": "digits-mlp",
            "version": onnx_version,
            "method": "quantize_int8",
            "dataset": "digits",
            "target": "digit",
            "latency_budget_s": 0.2,
        }
    )
    done = client.wait_job(job.id)
    assert done.state == "succeeded", (done.error, client.job_logs(job.id))
    (int8,) = done.result["versions"]
    lines = [str(e.data.get("line", "")) for e in client.job_logs(job.id) if e.type == "log"]
    assert lines, "the job logged nothing"
    assert not [line for line in lines if "\x1b[" in line or "pre-processing" in line], lines

    compared = _cli_ok(server, "models", "compare", "digits-mlp", str(onnx_version), str(int8))
    assert "e+0" not in compared and "e-0" not in compared, compared
    rows = {line.split("│")[1].strip(): line for line in compared.splitlines() if "│" in line}
    size = [cell.strip() for cell in rows["size_bytes"].split("│")[1:-1]]
    assert size[3].startswith("-") and size[3].endswith("%)") and "," in size[3], size
    for row in ("latency batch_1 p50_ms", "latency batch_32 p99_ms", "quality accuracy"):
        cells = [cell.strip() for cell in rows[row].split("│")[1:-1]]
        assert cells[1] and cells[2], (row, compared)  # the parent's side is filled in
