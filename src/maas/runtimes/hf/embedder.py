"""``EmbeddingRuntime``: sentence embeddings, pooled and normalised as the model says.

A sentence-transformers directory says how in its own files: ``1_Pooling/config.json``
(mean, CLS or max pooling), a ``Normalize`` module in ``modules.json``, and the longest
input in ``sentence_bert_config.json``. A bare encoder gets mean pooling and L2
normalisation, the common choice. Inputs longer than the model's limit are refused, as
OpenAI's API does, rather than silently cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from maas.errors import ContextLengthExceeded
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import LoadOptions, texts_of
from maas.runtimes.hf.loading import EMBEDDINGS, read_json
from maas.runtimes.hf.runtime import TransformersRuntime

__all__ = ["EmbeddingRuntime", "Pooling"]


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"  # mean | cls | max
    normalize: bool = True
    max_tokens: int = 512

    @classmethod
    def of(cls, model_dir: Path, model_limit: int) -> Pooling:
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            return cls(max_tokens=model_limit)
        modules = read_json_list(modules_file)
        normalize = any("Normalize" in str(m.get("type", "")) for m in modules)
        mode = "mean"
        for module in modules:
            if "Pooling" in str(module.get("type", "")):
                config = read_json(model_dir / str(module.get("path", "")) / "config.json")
                if config.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif config.get("pooling_mode_max_tokens"):
                    mode = "max"
        limit = model_limit
        bert_config = model_dir / "sentence_bert_config.json"
        if bert_config.is_file():
            limit = int(read_json(bert_config).get("max_seq_length", model_limit))
        return cls(mode=mode, normalize=normalize, max_tokens=min(limit, model_limit))


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
        self.dimensions = int(model.config.hidden_size)
        self.signature = Signature(
            inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
            outputs=[
                TensorSpec(name="embedding", datatype="FP32", shape=[-1, self.dimensions]),
                TensorSpec(name="token_count", datatype="INT64", shape=[-1]),
            ],
        )

    @classmethod
    def _load_dir(cls, model_dir: Path, options: LoadOptions) -> Self:
        model, tokenizer = cls._pretrained(model_dir, "AutoModel")
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
        longest = int(counts.max())
        if longest > self.pooling.max_tokens:
            raise ContextLengthExceeded(
                f"an input has {longest} tokens; this model takes at most "
                f"{self.pooling.max_tokens}",
                details={"tokens": longest, "max_tokens": self.pooling.max_tokens},
            )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling.mode == "cls":
            pooled = hidden[:, 0]
        elif self.pooling.mode == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        if self.pooling.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        result = {
            "embedding": pooled.float().numpy(),
            "token_count": counts.numpy().astype(np.int64),
        }
        return {name: result[name] for name in outputs}
