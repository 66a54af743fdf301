"""Optimization end to end: an ONNX MLP quantized to int8 and pruned, and the MiniLM
embedder (pushed as the transformers directory its package carries; the demo serves
its ONNX export) quantized to int8 and promoted in place of its source, with reports of
size, latency and quality; promotion refused past the quality-drop threshold or to
another signature, unless forced."""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

import maas.errors
from maas.client import Client
from tests.integration.jobs_helpers import cli, sdk
from tests.integration.server import RunningServer, start_server
from tests.jobs_data import digits_csv, tickets_csv
from tests.llm_models import minilm_dir

_TRAIN_ROWS = 1400
#: The server's promotion threshold: an int8 MiniLM loses about 0.035 of cosine.
_MAX_QUALITY_DROP = 0.1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("optimize-home"),
        env={"MAAS_JOBS__MAX_QUALITY_DROP": str(_MAX_QUALITY_DROP)},
        timeout_s=180,
    )
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
    assert report["quality_drop"] > _MAX_QUALITY_DROP

    with pytest.raises(maas.errors.QualityDropTooLarge) as refused:
        client.set_alias("digits-pruned", "production", new)
    assert refused.value.details["quality_drop"] == report["quality_drop"]
    assert "production" not in client.get_model("digits-pruned").aliases
    refused_cli = cli(server, "models", "alias", "digits-pruned", "production", str(new))
    assert refused_cli.returncode == 1 and "quality_drop_too_large" in refused_cli.stderr
    forced = cli(server, "models", "alias", "digits-pruned", "production", str(new), "--force")
    assert forced.returncode == 0, forced.stderr
    assert client.get_model("digits-pruned").aliases["production"] == new


_SENTENCES = [
    "The pump leaks oil near the inlet valve.",
    "Conveyor belt motor overheats after an hour of running.",
    "Replace the hydraulic hose on press number four.",
    "A software update froze the operator panel.",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.timeout(400)
def test_an_int8_minilm_replaces_its_source_behind_the_alias(
    server: RunningServer, client: Client, tmp_path: Path
) -> None:
    # A transformers directory; skips (or fails in CI) without it and the [llm] extra.
    source = client.push(minilm_dir(), "minilm", alias="production")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key) as openai_sdk:
        before = openai_sdk.embeddings.create(model="minilm:production", input=_SENTENCES)
        client.push_dataset(tickets_csv(tmp_path / "tickets.csv", n=24), "minilm-texts")
        job = client.submit_job(
            {
                "kind": "optimize",
                "model": "minilm",
                "version": source.version,
                "method": "quantize_int8",
                "dataset": "minilm-texts",
                "text_column": "text",
                "max_rows": 16,
                "latency_budget_s": 0.2,
            }
        )
        done = client.wait_job(job.id)
        assert done.state == "succeeded", (done.error, client.job_logs(job.id))
        (new,) = done.result["versions"]
        int8 = client.get_version("minilm", new)
        assert (int8.framework, int8.metadata["task"]) == ("onnx-text", "embeddings")
        assert int8.signature == source.signature  # text in, embedding and token_count out
        assert int8.metadata["pooling"] == source.metadata["pooling"] == "mean"
        assert int8.deployment.max_batch_size > 1  # embedding requests are batched
        assert int8.size_bytes < 0.35 * source.size_bytes
        report = int8.metadata["optimization"]
        assert report["size_bytes"] == {
            "before": source.size_bytes,
            "after": int8.size_bytes,
            "ratio": round(int8.size_bytes / source.size_bytes, 4),
        }
        for batch in ("batch_1", "batch_32"):
            for side in ("before", "after"):
                stats = report["latency_ms"][batch][side]
                assert 0 < stats["p50_ms"] <= stats["p99_ms"]
        assert report["quality"]["metric"] == "cosine" and report["quality"]["cosine"] > 0.9
        assert "agreement" not in report["quality"]  # embeddings are not class scores
        assert report["alternatives"]["torch_dynamic_int8"]["quality"]["cosine"] > 0.8

        promoted = cli(server, "models", "alias", "minilm", "production", str(new))
        assert promoted.returncode == 0, promoted.stderr  # same signature, small drop
        after = openai_sdk.embeddings.create(model="minilm:production", input=_SENTENCES)
        plain = openai_sdk.embeddings.create(model="minilm", input=_SENTENCES[0])
    vectors = [np.array([d.embedding for d in answer.data]) for answer in (before, after)]
    assert vectors[1].shape == (len(_SENTENCES), 384)
    assert np.all(_cosines(*vectors) > 0.9), _cosines(*vectors)
    np.testing.assert_allclose(np.linalg.norm(vectors[1], axis=1), 1.0, rtol=1e-4)
    assert after.usage.prompt_tokens == before.usage.prompt_tokens
    # Dynamic int8 scales activations per batch, so a text alone differs a little.
    assert _cosines(np.array([plain.data[0].embedding]), vectors[1][:1])[0] > 0.95
    served = client.predict("minilm:production", np.array([b"pump leak"], dtype=object))
    assert served["embedding"].shape == (1, 384) and served["token_count"].tolist() == [4]


def _identity_onnx(path: Path, name: str) -> Path:
    """A one-node ONNX model whose input is called ``name``."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Identity", [name], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def test_promotion_to_another_signature_is_refused_unless_forced(
    server: RunningServer, client: Client, tmp_path: Path
) -> None:
    first = client.push(_identity_onnx(tmp_path / "a.onnx", "x"), "shapes", alias="production")
    other = _identity_onnx(tmp_path / "b.onnx", "features")
    second = client.push(other, "shapes")
    with pytest.raises(maas.errors.SignatureChanged) as refused:
        client.set_alias("shapes", "production", second.version)
    assert refused.value.details["current_version"] == first.version
    assert refused.value.details["new"]["inputs"][0]["name"] == "features"
    with pytest.raises(maas.errors.SignatureChanged):  # a push with the alias: no version
        client.push(other, "shapes", alias="production")
    assert [v.version for v in client.list_versions("shapes")] == [1, 2]
    refused_cli = cli(server, "models", "alias", "shapes", "production", str(second.version))
    assert refused_cli.returncode == 1 and "signature_changed" in refused_cli.stderr
    forced = cli(server, "models", "alias", "shapes", "production", str(second.version), "--force")
    assert forced.returncode == 0, forced.stderr
    assert client.get_model("shapes").aliases["production"] == second.version
    same = client.push(other, "shapes", alias="production")  # now the alias's signature
    assert same.aliases == ["production"]
