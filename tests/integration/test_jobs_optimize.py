"""Optimization end to end: an ONNX MLP quantized to int8 and pruned, with reports of
size, latency and quality, and promotion refused past the quality-drop threshold."""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import maas.errors
from maas.client import Client
from tests.integration.jobs_helpers import cli, sdk
from tests.integration.server import RunningServer, start_server
from tests.jobs_data import digits_csv

_TRAIN_ROWS = 1400


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("optimize-home"))
    yield running
    assert running.stop() in (0, -signal.SIGTERM), "".join(running.output)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[Client]:
    with sdk(server) as sdk_client:
        yield sdk_client


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    features, labels = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short fit does not converge; it need not
        mlp = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=80, random_state=0)
        mlp.fit(features[:_TRAIN_ROWS], labels[:_TRAIN_ROWS])
    onnx_model = convert_sklearn(
        mlp,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(mlp): {"zipmap": False}},
    )
    path = tmp_path_factory.mktemp("mlp") / "digits-mlp.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


def test_int8_quantization_of_an_onnx_mlp_is_smaller_with_a_report(
    server: RunningServer, client: Client, mlp_onnx: Path, tmp_path: Path
) -> None:
    source = client.push(mlp_onnx, "digits-mlp")
    client.push_dataset(digits_csv(tmp_path / "holdout.csv", start=_TRAIN_ROWS), "digits-holdout")
    job = client.submit_job(
        {
            "kind": "optimize",
            "model": "digits-mlp",
            "version": source.version,
            "method": "quantize_int8",
            "dataset": "digits-holdout",
            "target": "digit",
            "latency_budget_s": 0.3,
        }
    )
    done = client.wait_job(job.id)
    assert done.state == "succeeded", (done.error, client.job_logs(job.id))
    (new,) = done.result["versions"]
    quantized = client.get_version("digits-mlp", new)
    assert quantized.framework == "onnx"
    assert quantized.size_bytes < 0.4 * source.size_bytes
    assert quantized.lineage["parent"] == {"model": "digits-mlp", "version": source.version}

    report = quantized.metadata["optimization"]
    assert report["method"] == "quantize_int8"
    assert report["size_bytes"]["before"] == source.size_bytes
    assert report["size_bytes"]["after"] == quantized.size_bytes
    for batch in ("batch_1", "batch_32"):
        for side in ("before", "after"):
            stats = report["latency_ms"][batch][side]
            assert 0 < stats["p50_ms"] <= stats["p99_ms"]
    quality = report["quality"]
    assert quality["metric"] == "accuracy" and quality["before"] > 0.85
    assert abs(quality["drop"]) < 0.05 and quality["agreement"] > 0.95
    assert report["dataset"]["rows"] == 1797 - _TRAIN_ROWS

    served = client.predict(f"digits-mlp:{new}", np.zeros((2, 64), dtype=np.float32))
    assert served["label"].shape == (2,)
    promoted = cli(server, "models", "alias", "digits-mlp", "production", str(new))
    assert promoted.returncode == 0, promoted.stderr
    compared = cli(server, "models", "compare", "digits-mlp", str(source.version), str(new))
    assert compared.returncode == 0, compared.stderr
    for row in ("size_bytes", "quality_drop", "latency batch_32 p99_ms", "quantize_int8"):
        assert row in compared.stdout, compared.stdout


def test_heavy_pruning_is_measured_and_its_promotion_refused_unless_forced(
    server: RunningServer, client: Client, mlp_onnx: Path, tmp_path: Path
) -> None:
    source = client.push(mlp_onnx, "digits-pruned")
    client.push_dataset(
        digits_csv(tmp_path / "unlabeled.csv", labels=False, start=_TRAIN_ROWS), "digits-inputs"
    )
    job = client.submit_job(
        {
            "kind": "optimize",
            "model": "digits-pruned",
            "version": source.version,
            "method": "prune",
            "sparsity": 0.97,
            "dataset": "digits-inputs",
            "latency_budget_s": 0.2,
        }
    )
    done = client.wait_job(job.id)
    assert done.state == "succeeded", (done.error, client.job_logs(job.id))
    (new,) = done.result["versions"]
    report = client.get_version("digits-pruned", new).metadata["optimization"]
    assert report["sparsity"]["achieved"] >= 0.96
    assert report["quality"]["metric"] == "agreement"  # no labels: outputs compared
    assert 0 < report["quality"]["cosine"] < 1
    assert report["quality_drop"] == pytest.approx(1 - report["quality"]["agreement"], abs=1e-6)
    assert report["quality_drop"] > 0.05

    with pytest.raises(maas.errors.QualityDropTooLarge) as refused:
        client.set_alias("digits-pruned", "production", new)
    assert refused.value.details["quality_drop"] == report["quality_drop"]
    assert "production" not in client.get_model("digits-pruned").aliases
    refused_cli = cli(server, "models", "alias", "digits-pruned", "production", str(new))
    assert refused_cli.returncode == 1 and "quality_drop_too_large" in refused_cli.stderr
    forced = cli(server, "models", "alias", "digits-pruned", "production", str(new), "--force")
    assert forced.returncode == 0, forced.stderr
    assert client.get_model("digits-pruned").aliases["production"] == new
