"""The llama.cpp runtime on the real SmolLM2 GGUF file: one context, many sequences.

What a sequence gets must not depend on who shares its steps, on prompts evaluated in
chunks beside it, or on a prefix taken from the cache; grammars hold the output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from tests.llm_models import smollm2_gguf

from maas.errors import InvalidRequest
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime
from maas.runtimes.generation import ChunkedBatch, ConstrainedGenerator, OutputFormat
from maas.runtimes.llamacpp import runtime as llamacpp_runtime
from maas.runtimes.llamacpp.runtime import LlamaCppRuntime

SYSTEM = "You are a helpful assistant who answers in one short sentence. " * 3
QUESTIONS = ["What is the capital of Germany?", "Name three colours.", "What is two plus two?"]


@pytest.fixture(scope="module")
def lm() -> Iterator[LlamaCppRuntime]:
    runtime = load_runtime(
        "llama.cpp", smollm2_gguf(), LoadOptions(threads=1, sequences=4, kv_cache_tokens=8192)
    )
    assert isinstance(runtime, LlamaCppRuntime)
    yield runtime
    runtime.close()


def _chat(lm: LlamaCppRuntime, question: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    return lm.encode_chat([*messages, {"role": "user", "content": question}])


def _greedy(batch: ChunkedBatch, prompts: dict[int, list[int]], steps: int) -> dict[int, list[int]]:
    """Greedy tokens of every prompt, all running in ``batch`` together."""
    for key, prompt in prompts.items():
        batch.begin(key, prompt)
    out: dict[int, list[int]] = {key: [] for key in prompts}
    while any(len(tokens) < steps for tokens in out.values()):
        last = {key: tokens[-1] for key, tokens in out.items() if tokens}
        for key, logits in batch.step(last).items():
            out[key].append(int(np.argmax(logits)))
    for key in prompts:
        batch.leave(key)
    return out


def test_a_gguf_push_is_served_by_llama_cpp_on_its_quantized_weights() -> None:
    info = inspect_artifact(smollm2_gguf(), "smollm2.gguf", trust_pickle=False)
    assert (info.framework, info.task) == ("llama.cpp", "text-generation")
    assert info.details["format"] == "gguf" and info.details["chat_template"] is True
    assert info.details["architecture"] == "llama" and info.details["parameters"] > 1e8


def test_greedy_answer_and_tokens(lm: LlamaCppRuntime) -> None:
    assert isinstance(lm.new_batch(), ChunkedBatch) and isinstance(lm, ConstrainedGenerator)
    out = lm.predict({"text": np.array([b"The capital of France is"], dtype=object)})
    assert "Paris" in out["text"][0].decode()
    assert lm.decode(lm.encode_text("Hello world")) == "Hello world"
    assert lm.threads == 1  # as the fixture asks: the suite's CPUs are shared (conftest)
    assert lm.context_length == 2048 and lm.stop_token_ids


def test_sequences_sharing_steps_get_what_each_gets_alone(lm: LlamaCppRuntime) -> None:
    prompts = {i: _chat(lm, q) for i, q in enumerate(QUESTIONS)}
    alone = {key: _greedy(lm.new_batch(), {key: p}, 12)[key] for key, p in prompts.items()}
    together = _greedy(lm.new_batch(), prompts, 12)
    assert together == alone
    assert "Berlin" in lm.decode(together[0])


def test_a_long_prompt_is_evaluated_in_chunks_beside_a_running_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Steps of 64 tokens, not 512: the same chunking over a prompt an eighth as long
    # (evaluating 1,000 tokens twice on one thread took 18 s of a run).
    monkeypatch.setattr(llamacpp_runtime, "N_BATCH", 64)
    options = LoadOptions(threads=1, sequences=2, kv_cache_tokens=2048)
    lm = load_runtime("llama.cpp", smollm2_gguf(), options)
    assert isinstance(lm, LlamaCppRuntime)
    try:
        batch = lm.new_batch()
        short = _chat(lm, QUESTIONS[0])
        long = _chat(lm, "Summarise this: " + "the quick brown fox jumps over the lazy dog " * 16)
        assert len(long) > 2 * 64  # more than two passes
        batch.begin(0, short)
        first = batch.step({})
        token = int(np.argmax(first[0]))
        batch.begin(1, long)
        steps_with_output = 0
        while True:
            out = batch.step({0: token})
            assert 0 in out  # the running sequence advanced in every step
            token = int(np.argmax(out[0]))
            steps_with_output += 1
            if 1 in out:
                break
        assert steps_with_output >= 3  # the long prompt took several steps, not one stall
        reference = _greedy(lm.new_batch(), {1: long}, 1)[1]
        assert int(np.argmax(out[1])) == reference[0]
    finally:
        lm.close()


def test_a_shared_system_prompt_is_evaluated_once(lm: LlamaCppRuntime) -> None:
    batch = lm.new_batch()
    first, second = _chat(lm, QUESTIONS[0], SYSTEM), _chat(lm, QUESTIONS[1], SYSTEM)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > 30
    got_first = _greedy(batch, {0: first}, 8)[0]
    evaluated = batch.prompt_tokens_evaluated
    got_second = _greedy(batch, {1: second}, 8)[1]  # after the first left: its slot's cache
    assert batch.prompt_tokens_evaluated - evaluated == len(second) - shared
    assert batch.prompt_tokens_reused >= shared
    # Running at the same time, the second shares the first's cells.
    both = lm.new_batch()
    together = _greedy(both, {0: first, 1: second}, 8)
    assert together == {0: got_first, 1: got_second}
    fresh = lm.new_batch()
    assert _greedy(fresh, {1: second}, 8)[1] == got_second


def test_a_json_schema_grammar_holds_the_output(lm: LlamaCppRuntime) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    prompt = _chat(lm, "Give me a city and its population as JSON.")
    for seed in range(3):
        constraint = lm.constraint(OutputFormat(schema))
        rng = np.random.default_rng(seed)
        batch = lm.new_batch()
        batch.begin(0, prompt)
        logits, tokens = batch.step({})[0], []
        while len(tokens) < 60:
            probs = np.exp(logits - logits.max())
            token = int(rng.choice(len(probs), p=probs / probs.sum()))
            if not constraint.allows(token):
                masked = constraint.mask(logits)
                probs = np.exp(masked - masked.max())
                token = int(rng.choice(len(probs), p=probs / probs.sum()))
            constraint.accept(token)
            if token in lm.stop_token_ids:
                break
            tokens.append(token)
            logits = batch.step({0: token})[0]
        batch.leave(0)
        answer = json.loads(lm.decode(tokens))
        assert set(answer) == {"city", "population"} and isinstance(answer["population"], int)


def test_a_schema_that_cannot_be_a_grammar_is_refused(lm: LlamaCppRuntime) -> None:
    with pytest.raises(InvalidRequest) as refused:
        lm.constraint(OutputFormat({"$ref": "https://example.com/elsewhere.json"}))
    assert refused.value.details["param"] == "response_format"


def test_serving_a_gguf_imports_neither_torch_nor_transformers() -> None:
    """The small install (``.[onnx,gguf]``) serves chat: loading and running a GGUF model
    through the catalog and the scheduler's seam must not need torch."""
    script = f"""
import os, sys
from pathlib import Path
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime
path = Path({str(smollm2_gguf())!r})
assert inspect_artifact(path, path.name, trust_pickle=False).framework == "llama.cpp"
lm = load_runtime("llama.cpp", path, LoadOptions(kv_cache_tokens=512))
assert lm.threads == len(os.sched_getaffinity(0))  # unasked: one per CPU it may use
batch = lm.new_batch()
batch.join(0, lm.encode_chat([{{"role": "user", "content": "Hi"}}]))
import maas.serving.generation, maas.services.completions  # the serving path itself
print(sorted(m for m in ("torch", "transformers", "accelerate") if m in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_grammar_keeps_raw_control_characters_out_of_json_strings(
    lm: LlamaCppRuntime,
) -> None:
    """Strict JSON parsers refuse a raw newline inside a string (SmolLM2 wrote them in
    2 of 50 schema-held answers before this): inside a string the grammar allows an
    escaped ``\\n`` and never a raw one."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    constraint = lm.constraint(OutputFormat(schema))
    for token in lm._tokenize('{"city":"Li', add_special=False, parse_special=False):
        assert constraint.allows(token)
        constraint.accept(token)
    raw_newline = [t for t in range(lm.n_vocab) if lm.decode([t]) == "\n"]
    assert raw_newline and not any(constraint.allows(t) for t in raw_newline)
    escaped = lm._tokenize("\\n", add_special=False, parse_special=False)
    assert constraint.allows(escaped[0])


@pytest.mark.parametrize(
    ("bound", "refused", "allowed"), [("minimum", "-", "0"), ("exclusiveMinimum", "0", "7")]
)
def test_an_integer_held_to_a_lower_bound_never_starts_below_it(
    lm: LlamaCppRuntime, bound: str, refused: str, allowed: str
) -> None:
    """llama-cpp-python's converter ignores ``minimum``: SmolLM2 wrote a negative
    population into a schema-held answer that asked for none. A bound of 0 (or above 0)
    is held: no minus sign (no leading zero) where the number begins."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", bound: 0}}}
    constraint = lm.constraint(OutputFormat(schema))
    for token in lm._tokenize('{"n":', add_special=False, parse_special=False):
        assert constraint.allows(token)
        constraint.accept(token)
    first = {t for t in range(lm.n_vocab) if lm.decode([t]).startswith(refused)}
    assert first and not any(constraint.allows(t) for t in first)
    assert any(constraint.allows(t) for t in range(lm.n_vocab) if lm.decode([t]) == allowed)
