"""Hand-written ONNX text models (``maas.runtimes.hf.onnx_text``), so that every number
a test expects is known.

The embedder's "hidden state" of a token is ``[token id, 1]`` (times a projection
matrix when one is asked for: then it has MatMul weights to quantize or prune), and
the classifier's logits are ``[-n, 0.5, n]`` for ``n`` = tokens - 5. Tokens come from a
small word-level tokenizer that adds ``[CLS]`` and ``[SEP]`` as BERT's does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maas.runtimes.hf.embedder import Pooling
from maas.runtimes.hf.onnx_text import TextManifest

__all__ = ["LABELS", "VOCAB", "classifier", "embedder", "token_ids", "write_graph"]

WORDS = ["pump", "leak", "valve", "motor", "belt", "hot"]
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {w: i + 4 for i, w in enumerate(WORDS)}
LABELS = ["short", "medium", "long"]


def token_ids(text: str) -> list[int]:
    return [VOCAB["[CLS]"], *(VOCAB.get(w, VOCAB["[UNK]"]) for w in text.split()), VOCAB["[SEP]"]]


def write_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.enable_truncation(max_length=3)  # the runtime must turn this off
    tokenizer.save(str(path))


def write_graph(task: str, path: Path, projection: np.ndarray | None = None) -> None:
    """An ONNX graph of input_ids and attention_mask with a known first output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, values: list[float] | list[int], dtype: int) -> onnx.TensorProto:
        return helper.make_tensor(name, dtype, [len(values)], values)

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
    ]
    constants = [
        const("last", [2], TensorProto.INT64),
        const("axis1", [1], TensorProto.INT64),
        const("zero", [0.0], TensorProto.FLOAT),
        const("one", [1.0], TensorProto.FLOAT),
        const("five", [5.0], TensorProto.FLOAT),
        const("half", [0.5], TensorProto.FLOAT),
    ]
    if task == "embeddings":
        pairs = "last_hidden_state" if projection is None else "pairs"
        nodes += [
            helper.make_node("Unsqueeze", ["ids", "last"], ["column"]),
            helper.make_node("Mul", ["column", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "one"], ["ones"]),
            helper.make_node("Concat", ["column", "ones"], [pairs], axis=2),
        ]
        if projection is not None:
            weight = numpy_helper.from_array(projection.astype(np.float32), "projection")
            constants.append(weight)
            nodes.append(helper.make_node("MatMul", ["pairs", "projection"], ["last_hidden_state"]))
        width = 2 if projection is None else projection.shape[1]
        output = helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", width]
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
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
        for name in ("input_ids", "attention_mask")
    ]
    graph = helper.make_graph(nodes, task, inputs, [output], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _artifact(directory: Path, manifest: TextManifest, projection: np.ndarray | None) -> Path:
    directory.mkdir()
    write_graph(manifest.task, directory / "model.onnx", projection)
    write_tokenizer(directory / "tokenizer.json")
    manifest.write(directory)
    return directory


def embedder(
    directory: Path,
    mode: str = "mean",
    normalize: bool = False,
    projection: np.ndarray | None = None,
) -> Path:
    """An ONNX text embedder of at most 8 tokens a text."""
    dimensions = 2 if projection is None else projection.shape[1]
    manifest = TextManifest("embeddings", 8, Pooling((mode,), normalize, 8), dimensions)
    return _artifact(directory, manifest, projection)


def classifier(directory: Path) -> Path:
    """An ONNX text classifier of at most 8 tokens a text, with LABELS."""
    return _artifact(directory, TextManifest("text-classification", 8, labels=LABELS), None)
