"""``CausalLMRuntime``: a causal language model with its tokenizer and chat template.

Serving drives it through ``TextGenerator`` (``maas.runtimes.generation``): prompts
are encoded here, generation runs in a ``TorchDecodeBatch`` that the scheduler fills.
``predict`` (the V2 path without a scheduler, and the warm-up) generates greedily for
each text of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import LoadOptions, texts_of
from maas.runtimes.generation import ChatMessage, greedy_completion
from maas.runtimes.hf.kv_batch import TorchDecodeBatch
from maas.runtimes.hf.loading import TEXT_GENERATION, read_json
from maas.runtimes.hf.runtime import TransformersRuntime

__all__ = ["CausalLMRuntime"]

SIGNATURE = Signature(
    inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
    outputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
)
#: Tokens ``predict`` generates per text (the OpenAI routes take ``max_tokens``).
PREDICT_MAX_TOKENS = 64


class CausalLMRuntime(TransformersRuntime):
    generates: ClassVar[bool] = True
    task = TEXT_GENERATION

    def __init__(self, model: Any, tokenizer: Any, model_dir: Path) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.model_dir = model_dir
        self.signature = SIGNATURE
        config = model.config
        self.context_length = int(
            getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
        )
        self.stop_token_ids = frozenset(_stop_tokens(model, tokenizer))
        if not self.stop_token_ids:
            raise InvalidInput("the model names no end-of-sequence token")

    @classmethod
    def _load_dir(cls, model_dir: Path, options: LoadOptions) -> Self:
        model, tokenizer = cls._pretrained(model_dir, "AutoModelForCausalLM", options)
        return cls(model, tokenizer, model_dir)

    @property
    def details(self) -> dict[str, Any]:
        config = read_json(self.model_dir / "config.json")
        return {
            "architecture": (config.get("architectures") or ["?"])[0],
            "context_length": self.context_length,
            "chat_template": self._tokenizer.chat_template is not None,
        }

    # -- TextGenerator ---------------------------------------------------------------

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self._tokenizer.chat_template is None:  # plain "role: content" lines
            lines = [f"{m['role']}: {m['content']}" for m in conversation]
            return self.encode_text("\n".join([*lines, "assistant:"]))
        encoded = self._tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True
        )
        ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
        return [int(token) for token in ids]

    def encode_text(self, text: str) -> list[int]:
        ids = self._tokenizer(text, add_special_tokens=True)["input_ids"]
        return [int(token) for token in ids]

    def decode(self, tokens: Sequence[int]) -> str:
        text: str = self._tokenizer.decode(list(tokens), skip_special_tokens=True)
        return text

    def new_batch(self) -> TorchDecodeBatch:
        return TorchDecodeBatch(self._model)

    # -- V2 predict --------------------------------------------------------------------

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        texts = texts_of(inputs["text"])
        answers = [
            greedy_completion(self, self.encode_text(text), PREDICT_MAX_TOKENS) for text in texts
        ]
        return {"text": np.array([a.encode() for a in answers], dtype=object)}


def _stop_tokens(model: Any, tokenizer: Any) -> set[int]:
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return found
