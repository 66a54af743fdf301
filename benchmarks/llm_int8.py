"""Dynamic int8 linear layers (deployment ``quantize: int8``) against float32, on the
transformers runtime, in one process and one run.

    python benchmarks/llm_int8.py              # SmolLM2-135M-Instruct (the demo's GGUF)
    python benchmarks/llm_int8.py --tokens 64 --threads 1

The model is the demo's GGUF, dequantized by transformers to float32 (the runtime's
own loader), then the same weights with ``quantize_int8``. Quality, on a fixed set of
chat prompts:

- greedy agreement: the share of greedy answers identical to float32's, and the mean
  share of leading tokens they share;
- teacher-forced: along float32's greedy answers, how often int8's top token is
  float32's, and the mean KL divergence of int8's next-token distribution from
  float32's (nats).

Speed: greedy decode tokens/s of one sequence (the memory-bound case int8 is for) and
of 8 sequences in one batch, each with its ratio to float32 measured the same run, and
the resident size of the linear weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "What is the capital of Germany?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is two plus two?",
    "Give me a tip for learning to cook.",
    "Why is the sky blue?",
    "Translate 'good morning' into French.",
    "List three animals that live in the ocean.",
    "What does a thermometer measure?",
    "Suggest a name for a pet cat.",
    "How many days are in a week?",
    "Describe a sunset in one sentence.",
]


def _greedy(runtime: Any, prompt: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    batch = runtime.new_batch()
    logits = batch.join(0, prompt)
    tokens: list[int] = []
    rows: list[np.ndarray] = []
    while len(tokens) < steps:
        rows.append(np.array(logits, dtype=np.float64))
        token = int(np.argmax(logits))
        if token in runtime.stop_token_ids:
            break
        tokens.append(token)
        logits = batch.step({0: token})[0]
    batch.leave(0)
    return tokens, rows


def _forced(runtime: Any, prompt: list[int], tokens: list[int]) -> list[np.ndarray]:
    """int8's next-token logits along ``tokens`` (float32's answer)."""
    batch = runtime.new_batch()
    rows = [np.array(batch.join(0, prompt), dtype=np.float64)]
    for token in tokens[:-1]:
        rows.append(np.array(batch.step({0: token})[0], dtype=np.float64))
    batch.leave(0)
    return rows


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    p = np.exp(p_logits - p_logits.max())
    p /= p.sum()
    q = np.exp(q_logits - q_logits.max())
    q /= q.sum()
    return float(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30))))


def _speed(runtime: Any, prompts: list[list[int]], steps: int) -> float:
    """Decode tokens/s of ``prompts`` greedily in one batch (prompt time excluded)."""
    batch = runtime.new_batch()
    logits = batch.join_many(dict(enumerate(prompts)))
    last = {key: int(np.argmax(row)) for key, row in logits.items()}
    start = time.perf_counter()
    for _ in range(steps):
        out = batch.step(last)
        last = {key: int(np.argmax(row)) for key, row in out.items()}
    elapsed = time.perf_counter() - start
    for key in last:
        batch.leave(key)
    return steps * len(prompts) / elapsed


def _linear_bytes(model: Any) -> int:
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight):  # a dynamic quantized Linear: weight() is its int8 tensor
            packed = weight()
            total += packed.numel() * packed.element_size()
        elif type(module).__name__ == "Linear" and weight is not None:
            total += weight.numel() * weight.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="greedy tokens per prompt")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (median)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from tests.llm_models import smollm2_gguf

    from maas.runtimes.base import LoadOptions
    from maas.runtimes.hf.generator import CausalLMRuntime

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(os.environ.get("MAAS_CACHE_DIR", Path.home() / ".cache" / "maas-bench"))
    gguf = smollm2_gguf("transformers")
    f32 = CausalLMRuntime.load(gguf, options=LoadOptions(cache_dir=cache))
    int8 = CausalLMRuntime.load(gguf, options=LoadOptions(cache_dir=cache, quantize="int8"))
    print(f"model {gguf.name}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    same_answers, shared_prefix, top1, kls = 0, [], [], []
    for text in PROMPTS:
        prompt = f32.encode_chat([{"role": "user", "content": text}])
        ref_tokens, ref_rows = _greedy(f32, prompt, args.tokens)
        got_tokens, _ = _greedy(int8, prompt, args.tokens)
        same_answers += ref_tokens == got_tokens
        common = next(
            (i for i, (a, b) in enumerate(zip(ref_tokens, got_tokens, strict=False)) if a != b),
            min(len(ref_tokens), len(got_tokens)),
        )
        shared_prefix.append(common / max(1, len(ref_tokens)))
        for ref, row in zip(ref_rows, _forced(int8, prompt, ref_tokens), strict=False):
            top1.append(int(np.argmax(ref)) == int(np.argmax(row)))
            kls.append(_kl(ref, row))
    print(f"\nquality on {len(PROMPTS)} chat prompts, {args.tokens} greedy tokens each:")
    print(f"  identical greedy answers       {same_answers}/{len(PROMPTS)}")
    print(f"  shared leading tokens (mean)   {statistics.mean(shared_prefix):.0%}")
    print(f"  teacher-forced top-1 agreement {statistics.mean(top1):.1%} of {len(top1)} steps")
    print(f"  mean KL(f32 || int8)           {statistics.mean(kls):.4f} nats")

    prompts = [f32.encode_chat([{"role": "user", "content": t}]) for t in PROMPTS]
    print("\ndecode speed (median of rounds, tokens/s):")
    for width in (1, 8):
        rates: dict[str, list[float]] = {"float32": [], "int8": []}
        for _ in range(args.rounds):  # alternate: a busy machine hurts both alike
            rates["float32"].append(_speed(f32, prompts[:width], args.tokens))
            rates["int8"].append(_speed(int8, prompts[:width], args.tokens))
        base, fast = statistics.median(rates["float32"]), statistics.median(rates["int8"])
        print(f"  {width} sequence(s): float32 {base:7.1f}  int8 {fast:7.1f}  ({fast / base:.2f}x)")
    a, b = _linear_bytes(f32._model), _linear_bytes(int8._model)
    print(f"\nlinear weights: float32 {a / 2**20:.0f} MiB, int8 {b / 2**20:.0f} MiB ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
