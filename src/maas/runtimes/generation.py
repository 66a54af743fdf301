"""The contract between a text-generation runtime and the serving scheduler.

Serving owns the schedule (who joins, who leaves, sampling, stop conditions, streaming)
and knows nothing of tensors or caches; a runtime owns the model and the per-sequence
KV caches and knows nothing of requests. ``DecodeBatch`` is the seam: sequences join it
with their prompt (a prefill), every ``step`` advances all of them by one token in one
forward pass, and finished ones leave at a token boundary, so concurrent requests share
forward passes (continuous batching).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["ChatMessage", "DecodeBatch", "TextGenerator"]

#: One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``.
ChatMessage = Mapping[str, str]


class DecodeBatch(Protocol):
    """The running sequences of one generator and their KV caches."""

    def join(self, key: int, prompt: Sequence[int]) -> np.ndarray:
        """Prefill ``prompt`` as sequence ``key``; return the logits of its next token."""
        ...

    def join_many(self, prompts: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
        """Prefill several sequences at once (one forward pass); their next logits."""
        ...

    def step(self, tokens: Mapping[int, int]) -> dict[int, np.ndarray]:
        """Feed every running sequence its last token; return each one's next logits."""
        ...

    def leave(self, key: int) -> None:
        """Drop sequence ``key`` and free its cache."""
        ...

    def __len__(self) -> int: ...


@runtime_checkable
class TextGenerator(Protocol):
    """A runtime that generates text token by token (a causal language model)."""

    #: Longest prompt plus completion the model can attend to, in tokens.
    context_length: int
    #: Tokens that end a sequence (end of sequence, end of turn).
    stop_token_ids: frozenset[int]

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt tokens of a conversation, through the model's chat template."""
        ...

    def encode_text(self, text: str) -> list[int]:
        """The prompt tokens of a plain completion prompt."""
        ...

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of ``tokens``, special tokens left out."""
        ...

    def new_batch(self) -> DecodeBatch:
        """An empty batch; one scheduler holds one at a time."""
        ...
