"""The contract between a text-generation runtime and the serving scheduler.

Serving owns the schedule (who joins, who leaves, sampling, stop conditions, streaming)
and knows nothing of tensors or caches; a runtime owns the model and the per-sequence
KV caches and knows nothing of requests. ``DecodeBatch`` is the seam: sequences join it
with their prompt (a prefill), every ``step`` advances all of them by one token in one
forward pass, and finished ones leave at a token boundary, so concurrent requests share
forward passes (continuous batching).

A runtime whose engine can mix prompt tokens and decode tokens in one pass (llama.cpp)
offers a ``ChunkedBatch`` instead: a sequence ``begin``s with its prompt, which is then
evaluated a chunk per ``step`` beside the running sequences, so a long prompt never
stalls the streams already running. A runtime that can constrain its output to a
grammar (JSON, a JSON schema, a tool call) is a ``ConstrainedGenerator``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "ChatMessage",
    "ChunkedBatch",
    "ConstrainedGenerator",
    "DecodeBatch",
    "OutputFormat",
    "TextGenerator",
    "TokenConstraint",
    "greedy_completion",
]

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


@runtime_checkable
class ChunkedBatch(Protocol):
    """A batch that evaluates prompts in chunks inside the decode steps.

    ``step`` feeds each running sequence its last token and, in the same pass, as many
    pending prompt tokens as the pass has room for; it returns next-token logits for the
    running sequences and for every sequence whose prompt it finished. The logits are
    views valid until the next call on the batch.
    """

    #: Tokens of KV cache all sequences share (each sequence's prompt plus completion
    #: must fit in it together with the others').
    token_capacity: int

    def begin(self, key: int, prompt: Sequence[int]) -> None:
        """Start sequence ``key``; its prompt is evaluated by the next steps."""
        ...

    def step(self, tokens: Mapping[int, int]) -> dict[int, np.ndarray]: ...

    def leave(self, key: int) -> None: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What the output must be, as data a runtime compiles into a grammar.

    ``json_schema``: a JSON value valid against it (``{}``: any JSON object).
    ``allow_text``: or else free text that does not start with ``{`` (a tool call that
    the model may choose to make, OpenAI's ``tool_choice: auto``).
    """

    json_schema: Mapping[str, Any]
    allow_text: bool = False


class TokenConstraint(Protocol):
    """The state of one sequence's grammar: which tokens may come next."""

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next (cheap: one token is checked)."""
        ...

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token the grammar refuses at ``-inf``."""
        ...

    def accept(self, token: int) -> None:
        """Advance the grammar past ``token``."""
        ...


@runtime_checkable
class ConstrainedGenerator(Protocol):
    """A generator that can hold its output to a grammar."""

    def constraint(self, output: OutputFormat) -> TokenConstraint:
        """A fresh grammar state for one sequence; ``InvalidRequest`` for a schema it
        cannot compile."""
        ...


def greedy_completion(generator: TextGenerator, prompt: list[int], max_tokens: int) -> str:
    """Greedy decoding of one prompt in a batch of its own: V2 ``predict`` on a language
    model outside a scheduler (warm-ups, jobs)."""
    batch = generator.new_batch()
    generated: list[int] = []
    logits = batch.join(0, prompt)
    while len(generated) < max_tokens:
        token = int(np.argmax(logits))
        if token in generator.stop_token_ids:
            break
        generated.append(token)
        if len(prompt) + len(generated) >= generator.context_length:
            break
        logits = batch.step({0: token})[0]
    batch.leave(0)
    return generator.decode(generated)
