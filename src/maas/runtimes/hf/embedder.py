"""``EmbeddingRuntime``: sentence embeddings, pooled and normalised as the model says.

A sentence-transformers directory says how in its own files: ``1_Pooling/config.json``
(CLS, max, mean, mean/sqrt(length), position-weighted mean or last-token pooling; the
vectors of several modes are concatenated, as sentence-transformers does), a
``Normalize`` module in ``modules.json``, and the longest input in
``sentence_bert_config.json``. A module maas does not implement (``Dense``, ``LayerNorm``
…) or a pooling flag it does not know refuses the model at push, rather than serving
vectors the model's authors never meant. A bare encoder gets mean pooling and L2
normalisation, the common choice. Inputs longer than the model's limit are refused, as
OpenAI's API does, rather than silently cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from maas.errors import UnsupportedArtifact
from maas.runtimes.base import LoadOptions, texts_of
from maas.runtimes.hf.contract import check_token_limit, embedding_signature
from maas.runtimes.hf.loading import EMBEDDINGS, read_json
from maas.runtimes.hf.runtime import TransformersRuntime

__all__ = ["POOLING_MODES", "EmbeddingRuntime", "Pooling"]


#: sentence-transformers' pooling flags, in the order it concatenates their vectors.
_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: Every pooling mode ``Pooling`` implements.
POOLING_MODES = tuple(_MODES.values())
#: modules.json entries maas runs: the encoder itself, pooling, L2 normalisation.
_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class Pooling:
    modes: tuple[str, ...] = ("mean",)
    normalize: bool = True
    max_tokens: int = 512

    @property
    def mode(self) -> str:
        return "+".join(self.modes)

    @classmethod
    def of(cls, model_dir: Path, model_limit: int) -> Pooling:
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            return cls(max_tokens=model_limit)
        modules = read_json_list(modules_file)
        kinds = [str(m.get("type", "")).rpartition(".")[2] for m in modules]
        unknown = sorted({kind for kind in kinds if kind not in _MODULES})
        if unknown:
            raise UnsupportedArtifact(
                f"modules.json has modules maas does not implement: {', '.join(unknown)}; "
                f"maas serves sentence-transformers models made of {', '.join(_MODULES)}"
            )
        modes: tuple[str, ...] = ("mean",)
        for module, kind in zip(modules, kinds, strict=True):
            if kind == "Pooling":
                path = model_dir / str(module.get("path", "")) / "config.json"
                modes = _pooling_modes(read_json(path))
        limit = model_limit
        bert_config = model_dir / "sentence_bert_config.json"
        if bert_config.is_file():
            limit = int(read_json(bert_config).get("max_seq_length", model_limit))
        return cls(modes, normalize="Normalize" in kinds, max_tokens=min(limit, model_limit))

    def pool(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One vector per row of ``hidden`` (batch, tokens, features), from the tokens
        ``attention_mask`` marks, normalised if the model says so; the same for a text
        alone or padded in a batch. In numpy, so that the transformers runtime and the
        ONNX export of the same model (``onnx_text``) pool with one piece of code."""
        mask = attention_mask[:, :, None].astype(hidden.dtype)
        counts = np.clip(mask.sum(axis=1), 1e-9, None)
        vectors = []
        for mode in self.modes:
            if mode == "cls":
                vectors.append(hidden[:, 0])
            elif mode == "max":
                vectors.append(np.where(mask > 0, hidden, -1e9).max(axis=1))
            elif mode in ("mean", "mean_sqrt_len"):
                total = (hidden * mask).sum(axis=1)
                vectors.append(total / (counts if mode == "mean" else np.sqrt(counts)))
            elif mode == "weightedmean":
                # Weights 1, 2, … by position among the real tokens: what
                # sentence-transformers gives with right padding, under left padding too.
                positions = np.cumsum(attention_mask, axis=1)[:, :, None].astype(hidden.dtype)
                weights = positions * mask
                total = (hidden * weights).sum(axis=1)
                vectors.append(total / np.clip(weights.sum(axis=1), 1e-9, None))
            else:
                assert mode == "lasttoken"
                # The last marked token, whichever side the tokenizer pads.
                length = attention_mask.shape[1]
                last = length - 1 - np.argmax(attention_mask[:, ::-1], axis=1)
                vectors.append(hidden[np.arange(hidden.shape[0]), last])
        pooled = vectors[0] if len(vectors) == 1 else np.concatenate(vectors, axis=1)
        if self.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled = pooled / np.clip(norms, 1e-12, None)
        return np.ascontiguousarray(pooled, dtype=np.float32)


def _pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The modes a sentence-transformers pooling config turns on; an unknown mode that
    is on, or none at all, refuses the model."""
    unknown = sorted(
        key for key, value in config.items()
        if value and key.startswith("pooling_mode_") and key not in _MODES
    )  # fmt: skip
    if unknown:
        raise UnsupportedArtifact(
            f"the pooling config sets {', '.join(unknown)}, which maas does not implement"
        )
    modes = tuple(mode for key, mode in _MODES.items() if config.get(key))
    if not modes:
        raise UnsupportedArtifact("the pooling config turns on no pooling mode")
    return modes


def read_json_list(path: Path) -> list[dict[str, Any]]:
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


class EmbeddingRuntime(TransformersRuntime):
    task = EMBEDDINGS

    def __init__(self, model: Any, tokenizer: Any, model_dir: Path, pooling: Pooling) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.model_dir = model_dir
        self.pooling = pooling
        self.dimensions = int(model.config.hidden_size) * len(pooling.modes)
        self.signature = embedding_signature(self.dimensions)

    @classmethod
    def _load_dir(cls, model_dir: Path, options: LoadOptions) -> Self:
        model, tokenizer = cls._pretrained(model_dir, "AutoModel", options)
        limit = int(getattr(model.config, "max_position_embeddings", 512))
        return cls(model, tokenizer, model_dir, Pooling.of(model_dir, limit))

    @property
    def details(self) -> dict[str, Any]:
        return {
            "dimensions": self.dimensions,
            "pooling": self.pooling.mode,
            "normalize": self.pooling.normalize,
            "max_tokens": self.pooling.max_tokens,
        }

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        import torch

        texts = texts_of(inputs["text"])
        if not texts:
            return {
                "embedding": np.zeros((0, self.dimensions), dtype=np.float32),
                "token_count": np.zeros(0, dtype=np.int64),
            }
        batch = self._tokenizer(texts, padding=True, truncation=False, return_tensors="pt")
        counts = batch["attention_mask"].sum(dim=1)
        check_token_limit(int(counts.max()), self.pooling.max_tokens)
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        pooled = self.pooling.pool(hidden.float().numpy(), batch["attention_mask"].numpy())
        result = {
            "embedding": pooled,
            "token_count": counts.numpy().astype(np.int64),
        }
        return {name: result[name] for name in outputs}
