"""``OnnxTextRuntime``: a transformers text model exported to ONNX, served as its source.

An ``optimize`` job turns an embedder or a sequence classifier into this artifact, a
directory (pushed as a tar, like a model directory) of three files:

    onnx_text.json   what the model is for: task, longest input, pooling and
                     normalisation (embeddings) or label names (classification)
    model.onnx       the encoder, taking ``input_ids`` and ``attention_mask`` (and
                     ``token_type_ids`` if it declares them); its first output is the
                     last hidden state [batch, tokens, dim] or the logits [batch, labels]
    tokenizer.json   the source's fast tokenizer

It serves the signature and task of the transformers runtime it came from (``text``
BYTES in; ``embedding`` and ``token_count``, or ``label`` and ``probabilities``, out),
tokenizes as it does (special tokens added, no truncation: a longer input is refused
with ``ContextLengthExceeded``), and pools and normalises the same way, in numpy.
Loading runs no code: a protobuf graph and two JSON files, read by onnxruntime and the
``tokenizers`` library. It needs the ``[onnx]`` extra, not torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import RuntimeFailure, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime, texts_of
from maas.runtimes.hf.contract import (
    check_token_limit,
    classifier_signature,
    embedding_signature,
)
from maas.runtimes.hf.embedder import POOLING_MODES, Pooling
from maas.runtimes.hf.loading import (
    EMBEDDINGS,
    EMBEDDINGS_BATCHED,
    TEXT_CLASSIFICATION,
    read_json,
)

__all__ = [
    "MANIFEST",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "OnnxTextRuntime",
    "TextManifest",
    "is_onnx_text_dir",
]

MANIFEST = "onnx_text.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_FORMAT = 1
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TextManifest:
    """The contents of ``onnx_text.json``."""

    task: str
    max_tokens: int
    #: Embeddings: how the last hidden state becomes one vector.
    pooling: Pooling | None = None
    dimensions: int | None = None
    #: Classification: the label of each logit, in order.
    labels: list[str] = field(default_factory=list)

    def write(self, directory: Path) -> None:
        body: dict[str, Any] = {
            "format": _FORMAT,
            "task": self.task,
            "max_tokens": self.max_tokens,
        }
        if self.pooling is not None:
            pooling = self.pooling
            body["pooling"] = {"modes": list(pooling.modes), "normalize": pooling.normalize}
            body["dimensions"] = self.dimensions
        if self.labels:
            body["labels"] = self.labels
        (directory / MANIFEST).write_text(json.dumps(body, indent=2), encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> TextManifest:
        """The manifest of ``directory``, checked; ``UnsupportedArtifact`` if it is wrong."""
        body = read_json(directory / MANIFEST)
        if body.get("format") != _FORMAT:
            raise UnsupportedArtifact(f"{MANIFEST}: unknown format {body.get('format')!r}")
        task, max_tokens = body.get("task"), body.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise UnsupportedArtifact(f"{MANIFEST}: max_tokens must be a positive integer")
        if task == EMBEDDINGS:
            return cls(task, max_tokens, _pooling(body), _dimensions(body))
        if task == TEXT_CLASSIFICATION:
            labels = body.get("labels")
            if not isinstance(labels, list) or not labels:
                raise UnsupportedArtifact(f"{MANIFEST}: a classifier needs its labels")
            return cls(task, max_tokens, labels=[str(label) for label in labels])
        raise UnsupportedArtifact(
            f"{MANIFEST}: task {task!r}; ONNX text models are {EMBEDDINGS} or {TEXT_CLASSIFICATION}"
        )


def _pooling(body: dict[str, Any]) -> Pooling:
    pooling = body.get("pooling")
    modes = pooling.get("modes") if isinstance(pooling, dict) else None
    if not isinstance(modes, list) or not modes or not set(modes) <= set(POOLING_MODES):
        raise UnsupportedArtifact(
            f"{MANIFEST}: pooling.modes must be a list of {', '.join(POOLING_MODES)}"
        )
    assert isinstance(pooling, dict)
    return Pooling(
        modes=tuple(str(mode) for mode in modes),
        normalize=bool(pooling.get("normalize", False)),
        max_tokens=int(body["max_tokens"]),
    )


def _dimensions(body: dict[str, Any]) -> int:
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or dimensions < 1:
        raise UnsupportedArtifact(f"{MANIFEST}: dimensions must be a positive integer")
    return dimensions


def is_onnx_text_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


class OnnxTextRuntime(Runtime):
    framework: ClassVar[str] = "onnx-text"
    releases_gil: ClassVar[bool] = True
    optimize_methods: ClassVar[tuple[str, ...]] = ("quantize_int8", "prune")

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return is_onnx_text_dir(path)

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        """The same task, signature and default batching as the transformers runtime
        gives the model it was exported from."""
        runtime = cls.load(path, options=replace(options, threads=1))
        details = {"format": "onnx", "task": runtime.task, **runtime.details}
        deployment = EMBEDDINGS_BATCHED if runtime.task == EMBEDDINGS else None
        return ArtifactInfo(cls.framework, runtime.signature, runtime.task, details, deployment)

    def __init__(self, session: Any, tokenizer: Any, manifest: TextManifest) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.manifest = manifest
        self.task = manifest.task
        self._feeds = _token_inputs(session)
        self._pad_id = _pad_id(tokenizer)
        output = session.get_outputs()[0]
        self._output = output.name
        if manifest.task == EMBEDDINGS:
            self.signature = _embedding_signature(output, manifest)
        else:
            self.signature = _classifier_signature(output, manifest)
        tokenizer.no_truncation()
        tokenizer.no_padding()

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        from tokenizers import Tokenizer

        from maas.runtimes.onnx import open_session

        if not is_onnx_text_dir(path):
            raise UnsupportedArtifact(f"an ONNX text model is a directory with {MANIFEST}")
        manifest = TextManifest.read(path)
        for name in (MODEL_FILE, TOKENIZER_FILE):
            if not (path / name).is_file():
                raise UnsupportedArtifact(f"the ONNX text model has no {name}")
        try:
            tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        except Exception as exc:  # the Rust parser's errors have no common base
            raise UnsupportedArtifact(f"{TOKENIZER_FILE} is not a tokenizer ({exc})") from None
        return cls(open_session(path / MODEL_FILE, options.threads), tokenizer, manifest)

    @property
    def details(self) -> dict[str, Any]:
        """What the registry records at push time: as the transformers runtime says it."""
        manifest = self.manifest
        if manifest.pooling is not None:
            return {
                "dimensions": manifest.dimensions,
                "pooling": manifest.pooling.mode,
                "normalize": manifest.pooling.normalize,
                "max_tokens": manifest.max_tokens,
            }
        return {"labels": manifest.labels, "max_tokens": manifest.max_tokens}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))]

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        texts = texts_of(inputs["text"])
        if not texts:
            empty = {spec.name: _empty(spec) for spec in self.signature.outputs}
            return {name: empty[name] for name in outputs}
        tokens, counts = self._encode(texts)
        feed = {name: tokens[name] for name in self._feeds}
        try:
            (first,) = self._session.run([self._output], feed)
        except Exception as exc:  # the feed is ours: a failure here is the model's
            raise RuntimeFailure(f"the ONNX text model failed: {type(exc).__name__}") from None
        values = np.asarray(first, dtype=np.float32)
        if self.manifest.pooling is not None:
            result = {
                "embedding": self.manifest.pooling.pool(values, tokens["attention_mask"]),
                "token_count": counts,
            }
        else:
            result = _classify(values, self.manifest.labels)
        return {name: result[name] for name in outputs}

    def _encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Token arrays padded to the longest text, and each text's token count."""
        encodings = self._tokenizer.encode_batch(texts)
        counts = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        longest = int(counts.max())
        check_token_limit(longest, self.manifest.max_tokens)
        shape = (len(texts), longest)
        tokens = {
            "input_ids": np.full(shape, self._pad_id, dtype=np.int64),
            "attention_mask": np.zeros(shape, dtype=np.int64),
            "token_type_ids": np.zeros(shape, dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            tokens["input_ids"][row, :size] = encoding.ids
            tokens["attention_mask"][row, :size] = 1
            tokens["token_type_ids"][row, :size] = encoding.type_ids
        return tokens, counts


def _token_inputs(session: Any) -> list[str]:
    names = [node.name for node in session.get_inputs()]
    unknown = [name for name in names if name not in _TOKEN_INPUTS]
    if unknown or "input_ids" not in names:
        raise UnsupportedArtifact(
            f"the ONNX text model takes {names}; it must take input_ids "
            f"(and may take attention_mask, token_type_ids)"
        )
    return names


def _pad_id(tokenizer: Any) -> int:
    padding = tokenizer.padding
    return int(padding["pad_id"]) if padding else 0


def _last_dim(output: Any) -> int | None:
    shape = output.shape
    return shape[-1] if shape and isinstance(shape[-1], int) and shape[-1] > 0 else None


def _embedding_signature(output: Any, manifest: TextManifest) -> Signature:
    dimensions = manifest.dimensions
    if len(output.shape) != 3 or _last_dim(output) not in (None, dimensions):
        raise UnsupportedArtifact(
            f"an embedder's first output must be [batch, tokens, {dimensions}], not {output.shape}"
        )
    return embedding_signature(dimensions)


def _classifier_signature(output: Any, manifest: TextManifest) -> Signature:
    count = len(manifest.labels)
    if len(output.shape) != 2 or _last_dim(output) not in (None, count):
        raise UnsupportedArtifact(
            f"a classifier's first output must be [batch, {count}] logits, not {output.shape}"
        )
    return classifier_signature(count)


def _empty(spec: TensorSpec) -> np.ndarray:
    shape = tuple(0 if size == -1 else size for size in spec.shape)
    kinds = {"BYTES": object, "FP32": np.float32, "INT64": np.int64}
    return np.zeros(shape, dtype=kinds[spec.datatype])


def _classify(logits: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    names = np.array([labels[i].encode() for i in probabilities.argmax(axis=1)], dtype=object)
    return {"label": names, "probabilities": probabilities}
