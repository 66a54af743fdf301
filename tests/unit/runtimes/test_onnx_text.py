"""The ONNX text runtime (a transformers text model exported to ONNX): tokenizing,
pooling and classifying as the transformers runtimes do, detection, bad artifacts.
The models are written by hand (``text_models``) so every expected number is known."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from tests.llm_models import minilm_dir
from tests.unit.runtimes.text_models import LABELS, classifier, embedder, token_ids, write_graph

from maas.errors import ContextLengthExceeded, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.registry.archives import is_archive, unpacked
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime
from maas.runtimes.hf.onnx_text import OnnxTextRuntime


def _texts(*texts: str) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=object)


def _load(directory: Path) -> OnnxTextRuntime:
    runtime = load_runtime("onnx-text", directory, LoadOptions(threads=1))
    assert isinstance(runtime, OnnxTextRuntime)
    return runtime


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "lasttoken", "mean_sqrt_len"])
def test_embeddings_pool_as_the_manifest_says_and_padding_never_counts(
    tmp_path: Path, mode: str
) -> None:
    runtime = _load(embedder(tmp_path / "m", mode))
    texts = ("pump leak valve", "motor", "belt hot unknownword")
    out = runtime.predict({"text": _texts(*texts)})
    for text, vector, count in zip(texts, out["embedding"], out["token_count"], strict=True):
        ids = token_ids(text)
        first, second = {
            "mean": (np.mean(ids), 1.0),
            "cls": (ids[0], 1.0),
            "max": (max(ids), 1.0),
            "lasttoken": (ids[-1], 1.0),
            "mean_sqrt_len": (np.sum(ids) / np.sqrt(len(ids)), np.sqrt(len(ids))),
        }[mode]
        np.testing.assert_allclose(vector, [first, second], rtol=1e-6)
        assert count == len(ids)  # [CLS] and [SEP] counted; the tokenizer's cut of 3 is off
    alone = runtime.predict({"text": _texts("motor")})["embedding"]
    np.testing.assert_allclose(alone[0], out["embedding"][1], rtol=1e-6)


def test_normalised_embeddings_have_unit_length(tmp_path: Path) -> None:
    runtime = _load(embedder(tmp_path / "m", "mean", normalize=True))
    vectors = runtime.predict({"text": _texts("pump leak", "hot")})["embedding"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    mean = np.mean(token_ids("pump leak"))
    np.testing.assert_allclose(vectors[0], np.array([mean, 1.0]) / np.hypot(mean, 1.0), rtol=1e-6)


def test_the_signature_is_the_transformers_embedders(tmp_path: Path) -> None:
    runtime = _load(embedder(tmp_path / "m"))
    assert runtime.signature == Signature(
        inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
        outputs=[
            TensorSpec(name="embedding", datatype="FP32", shape=[-1, 2]),
            TensorSpec(name="token_count", datatype="INT64", shape=[-1]),
        ],
    )
    assert runtime.details == {"dimensions": 2, "pooling": "mean", "normalize": False,
                               "max_tokens": 8}  # fmt: skip
    empty = runtime.predict({"text": _texts()})
    assert empty["embedding"].shape == (0, 2) and empty["token_count"].shape == (0,)


def test_an_input_past_the_longest_is_refused_not_cut(tmp_path: Path) -> None:
    runtime = _load(embedder(tmp_path / "m"))
    runtime.predict({"text": _texts("pump " * 6)})  # 8 tokens: the limit
    with pytest.raises(ContextLengthExceeded) as refused:
        runtime.predict({"text": _texts("pump " * 7)})
    assert refused.value.details == {"tokens": 9, "max_tokens": 8}


def test_a_classifier_answers_labels_and_probabilities(tmp_path: Path) -> None:
    runtime = _load(classifier(tmp_path / "c"))
    assert [s.name for s in runtime.signature.outputs] == ["label", "probabilities"]
    assert runtime.signature.outputs[1].shape == [-1, 3]
    out = runtime.predict({"text": _texts("pump", "pump leak valve", "pump leak valve motor")})
    assert [label.decode() for label in out["label"]] == ["short", "medium", "long"]
    n = np.array([3, 5, 6]) - 5.0
    logits = np.stack([-n, 0 * n + 0.5, n], axis=1)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-6)
    assert runtime.predict({"text": _texts("pump")}, ["label"]).keys() == {"label"}


def test_the_catalog_detects_a_packed_onnx_text_model(tmp_path: Path) -> None:
    packed, classifier_dir = embedder(tmp_path / "e"), classifier(tmp_path / "c")
    archive = tmp_path / ("a" * 64)
    with tarfile.open(archive, "w") as tar:
        for path in sorted(packed.iterdir()):
            tar.add(path, arcname=path.name)
    assert is_archive(archive)
    info = inspect_artifact(unpacked(archive, tmp_path / "cache"), "m.tar", trust_pickle=False)
    assert (info.framework, info.task) == ("onnx-text", "embeddings")
    assert info.details["format"] == "onnx" and info.details["pooling"] == "mean"
    assert info.deployment is not None and info.deployment.max_batch_size > 1  # batched
    info = inspect_artifact(classifier_dir, "c.tar", trust_pickle=False)
    assert (info.task, info.details["labels"], info.deployment) == (
        "text-classification",
        LABELS,
        None,
    )


def _break(directory: Path, how: str) -> None:
    if how == "no tokenizer":
        (directory / "tokenizer.json").unlink()
    elif how == "tokenizer not json":
        (directory / "tokenizer.json").write_text("import os")
    elif how == "generation task":
        manifest = json.loads((directory / "onnx_text.json").read_text())
        (directory / "onnx_text.json").write_text(json.dumps(manifest | {"task": "chat"}))
    elif how == "newer format":
        manifest = json.loads((directory / "onnx_text.json").read_text())
        (directory / "onnx_text.json").write_text(json.dumps(manifest | {"format": 99}))
    elif how == "wrong dimensions":
        manifest = json.loads((directory / "onnx_text.json").read_text())
        (directory / "onnx_text.json").write_text(json.dumps(manifest | {"dimensions": 5}))
    elif how == "classifier graph":
        write_graph("text-classification", directory / "model.onnx")
    elif how == "not onnx":
        (directory / "model.onnx").write_bytes(b"\x80\x04pickle")


@pytest.mark.parametrize(
    "how",
    [
        "no tokenizer",
        "tokenizer not json",
        "generation task",
        "newer format",
        "wrong dimensions",
        "classifier graph",
        "not onnx",
    ],
)
def test_a_broken_onnx_text_model_is_refused(tmp_path: Path, how: str) -> None:
    directory = embedder(tmp_path / "m")
    _break(directory, how)
    with pytest.raises(UnsupportedArtifact):
        inspect_artifact(directory, "m.tar", trust_pickle=False)


def test_the_real_tokenizer_counts_tokens_as_the_transformersembedder(tmp_path: Path) -> None:
    directory = embedder(tmp_path / "m")
    shutil.copyfile(minilm_dir() / "tokenizer.json", directory / "tokenizer.json")
    runtime = _load(directory)
    source = load_runtime("transformers", minilm_dir(), LoadOptions(threads=1))
    texts = ["Hello world!", "", "Ünïcödé — and an emoji 🚀", "The pump LEAKS near valve #3."]
    assert runtime.count_tokens(texts) == source.count_tokens(texts)  # type: ignore[attr-defined]
