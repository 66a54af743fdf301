"""Continuous batching on the real SmolLM2 chat model: what callers see must not depend
on who shares their batch; bounds, stops, cancellation and context limits hold."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from tests.llm_models import smollm2_gguf

from maas.errors import ContextLengthExceeded, GenerationQueueFull, ShuttingDown
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import load_runtime
from maas.runtimes.generation import TextGenerator
from maas.serving.generation import GenerationScheduler
from maas.serving.sampling import Sampler, SamplingParams

pytestmark = pytest.mark.anyio

QUESTIONS = [
    "What is the capital of Germany?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is two plus two?",
]


@functools.cache
def _load(engine: str, role: str) -> TextGenerator:
    """One model per engine and role (``lm`` or ``reference``) for the whole run: under
    pytest-xdist a module-scoped fixture may be set up again (its worker's queue ran
    empty between two of its tests), and loading the GGUF into transformers costs 25 s
    alone, 100 s beside the rest of the suite under coverage."""
    cache = Path(os.environ["MAAS_CACHE_DIR"])
    module = {"llama.cpp": "llama_cpp", "transformers": "transformers"}[engine]
    options = LoadOptions(threads=1, cache_dir=cache, sequences=8, kv_cache_tokens=4096)
    runtime = load_runtime(engine, smollm2_gguf(module), options)
    assert isinstance(runtime, TextGenerator)
    return runtime


@pytest.fixture(scope="module", params=["llama.cpp", "transformers"])
def lm(request: pytest.FixtureRequest) -> TextGenerator:
    """Both engines of the GGUF model: the schedule must hold on either."""
    return _load(request.param, "lm")


@pytest.fixture(scope="module")
def reference(lm: TextGenerator) -> TextGenerator:
    """A second instance of ``lm``'s engine for the references decoded alone: a llama.cpp
    model's batches share its one context, which the scheduler's batch holds."""
    return _load(type(lm).framework, "reference")  # type: ignore[attr-defined]


@pytest.fixture
async def scheduler(lm: TextGenerator) -> AsyncIterator[GenerationScheduler]:
    scheduler = GenerationScheduler(lm, model="smollm2", max_running=8, max_waiting=8)
    scheduler.start()
    yield scheduler
    await scheduler.close()


def _chat(lm: TextGenerator, question: str) -> list[int]:
    return lm.encode_chat([{"role": "user", "content": question}])


def _alone(lm: TextGenerator, prompt: list[int], max_tokens: int) -> str:
    """Greedy decoding of one sequence with a batch of its own (of ``reference``, never
    of a model a scheduler is running)."""
    batch = lm.new_batch()
    logits, tokens = batch.join(0, prompt), []
    while len(tokens) < max_tokens:
        token = int(np.argmax(logits))
        if token in lm.stop_token_ids:
            break
        tokens.append(token)
        logits = batch.step({0: token})[0]
    return lm.decode(tokens)


GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


async def test_concurrent_sequences_get_what_each_would_get_alone(
    lm: TextGenerator, scheduler: GenerationScheduler, reference: TextGenerator
) -> None:
    prompts = [_chat(lm, q) for q in QUESTIONS]
    streams = [scheduler.submit(p, GREEDY) for p in prompts]
    done = await asyncio.gather(*(s.collect() for s in streams))
    assert "Berlin" in done[0].text
    for prompt, completion in zip(prompts, done, strict=True):
        assert completion.text == _alone(reference, prompt, 24)
        assert completion.prompt_tokens == len(prompt)
        assert completion.finish_reason in ("stop", "length")


async def test_a_sequence_joining_mid_batch_is_unaffected(
    lm: TextGenerator, scheduler: GenerationScheduler, reference: TextGenerator
) -> None:
    first = scheduler.submit(_chat(lm, QUESTIONS[2]), SamplingParams(40, temperature=0.0))
    pieces = first.__aiter__()
    await pieces.__anext__()  # the first sequence is running: the next one joins it
    late = await scheduler.submit(_chat(lm, QUESTIONS[0]), GREEDY).collect()
    rest = [delta.text async for delta in pieces]
    assert late.text == _alone(reference, _chat(lm, QUESTIONS[0]), 24)
    assert rest and first.finish_reason is not None


async def test_streamed_pieces_concatenate_to_the_text(
    lm: TextGenerator, scheduler: GenerationScheduler, reference: TextGenerator
) -> None:
    prompt = _chat(lm, QUESTIONS[2])
    pieces = [d.text async for d in scheduler.submit(prompt, GREEDY)]
    assert len(pieces) > 3
    assert "".join(pieces) == _alone(reference, prompt, 24)


async def test_max_tokens_ends_with_length(
    lm: TextGenerator, scheduler: GenerationScheduler
) -> None:
    stream = scheduler.submit(_chat(lm, QUESTIONS[2]), SamplingParams(3, temperature=0.0))
    done = await stream.collect()
    assert (done.finish_reason, done.completion_tokens) == ("length", 3)


async def test_a_stop_string_cuts_the_text_and_is_never_streamed(
    lm: TextGenerator, scheduler: GenerationScheduler, reference: TextGenerator
) -> None:
    prompt = _chat(lm, QUESTIONS[0])
    full = _alone(reference, prompt, 24)
    assert "Berlin" in full
    params = SamplingParams(24, temperature=0.0, stop=("Berlin",))
    pieces = [d.text async for d in scheduler.submit(prompt, params)]
    assert "".join(pieces) == full[: full.index("Berlin")]
    assert all("Par" not in piece for piece in pieces[-1:])


async def test_seeded_sampling_repeats_and_differs_by_seed(
    lm: TextGenerator, scheduler: GenerationScheduler
) -> None:
    prompt = _chat(lm, "Tell me a story about a dragon.")

    async def sample(seed: int) -> str:
        params = SamplingParams(16, temperature=1.2, top_p=0.95, seed=seed)
        return (await scheduler.submit(prompt, params).collect()).text

    first, again, other = await asyncio.gather(sample(1), sample(1), sample(2))
    assert first == again
    assert first != other


async def test_a_cancelled_sequence_frees_its_slot(
    lm: TextGenerator, scheduler: GenerationScheduler
) -> None:
    stream = scheduler.submit(_chat(lm, QUESTIONS[2]), SamplingParams(400, temperature=0.0))
    pieces = stream.__aiter__()
    await pieces.__anext__()
    assert scheduler.running == 1
    stream.cancel()
    for _ in range(200):  # a few decode steps at most
        if scheduler.running == 0:
            break
        await asyncio.sleep(0.02)
    assert scheduler.running == 0


async def test_a_full_queue_refuses_at_once(lm: TextGenerator) -> None:
    scheduler = GenerationScheduler(lm, model="smollm2", max_running=1, max_waiting=1)
    scheduler.start()
    try:
        prompt = _chat(lm, QUESTIONS[2])
        streams = [scheduler.submit(prompt, SamplingParams(200, temperature=0.0))]
        streams.append(scheduler.submit(prompt, SamplingParams(200, temperature=0.0)))
        await streams[0].__aiter__().__anext__()  # one running, one waiting
        with pytest.raises(GenerationQueueFull) as refused:
            scheduler.submit(prompt, GREEDY)
        assert refused.value.status == 429 and refused.value.retry_after
        for stream in streams:
            stream.cancel()
    finally:
        await scheduler.close()


async def test_a_cancelled_sequence_stops_counting_against_the_bound_at_once(
    lm: TextGenerator,
) -> None:
    scheduler = GenerationScheduler(lm, model="smollm2", max_running=1, max_waiting=0)
    scheduler.start()
    try:
        prompt = _chat(lm, QUESTIONS[2])
        first = scheduler.submit(prompt, SamplingParams(200, temperature=0.0))
        pieces = first.__aiter__()  # held: a discarded one would cancel the sequence
        await pieces.__anext__()
        with pytest.raises(GenerationQueueFull):
            scheduler.submit(prompt, GREEDY)
        first.cancel()  # no step has run since: the slot is still in the batch
        second = scheduler.submit(prompt, GREEDY)
        assert (await second.collect()).completion_tokens > 0
    finally:
        await scheduler.close()


async def test_a_prompt_past_the_context_is_refused_before_it_queues(lm: TextGenerator) -> None:
    scheduler = GenerationScheduler(lm, model="smollm2", max_running=1, max_waiting=0,
                                    max_context=64)  # fmt: skip
    prompt = _chat(lm, "word " * 80)
    with pytest.raises(ContextLengthExceeded):
        scheduler.submit(prompt, GREEDY)
    short = _chat(lm, "Hi")
    with pytest.raises(ContextLengthExceeded):
        scheduler.submit(short, SamplingParams(max_tokens=64 - len(short) + 1))
    assert scheduler.waiting == 0


def test_greedy_and_nucleus_sampling() -> None:
    logits = np.array([0.0, 5.0, 4.9, -3.0])
    assert Sampler(SamplingParams(1, temperature=0.0))(logits) == 1
    narrow = Sampler(SamplingParams(1, temperature=1.0, top_p=0.01, seed=3))
    assert {narrow(logits) for _ in range(50)} == {1}
    wide = Sampler(SamplingParams(1, temperature=1.0, seed=3))
    assert {wide(logits) for _ in range(200)} >= {1, 2}


async def test_closing_drains_running_sequences_and_refuses_new_ones(lm: TextGenerator) -> None:
    scheduler = GenerationScheduler(lm, model="smollm2", max_running=2, max_waiting=2)
    scheduler.start()
    params = SamplingParams(12, temperature=0.0, ignore_eos=True)
    streams = [scheduler.submit(_chat(lm, q), params) for q in QUESTIONS[:3]]
    pieces = streams[0].__aiter__()
    await pieces.__anext__()
    closing = asyncio.ensure_future(scheduler.close())
    await asyncio.sleep(0)
    with pytest.raises(ShuttingDown):
        scheduler.submit(_chat(lm, QUESTIONS[3]), params)
    done = await asyncio.gather(*(s.collect() for s in streams[1:]))
    rest = [d async for d in pieces]
    await closing
    assert [c.completion_tokens for c in done] == [12, 12]  # the waiting one ran too
    assert rest[-1].finish_reason == "length"
