"""Choosing the next token from logits: greedy, temperature, nucleus (top-p), seeded,
optionally held to a grammar, with the log-probabilities OpenAI's ``logprobs`` reports.

Framework-free (numpy), so the scheduler samples every sequence of a batch with its
own parameters and its own random generator: a ``seed`` makes a sequence repeatable
whatever else shares its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maas.runtimes.generation import TokenConstraint

__all__ = ["Sampler", "SamplingParams", "log_probabilities"]

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
    #: Report each chosen token's log-probability, and this many alternatives with it.
    logprobs: bool = False
    top_logprobs: int = 0


class Sampler:
    """One sequence's sampler; with a ``constraint``, every token is one it allows.

    The grammar is asked only about the token sampled (cheap); only if it refuses that
    token are the logits masked and the token drawn again, as llama.cpp itself does.
    """

    def __init__(self, params: SamplingParams, constraint: TokenConstraint | None = None) -> None:
        self._temperature = params.temperature
        self._top_p = params.top_p
        self._constraint = constraint
        # numpy takes non-negative seeds only; OpenAI's are signed 64-bit, and choice
        # ``i`` of a request adds ``i`` to it: fold them into 0 .. 2**64 - 1.
        seed = None if params.seed is None else params.seed % _SEED_SPACE
        self._rng = np.random.default_rng(seed)
        #: The logits the last token was drawn from (masked, if the grammar masked them).
        self.last_logits: np.ndarray | None = None

    def __call__(self, logits: np.ndarray) -> int:
        token = self._draw(logits)
        constraint = self._constraint
        if constraint is not None:
            if not constraint.allows(token):
                logits = constraint.mask(logits)
                token = self._draw(logits)
            constraint.accept(token)
        self.last_logits = logits
        return token

    def _draw(self, logits: np.ndarray) -> int:
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


def log_probabilities(
    logits: np.ndarray, token: int, top: int
) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``token`` under ``logits`` (the model's distribution,
    before temperature, as OpenAI reports it), and the ``top`` likeliest tokens' own."""
    values = logits.astype(np.float64)
    peak = values.max()
    normaliser = peak + np.log(np.exp(values - peak).sum())
    chosen = float(values[token] - normaliser)
    if top <= 0:
        return chosen, []
    best = np.argpartition(-values, top - 1)[:top]
    best = best[np.argsort(-values[best])]
    return chosen, [(int(t), float(values[t] - normaliser)) for t in best]
