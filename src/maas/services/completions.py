"""``TextService``: what the OpenAI routes ask of serving, in serving's own terms.

It resolves a model reference (``smollm2``, ``smollm2:production``, ``smollm2:3``) to
a loaded deployment, checks that the model does the task asked of it, and hands the
request to the model's engine (``maas.serving.text_requests``: in this process or on a
replica of a Ray cluster), which encodes it and starts one stream per choice; or runs an
embedding batch through the deployment's dynamic batcher. The router only parses,
authorises, and encodes the HTTP answer (JSON or SSE).

Structured output and tools need a runtime that can hold its output to a grammar
(``ConstrainedGenerator``: llama.cpp); on another the request is a 400 naming the
parameter, rather than an answer that may not parse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from maas.config import GenerationSettings
from maas.errors import InvalidRequest, ShuttingDown, UnsupportedTask
from maas.protocols.management import VersionInfo
from maas.protocols.openai import OutputRequest
from maas.registry.refs import parse_ref
from maas.runtimes.generation import ChatMessage, OutputFormat
from maas.services.tools import ToolCallStream, tool_call_format, with_tools_prompt
from maas.serving.deployment import Deployment
from maas.serving.generation import TextStream
from maas.serving.manager import ModelManager
from maas.serving.sampling import SamplingParams
from maas.serving.text_requests import StartedGeneration, TextEngine, TextRequest

__all__ = ["Embeddings", "Generation", "TextService"]


@dataclass
class Generation:
    version: VersionInfo
    #: One per choice: ``n`` per prompt, prompt by prompt (OpenAI's choice order).
    streams: list[TextStream]
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

    async def _engine(self, model: str) -> tuple[Deployment, TextEngine]:
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
        deployment, engine = await self._engine(model)
        fmt: OutputFormat | None = None
        if output is not None:
            if not engine.constrains:
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
        request = TextRequest(params, n, messages=tuple(messages), output=fmt)
        generation = self._generation(deployment, await engine.generate(request))
        if output is not None and output.tools:
            generation.streams = [ToolCallStream(stream) for stream in generation.streams]
        return generation

    async def complete(
        self, model: str, prompts: Sequence[str], params: SamplingParams, n: int
    ) -> Generation:
        self._check_fits(len(prompts), n)
        deployment, engine = await self._engine(model)
        started = await engine.generate(TextRequest(params, n, prompts=tuple(prompts)))
        return self._generation(deployment, started)

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
    def _generation(deployment: Deployment, started: StartedGeneration) -> Generation:
        return Generation(deployment.version, started.streams, started.prompt_tokens)

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
