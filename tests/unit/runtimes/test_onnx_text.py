"""The ONNX text runtime (a transformers text model exported to ONNX): tokenizing,
pooling and classifying as the transformers runtimes do, detection, bad artifacts.

The graphs are written by hand so that every expected number is known: the embedder's
"hidden state" of a token is ``[token id, 1]``, and the classifier's logits are
``[-n, 0.5, n]`` for ``n`` = tokens - 5. Tokens come from a small word-level tokenizer
that adds ``[CLS]`` and ``[SEP]`` as BERT's does.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from tests.llm_models import minilm_dir

from maas.errors import ContextLengthExceeded, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.registry.archives import is_archive, unpacked
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime
from maas.runtimes.hf.embedder import Pooling
from maas.runtimes.hf.onnx_text import OnnxTextRuntime, TextManifest

WORDS = ["pump", "leak", "valve", "motor", "belt", "hot"]
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
LABELS = ["short", "medium", "long"]


def _texts(*texts: str) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=object)


def _ids(text: str) -> list[int]:
    return [VOCAB["[CLS]"], *(VOCAB.get(w, VOCAB["[UNK]"]) for w in text.split()), VOCAB["[SEP]"]]


def _write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.enable_truncation(max_length=3)  # the runtime must turn this off
    tokenizer.save(str(path))


def _graph(kind: str, path: Path) -> None:
    """An ONNX graph of input_ids and attention_mask with a known output."""
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, values: list[float] | list[int], dtype: int) -> onnx.TensorProto:
        return helper.make_tensor(name, dtype, [len(values)], values)

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
    ]
    if kind == "embeddings":
        nodes += [
            helper.make_node("Unsqueeze", ["ids", "last"], ["column"]),
            helper.make_node("Mul", ["column", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "one"], ["ones"]),
            helper.make_node("Concat", ["column", "ones"], ["last_hidden_state"], axis=2),
        ]
        output = helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", 2]
        )
    else:
        nodes += [
            helper.make_node("ReduceSum", ["mask", "axis1"], ["count"], keepdims=1),
            helper.make_node("Sub", ["count", "five"], ["n"]),
            helper.make_node("Neg", ["n"], ["minus_n"]),
            helper.make_node("Mul", ["n", "zero"], ["nought"]),
            helper.make_node("Add", ["nought", "half"], ["halves"]),
            helper.make_node("Concat", ["minus_n", "halves", "n"], ["logits"], axis=1),
        ]
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    constants = [
        const("last", [2], TensorProto.INT64),
        const("axis1", [1], TensorProto.INT64),
        const("zero", [0.0], TensorProto.FLOAT),
        const("one", [1.0], TensorProto.FLOAT),
        const("five", [5.0], TensorProto.FLOAT),
        const("half", [0.5], TensorProto.FLOAT),
    ]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
        for name in ("input_ids", "attention_mask")
    ]
    graph = helper.make_graph(nodes, kind, inputs, [output], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _artifact(directory: Path, manifest: TextManifest) -> Path:
    directory.mkdir()
    _graph(manifest.task, directory / "model.onnx")
    _write_tokenizer(directory / "tokenizer.json")
    manifest.write(directory)
    return directory


def _embedder(directory: Path, mode: str = "mean", normalize: bool = False) -> Path:
    return _artifact(
        directory, TextManifest("embeddings", 8, Pooling(mode, normalize, 8), dimensions=2)
    )


def _classifier(directory: Path) -> Path:
    return _artifact(directory, TextManifest("text-classification", 8, labels=LABELS))


def _load(directory: Path) -> OnnxTextRuntime:
    runtime = load_runtime("onnx-text", directory, LoadOptions(threads=1))
    assert isinstance(runtime, OnnxTextRuntime)
    return runtime


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_embeddings_pool_as_the_manifest_says_and_padding_never_counts(
    tmp_path: Path, mode: str
) -> None:
    runtime = _load(_embedder(tmp_path / "m", mode))
    texts = ("pump leak valve", "motor", "belt hot unknownword")
    out = runtime.predict({"text": _texts(*texts)})
    for text, vector, count in zip(texts, out["embedding"], out["token_count"], strict=True):
        ids = _ids(text)
        first = {"mean": np.mean(ids), "cls": ids[0], "max": max(ids)}[mode]
        np.testing.assert_allclose(vector, [first, 1.0], rtol=1e-6)
        assert count == len(ids)  # [CLS] and [SEP] counted; the tokenizer's cut of 3 is off
    alone = runtime.predict({"text": _texts("motor")})["embedding"]
    np.testing.assert_allclose(alone[0], out["embedding"][1], rtol=1e-6)


def test_normalised_embeddings_have_unit_length(tmp_path: Path) -> None:
    runtime = _load(_embedder(tmp_path / "m", "mean", normalize=True))
    vectors = runtime.predict({"text": _texts("pump leak", "hot")})["embedding"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    mean = np.mean(_ids("pump leak"))
    np.testing.assert_allclose(vectors[0], np.array([mean, 1.0]) / np.hypot(mean, 1.0), rtol=1e-6)


def test_the_signature_is_the_transformers_embedders(tmp_path: Path) -> None:
    runtime = _load(_embedder(tmp_path / "m"))
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
    runtime = _load(_embedder(tmp_path / "m"))
    runtime.predict({"text": _texts("pump " * 6)})  # 8 tokens: the limit
    with pytest.raises(ContextLengthExceeded) as refused:
        runtime.predict({"text": _texts("pump " * 7)})
    assert refused.value.details == {"tokens": 9, "max_tokens": 8}


def test_a_classifier_answers_labels_and_probabilities(tmp_path: Path) -> None:
    runtime = _load(_classifier(tmp_path / "c"))
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
    embedder, classifier = _embedder(tmp_path / "e"), _classifier(tmp_path / "c")
    archive = tmp_path / ("a" * 64)
    with tarfile.open(archive, "w") as tar:
        for path in sorted(embedder.iterdir()):
            tar.add(path, arcname=path.name)
    assert is_archive(archive)
    info = inspect_artifact(unpacked(archive, tmp_path / "cache"), "m.tar", trust_pickle=False)
    assert (info.framework, info.task) == ("onnx-text", "embeddings")
    assert info.details["format"] == "onnx" and info.details["pooling"] == "mean"
    assert info.deployment is not None and info.deployment.max_batch_size > 1  # batched
    info = inspect_artifact(classifier, "c.tar", trust_pickle=False)
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
        _graph("text-classification", directory / "model.onnx")
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
    directory = _embedder(tmp_path / "m")
    _break(directory, how)
    with pytest.raises(UnsupportedArtifact):
        inspect_artifact(directory, "m.tar", trust_pickle=False)


def test_the_real_tokenizer_counts_tokens_as_the_transformers_embedder(tmp_path: Path) -> None:
    directory = _embedder(tmp_path / "m")
    shutil.copyfile(minilm_dir() / "tokenizer.json", directory / "tokenizer.json")
    runtime = _load(directory)
    source = load_runtime("transformers", minilm_dir(), LoadOptions(threads=1))
    texts = ["Hello world!", "", "Ünïcödé — and an emoji 🚀", "The pump LEAKS near valve #3."]
    assert runtime.count_tokens(texts) == source.count_tokens(texts)  # type: ignore[attr-defined]
