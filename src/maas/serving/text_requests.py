"""A text-generation request as data, and the engines that start one.

The OpenAI service hands serving a whole request (the conversation or the prompts, the
sampling parameters, ``n``, the output format) rather than token ids and grammar
states, because where it runs decides where those are made: a model in this process
encodes and compiles its grammar here (``LocalEngine``); a model on a Ray cluster does
both on its replica (``maas.serving.ray_generation``), where the tokenizer and the
sampler live, and only the request and the text pieces cross the network. Either way
the prompt is checked against the context before anything is queued, so a request
that cannot fit is a 400 before its answer begins, and the prompt's token count comes
back with the streams for metering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from maas.errors import InvalidRequest
from maas.runtimes.generation import (
    ChatMessage,
    ConstrainedGenerator,
    OutputFormat,
    TextGenerator,
    TokenConstraint,
)
from maas.serving.generation import Completion, GenerationScheduler, TextStream
from maas.serving.sampling import SamplingParams

__all__ = ["LocalEngine", "StartedGeneration", "TextEngine", "TextRequest", "start_request"]


@dataclass(frozen=True)
class TextRequest:
    """What to generate: a chat (``messages``) or completions of ``prompts``; ``n``
    choices of each; ``output``: the grammar every choice is held to."""

    params: SamplingParams
    n: int = 1
    messages: tuple[ChatMessage, ...] | None = None
    prompts: tuple[str, ...] = ()
    output: OutputFormat | None = None


@dataclass
class StartedGeneration:
    #: One per choice: ``n`` per prompt, prompt by prompt (OpenAI's choice order).
    streams: list[TextStream]
    #: Counted once per prompt, however many choices it has, as OpenAI counts them.
    prompt_tokens: int


class TextEngine(Protocol):
    """A deployed language model as the services see it, wherever it runs."""

    #: Whether it can hold its output to a grammar (structured output, tools).
    @property
    def constrains(self) -> bool: ...

    async def generate(self, request: TextRequest) -> StartedGeneration:
        """Check and queue every sequence of ``request``; raises (``InvalidRequest``,
        ``ContextLengthExceeded``, ``GenerationQueueFull``) before any is queued."""
        ...

    async def complete_texts(self, texts: Sequence[str], max_tokens: int) -> list[Completion]:
        """Greedy completions of plain prompts (V2 infer)."""
        ...

    async def warm(self) -> None:
        """One token through every copy of the model: lazy set-up happens now."""
        ...

    async def close(self) -> None:
        """Finish what runs (for a while), refuse the rest, stop."""
        ...


async def start_request(scheduler: GenerationScheduler, request: TextRequest) -> StartedGeneration:
    """Encode ``request`` (off the event loop), check every prompt, then queue ``n``
    streams per prompt; a refused request leaves nothing running. Choice ``i`` of a
    seeded request uses ``seed + i``: choices differ, and each is repeatable."""
    generator = scheduler.generator
    params = request.params

    def prepare() -> tuple[list[list[int]], list[TokenConstraint] | None]:
        if request.messages is not None:
            prompts = [generator.encode_chat(request.messages)]
        else:
            prompts = [generator.encode_text(text) for text in request.prompts]
        if request.output is None:
            return prompts, None
        if not isinstance(generator, ConstrainedGenerator):
            raise InvalidRequest(
                "this model cannot hold its output to a grammar",
                details={"param": "response_format"},
            )
        output = request.output
        return prompts, [generator.constraint(output) for _ in range(len(prompts) * request.n)]

    prompts, constraints = await asyncio.to_thread(prepare)
    for prompt in prompts:
        scheduler.check_prompt(prompt, params.max_tokens)
    streams: list[TextStream] = []
    try:
        for prompt in prompts:
            for choice in range(request.n):
                seed = None if params.seed is None else params.seed + choice
                constraint = constraints[len(streams)] if constraints else None
                streams.append(scheduler.submit(prompt, replace(params, seed=seed), constraint))
    except BaseException:
        for stream in streams:
            stream.cancel()
        raise
    return StartedGeneration(streams, sum(len(p) for p in prompts))


class LocalEngine:
    """A language model in this process: its scheduler, started and stopped with it."""

    def __init__(self, scheduler: GenerationScheduler) -> None:
        self.scheduler = scheduler

    @property
    def constrains(self) -> bool:
        return constrains(self.scheduler.generator)

    async def generate(self, request: TextRequest) -> StartedGeneration:
        return await start_request(self.scheduler, request)

    async def complete_texts(self, texts: Sequence[str], max_tokens: int) -> list[Completion]:
        return await self.scheduler.complete_texts(texts, max_tokens)

    async def warm(self) -> None:
        await self.scheduler.complete_texts(["Hello"], max_tokens=1)

    async def close(self) -> None:
        await self.scheduler.close()


def constrains(generator: TextGenerator | type) -> bool:
    """Whether a generator (or a runtime class) can hold its output to a grammar."""
    if isinstance(generator, type):
        return issubclass(generator, ConstrainedGenerator)
    return isinstance(generator, ConstrainedGenerator)
