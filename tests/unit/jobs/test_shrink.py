"""The optimization methods on real models: int8 is smaller, pruning reaches its
sparsity, and the report measures both sides the same way."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from maas.errors import InvalidSpec
from maas.jobs.kinds import shrink
from maas.jobs.kinds.convert import sklearn_to_onnx
from maas.jobs.kinds.data import Frame
from maas.jobs.kinds.measure import load
from maas.jobs.kinds.optimize import Candidate, build_report
from maas.runtimes.base import LoadOptions
from maas.runtimes.onnx import OnnxRuntime


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    features, labels = load_digits(return_X_y=True)
    return features[:600], labels[:600]


@pytest.fixture(scope="module")
def mlp_onnx(
    tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0).fit(*digits)
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    assert sklearn_to_onnx(mlp, digits[0], path) is None
    return path


def test_int8_quantization_shrinks_an_onnx_mlp(mlp_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    details = shrink.onnx_quantize_int8(mlp_onnx, out)
    assert details["weight_type"] == "int8"
    assert out.stat().st_size < 0.5 * mlp_onnx.stat().st_size


def test_int8_quantizes_what_it_can_beside_ml_operators(mlp_onnx: Path, tmp_path: Path) -> None:
    """A graph of default and ai.onnx.ml operators, importing the default opset twice
    as skl2onnx sometimes writes it: the MatMuls are quantized, the rest kept."""
    import onnx

    model = onnx.load(str(mlp_onnx))
    assert any(n.domain == "ai.onnx.ml" for n in model.graph.node)
    default = next(o for o in model.opset_import if o.domain == "")
    model.opset_import.add(domain="", version=default.version)
    twice = tmp_path / "twice.onnx"
    onnx.save(model, str(twice))
    out = tmp_path / "int8.onnx"
    shrink.onnx_quantize_int8(twice, out)
    quantized = onnx.load(str(out))
    assert any(n.op_type == "MatMulInteger" for n in quantized.graph.node)
    assert out.stat().st_size < 0.5 * twice.stat().st_size


def test_int8_refuses_a_graph_of_ml_operators_only(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    linear = LogisticRegression(max_iter=200).fit(*digits)
    path = tmp_path / "linear.onnx"
    assert sklearn_to_onnx(linear, digits[0], path) is None
    with pytest.raises(InvalidSpec, match="nothing to quantize") as refused:
        shrink.onnx_quantize_int8(path, tmp_path / "int8.onnx")
    assert "LinearClassifier" in refused.value.details["operators"]


def test_onnx_pruning_reaches_the_target_sparsity(mlp_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    assert shrink.onnx_prune(mlp_onnx, 0.8, out)["sparsity"]["achieved"] >= 0.79
    runtime = OnnxRuntime.load(out, options=LoadOptions(threads=1))
    assert runtime.predict({"input": np.zeros((1, 64), np.float32)})["label"].shape == (1,)


def test_sklearn_pruning_zeroes_coefficients_and_refuses_trees(
    digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    model = LogisticRegression(max_iter=300).fit(*digits)
    skops.io.dump(model, tmp_path / "lr.skops")
    details = shrink.sklearn_prune(tmp_path / "lr.skops", 0.5, tmp_path / "pruned.skops")
    assert details["sparsity"]["achieved"] >= 0.5
    from sklearn.tree import DecisionTreeClassifier

    skops.io.dump(DecisionTreeClassifier().fit(*digits), tmp_path / "tree.skops")
    with pytest.raises(InvalidSpec, match="no weight matrices"):
        shrink.sklearn_prune(tmp_path / "tree.skops", 0.5, tmp_path / "x.skops")


def test_report_compares_sizes_latency_and_quality(
    mlp_onnx: Path, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    import pyarrow as pa

    out = tmp_path / "int8.onnx"
    shrink.onnx_quantize_int8(mlp_onnx, out)
    columns = {f"p{i}": digits[0][:200, i] for i in range(64)} | {"digit": digits[1][:200]}
    frame = Frame(pa.table(columns), {"name": "d", "digest": "sha256:x"})
    report = build_report(
        Candidate(load("onnx", mlp_onnx, 1, tmp_path), mlp_onnx.stat().st_size),
        Candidate(load("onnx", out, 1, tmp_path), out.stat().st_size),
        frame,
        target="digit",
        text_column=None,
        features=[f"p{i}" for i in range(64)],
        task=None,
        threads=1,
    )
    assert report["size_bytes"]["before"] == mlp_onnx.stat().st_size
    assert report["size_bytes"]["ratio"] < 0.5
    assert set(report["latency_ms"]["batch_32"]) == {"before", "after", "speedup_p50"}
    quality = report["quality"]
    assert quality["metric"] == "accuracy" and quality["agreement"] > 0.9
    assert report["quality_drop"] == pytest.approx(quality["before"] - quality["after"])
