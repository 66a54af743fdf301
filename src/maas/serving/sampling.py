"""Choosing the next token from logits: greedy, temperature, nucleus (top-p), seeded.

Framework-free (numpy), so the scheduler samples every sequence of a batch with its
own parameters and its own random generator: a ``seed`` makes a sequence repeatable
whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Sampler", "SamplingParams"]

_GREEDY_BELOW = 1e-5
_SEED_SPACE = 2**64


@dataclass(frozen=True, slots=True)
class SamplingParams:
    #: Completion tokens at most; ``None``: what the context leaves, up to the default.
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: Generate past end-of-sequence tokens (vLLM's extension; benchmarks use it).
    ignore_eos: bool = False


class Sampler:
    def __init__(self, params: SamplingParams) -> None:
        self._temperature = params.temperature
        self._top_p = params.top_p
        # numpy takes non-negative seeds only; OpenAI's are signed 64-bit, and choice
        # ``i`` of a request adds ``i`` to it: fold them into 0 .. 2**64 - 1.
        seed = None if params.seed is None else params.seed % _SEED_SPACE
        self._rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self._temperature < _GREEDY_BELOW:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self._temperature
        scaled -= scaled.max()
        probs = np.exp(scaled)
        probs /= probs.sum()
        if self._top_p < 1.0:
            order = np.argsort(probs)[::-1]
            cumulative = np.cumsum(probs[order])
            # Keep the smallest prefix whose mass reaches top_p (at least one token).
            cut = int(np.searchsorted(cumulative, self._top_p)) + 1
            keep = order[:cut]
            kept = probs[keep] / probs[keep].sum()
            return int(keep[self._rng.choice(len(keep), p=kept)])
        return int(self._rng.choice(len(probs), p=probs))
