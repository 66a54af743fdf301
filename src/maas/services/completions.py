"""``TextService``: what the OpenAI routes ask of serving, in serving's own terms.

It resolves a model reference (``smollm2``, ``smollm2:production``, ``smollm2:3``) to
a loaded deployment, checks that the model does the task asked of it, encodes prompts
(off the event loop), and starts one generation stream per choice, or runs an
embedding batch through the deployment's dynamic batcher. The router only parses,
authorises, and encodes the HTTP answer (JSON or SSE).

Structured output and tools need a runtime that can hold its output to a grammar
(``ConstrainedGenerator``: llama.cpp); on another the request is a 400 naming the
parameter, rather than an answer that may not parse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from maas.config import GenerationSettings
from maas.errors import InvalidRequest, ShuttingDown, UnsupportedTask
from maas.protocols.management import VersionInfo
from maas.protocols.openai import OutputRequest
from maas.registry.refs import parse_ref
from maas.runtimes.generation import (
    ChatMessage,
    ConstrainedGenerator,
    OutputFormat,
    TokenConstraint,
)
from maas.services.tools import ToolCallStream, tool_call_format, with_tools_prompt
from maas.serving.deployment import Deployment
from maas.serving.generation import GenerationScheduler, GenerationStream
from maas.serving.manager import ModelManager
from maas.serving.sampling import SamplingParams

__all__ = ["Embeddings", "Generation", "TextService"]


@dataclass
class Generation:
    version: VersionInfo
    #: One per choice: ``n`` per prompt, prompt by prompt (OpenAI's choice order).
    streams: list[GenerationStream]
    #: Counted once per prompt, however many choices it has, as OpenAI counts them.
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(stream.completion_tokens for stream in self.streams)

    def cancel(self) -> None:
        for stream in self.streams:
            stream.cancel()


@dataclass(frozen=True)
class Embeddings:
    version: VersionInfo
    vectors: np.ndarray
    prompt_tokens: int


class TextService:
    def __init__(self, models: ModelManager, generation: GenerationSettings | None = None) -> None:
        self._models = models
        settings = generation or GenerationSettings()
        #: The most sequences a scheduler ever holds, running and waiting together.
        self._capacity = settings.max_running + settings.max_waiting

    async def _deployment(self, model: str) -> Deployment:
        if self._models.is_shutting_down:
            raise ShuttingDown(retry_after=1.0)
        ref = parse_ref(model)
        return await self._models.get(ref.name, ref.selector)

    async def _scheduler(self, model: str) -> tuple[Deployment, GenerationScheduler]:
        deployment = await self._deployment(model)
        if deployment.generation is None:
            raise UnsupportedTask(
                f"model {model!r} does not generate text (its task is "
                f"{_task_of(deployment.version)})",
                details={"param": "model"},
            )
        return deployment, deployment.generation

    async def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        n: int,
        output: OutputRequest | None = None,
    ) -> Generation:
        """``n`` choices of an answer; ``output``: JSON (of a schema) or tool calls."""
        self._check_fits(1, n)
        deployment, scheduler = await self._scheduler(model)
        generator = scheduler.generator
        fmt: OutputFormat | None = None
        if output is not None:
            if not isinstance(generator, ConstrainedGenerator):
                param = "tools" if output.tools else "response_format"
                raise InvalidRequest(
                    f"{param}: model {model!r} runs on {deployment.version.framework}, which "
                    "cannot hold its output to a grammar; serve it as GGUF (llama.cpp) for "
                    "structured output and tools",
                    details={"param": param},
                )
            if output.tools:
                messages = with_tools_prompt(messages, output)
                fmt = tool_call_format(output)
            else:
                fmt = OutputFormat(output.json_schema or {})

        def prepare() -> tuple[list[int], list[TokenConstraint] | None]:
            prompt = generator.encode_chat(messages)
            if fmt is None:
                return prompt, None
            assert isinstance(generator, ConstrainedGenerator)
            return prompt, [generator.constraint(fmt) for _ in range(n)]

        prompt, constraints = await asyncio.to_thread(prepare)
        generation = self._start(deployment, scheduler, [prompt], n, params, constraints)
        if output is not None and output.tools:
            generation.streams = [ToolCallStream(stream) for stream in generation.streams]
        return generation

    async def complete(
        self, model: str, prompts: Sequence[str], params: SamplingParams, n: int
    ) -> Generation:
        self._check_fits(len(prompts), n)
        deployment, scheduler = await self._scheduler(model)
        encode = scheduler.generator.encode_text
        encoded = await asyncio.to_thread(lambda: [encode(text) for text in prompts])
        return self._start(deployment, scheduler, encoded, n, params)

    def _check_fits(self, prompts: int, n: int) -> None:
        """A request of more sequences than a scheduler can ever hold is a 400: a 429
        would tell the caller to retry what can never succeed."""
        if prompts * n <= self._capacity:
            return
        param = "n" if n > 1 else "prompt"
        raise InvalidRequest(
            f"{param}: this request needs {prompts * n} sequences ({prompts} prompt(s) "
            f"x n={n}); this server runs and queues at most {self._capacity} per model",
            details={"param": param, "sequences": prompts * n, "capacity": self._capacity},
        )

    @staticmethod
    def _start(
        deployment: Deployment,
        scheduler: GenerationScheduler,
        prompts: Sequence[list[int]],
        n: int,
        params: SamplingParams,
        constraints: Sequence[TokenConstraint] | None = None,
    ) -> Generation:
        """``n`` streams per prompt; every prompt is checked before any is queued, so a
        refused request leaves nothing running. Choice ``i`` of a seeded request uses
        ``seed + i``: choices differ, and each is repeatable. ``constraints``: one
        grammar state per stream, in stream order."""
        for prompt in prompts:
            scheduler.check_prompt(prompt, params.max_tokens)
        streams: list[GenerationStream] = []
        try:
            for prompt in prompts:
                for choice in range(n):
                    seed = None if params.seed is None else params.seed + choice
                    constraint = constraints[len(streams)] if constraints else None
                    streams.append(scheduler.submit(prompt, replace(params, seed=seed), constraint))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return Generation(deployment.version, streams, sum(len(p) for p in prompts))

    async def embed(
        self,
        model: str,
        texts: Sequence[str],
        *,
        timeout_s: float | None = None,
    ) -> Embeddings:
        ref = parse_ref(model)
        info = await self._models.resolve(ref.name, ref.selector)
        signature = info.signature
        if signature.output("embedding") is None or signature.input("text") is None:
            raise UnsupportedTask(
                f"model {model!r} does not embed text (its task is {_task_of(info)})",
                details={"param": "model"},
            )
        inputs: Mapping[str, np.ndarray] = {
            "text": np.array([text.encode() for text in texts], dtype=object)
        }
        version, outputs = await self._models.predict(
            ref.name, ref.selector, inputs, ["embedding", "token_count"], timeout_s=timeout_s
        )
        tokens = int(outputs["token_count"].sum())
        return Embeddings(version, outputs["embedding"], tokens)


def _task_of(version: VersionInfo) -> str:
    return str(version.metadata.get("task") or version.framework)
