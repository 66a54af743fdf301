"""``TextClassifierRuntime``: a sequence classifier; label names from its config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from maas.runtimes.base import LoadOptions, texts_of
from maas.runtimes.hf.contract import check_token_limit, classifier_signature
from maas.runtimes.hf.loading import TEXT_CLASSIFICATION
from maas.runtimes.hf.runtime import TransformersRuntime

__all__ = ["TextClassifierRuntime"]


class TextClassifierRuntime(TransformersRuntime):
    task = TEXT_CLASSIFICATION

    def __init__(self, model: Any, tokenizer: Any, model_dir: Path) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.model_dir = model_dir
        config = model.config
        count = int(config.num_labels)
        names = getattr(config, "id2label", None) or {}
        self.labels = [str(names.get(i, names.get(str(i), i))) for i in range(count)]
        self.max_tokens = int(getattr(config, "max_position_embeddings", 512))
        self.signature = classifier_signature(count)

    @classmethod
    def _load_dir(cls, model_dir: Path, options: LoadOptions) -> Self:
        model, tokenizer = cls._pretrained(model_dir, "AutoModelForSequenceClassification", options)
        return cls(model, tokenizer, model_dir)

    @property
    def details(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        import torch

        texts = texts_of(inputs["text"])
        if not texts:
            return {
                "label": np.zeros(0, dtype=object),
                "probabilities": np.zeros((0, len(self.labels)), dtype=np.float32),
            }
        batch = self._tokenizer(texts, padding=True, truncation=False, return_tensors="pt")
        check_token_limit(int(batch["attention_mask"].sum(dim=1).max()), self.max_tokens)
        with torch.inference_mode():
            logits = self._model(**batch).logits
        probabilities = torch.softmax(logits.float(), dim=-1).numpy()
        labels = np.array(
            [self.labels[i].encode() for i in probabilities.argmax(axis=1)], dtype=object
        )
        result = {"label": labels, "probabilities": probabilities}
        return {name: result[name] for name in outputs}
