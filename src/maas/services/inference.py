"""``InferenceService``: one inference call, whatever transport carried it.

A transport (V2 REST, the OpenAI routes, V2 gRPC, the console, a Ray gateway) decodes
its request into a principal, a model reference and inputs, and encodes what comes
back; everything between is here, once: the access check, admission (rate limits and
budgets), the call itself within the caller's timeout, the usage record, the request
metrics and the labels an error is counted under. Nothing here knows about HTTP: the
caller's hang-up is an awaitable it passes in, and rate-limit headers come back as a
plain mapping each transport puts where its protocol carries metadata.

Errors are ``MaasError`` values; each transport renders them its own way (an HTTP
status, an OpenAI error body, a gRPC status code) with the same stable code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from maas.auth.admission import Admission, Ticket
from maas.auth.principal import Action, Principal, authorize
from maas.errors import InvalidName, InvalidRequest, MaasError, ModelNotFound, NotFound
from maas.observability.metrics import UNRESOLVED, RequestMetrics
from maas.protocols.audio import SpeechRequest, TranscriptionOptions
from maas.protocols.management import VersionInfo
from maas.protocols.v2 import model_metadata
from maas.registry.refs import ModelRef, parse_ref
from maas.registry.service import RegistryService
from maas.runtimes.catalog import v2_platform
from maas.services.audio import AudioService, Spoken, Transcribed
from maas.services.completions import Embeddings, Generation, TextService
from maas.services.rerank import Ranked, RerankService
from maas.serving.generation import Completion, TextDelta
from maas.serving.hangups import Disconnected
from maas.serving.manager import ModelManager, Selector

__all__ = [
    "CLIENT_CLOSED",
    "Decode",
    "Embedded",
    "GenerationCall",
    "InferenceService",
    "Predicted",
    "Served",
    "TensorCall",
    "merged",
]

#: The status a call is recorded with when its caller went away (nginx's convention).
CLIENT_CLOSED = 499
#: Version numbers are 32-bit in the registry's tables: a larger one names no version
#: (and must not reach the database, which would fail on it).
_MAX_VERSION = 2**31 - 1


@dataclass(frozen=True, slots=True)
class TensorCall:
    """A decoded tensor request: its inputs, the outputs asked for (None: all), the
    caller's timeout (None: the server's default) and, for a language model, the most
    tokens to generate for each text (None: the server's default)."""

    inputs: Mapping[str, np.ndarray]
    outputs: Sequence[str] | None = None
    timeout_s: float | None = None
    max_tokens: int | None = None


#: A transport's decoder of its request, run once the call is admitted: a refused call
#: costs no decoding, and a body that does not decode is metered like any failure.
Decode = Callable[[], Awaitable[TensorCall]]


@dataclass(frozen=True, slots=True)
class Predicted:
    """A tensor call's answer: the version that served it, its outputs, and the
    rate-limit headers of the caller's key (empty for a key without limits)."""

    version: VersionInfo
    outputs: dict[str, np.ndarray]
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Embedded:
    version: VersionInfo
    vectors: np.ndarray
    prompt_tokens: int
    headers: Mapping[str, str]


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Served(Generic[T]):
    """A metered call's answer: the service's result and the rate-limit headers of the
    caller's key (empty for a key without limits)."""

    result: T
    headers: Mapping[str, str]


#: One call of a service once admitted: its result, the version that served it, and
#: the usage units it is metered in.
Work = Callable[[], Awaitable[tuple[T, VersionInfo, Mapping[str, float]]]]


class InferenceService:
    """Admission, the call, metering, metrics and error labels for every transport.

    ``protocol`` names the series of ``maas_requests_total`` a call is counted in
    (``v2``, ``openai``, ``grpc``); each transport passes its own.
    """

    def __init__(
        self,
        models: ModelManager,
        registry: RegistryService,
        admission: Admission,
        text: TextService,
        audio: AudioService | None = None,
        ranking: RerankService | None = None,
    ) -> None:
        self.models = models
        self.registry = registry
        self.admission = admission
        self.text = text
        self.audio = audio or AudioService(models)
        self.ranking = ranking or RerankService(text)
        self._metrics: dict[str, RequestMetrics] = {}

    def metrics(self, protocol: str) -> RequestMetrics:
        found = self._metrics.get(protocol)
        if found is None:
            found = self._metrics[protocol] = RequestMetrics(protocol)
        return found

    # -- tensors (V2 REST and gRPC) ----------------------------------------------------

    async def predict(
        self,
        principal: Principal,
        model: str,
        selector: Selector,
        call: TensorCall | Decode,
        *,
        protocol: str = "v2",
        endpoint: str = "v2.infer",
        disconnected: Disconnected | None = None,
    ) -> Predicted:
        """Run ``call`` (decoded, or decoded once admitted) on ``model:selector`` for
        ``principal``: counted in the request metrics and recorded in the usage ledger
        however it ends.

        Labels come from the registry: the served version on success; on an error, the
        version the reference resolves to (a cache hit), or ``UNRESOLVED`` when the
        model does not exist or the call was refused before it resolved.
        """
        started = time.perf_counter()
        metrics = self.metrics(protocol)
        try:
            authorize(principal, Action.INFER, model)
            ticket = await self.admission.admit(principal, model, endpoint)
            with ticket:  # meters the call, failures included
                if not isinstance(call, TensorCall):
                    call = await call()
                version, result = await self.models.predict(
                    model,
                    selector,
                    call.inputs,
                    call.outputs,
                    timeout_s=call.timeout_s,
                    disconnected=disconnected,
                    max_tokens=call.max_tokens,
                )
                elapsed = time.perf_counter() - started
                ticket.version = version.version
                ticket.finish(200, {"rows": rows_of(call.inputs)}, elapsed)
        except MaasError as exc:
            labels = await self._labels_after_error(model, selector, exc)
            metrics.observe(*labels, int(exc.status), time.perf_counter() - started)
            raise
        except BaseException as exc:
            code = CLIENT_CLOSED if isinstance(exc, asyncio.CancelledError) else 500
            metrics.observe(*UNRESOLVED, code, time.perf_counter() - started)
            raise
        metrics.observe(model, str(version.version), 200, time.perf_counter() - started)
        return Predicted(version, result, ticket.headers)

    async def _labels_after_error(
        self, model: str, selector: Selector, exc: MaasError
    ) -> tuple[str, str]:
        if isinstance(exc, NotFound | InvalidName) or exc.status in (401, 403):
            return UNRESOLVED
        try:
            info = await self.models.resolve(model, selector)
        except MaasError:
            return UNRESOLVED
        return info.model, str(info.version)

    async def metadata(
        self, principal: Principal, model: str, selector: Selector
    ) -> dict[str, Any]:
        """The V2 model metadata of ``model:selector``: its versions (only the one asked
        for when a selector was given), its platform and its tensors."""
        authorize(principal, Action.READ, model)
        info = await self.models.resolve(model, selector)
        versions = await asyncio.to_thread(self.registry.list_versions, model)
        body = model_metadata(
            model, [str(v.version) for v in versions], v2_platform(info.framework), info.signature
        )
        if selector is not None:
            body["versions"] = [str(info.version)]
        return body

    async def model_ready(
        self, principal: Principal, model: str, selector: Selector
    ) -> tuple[VersionInfo, bool]:
        """The version ``model:selector`` names and whether it serves now (not while
        the server drains: new inference would get 503)."""
        authorize(principal, Action.READ, model)
        info = await self.models.resolve(model, selector)
        deployment = self.models.find(info.model, info.version)
        draining = self.models.is_shutting_down
        return info, not draining and deployment is not None and deployment.is_ready

    def server_ready(self) -> bool:
        return self.models.is_ready()

    # -- text (the OpenAI routes) ------------------------------------------------------

    def text_ref(self, principal: Principal, model: str, action: Action) -> ModelRef:
        """``model`` (an OpenAI model id: ``name``, ``name:3``, ``name:alias``) parsed,
        once ``principal`` may ``action`` on it. The access check comes first, so a
        hidden model answers exactly as a missing one, whatever its selector."""
        ref = parse_ref(model)
        authorize(principal, action, ref.name)
        if isinstance(ref.selector, int) and ref.selector > _MAX_VERSION:
            raise ModelNotFound(f"model {ref.name!r} has no version {ref.selector}")
        return ref

    async def generate(
        self,
        principal: Principal,
        model: str,
        endpoint: str,
        start: Callable[[], Awaitable[Generation]],
        *,
        protocol: str = "openai",
    ) -> GenerationCall:
        """Admit a generation for ``principal`` on ``model`` and ``start`` it; the
        returned call meters it (tokens included) once it is finished."""
        started = time.perf_counter()
        metrics = self.metrics(protocol)
        try:
            ref = self.text_ref(principal, model, Action.INFER)
            ticket = await self.admission.admit(principal, ref.name, endpoint)
        except MaasError as exc:
            metrics.observe(*UNRESOLVED, int(exc.status), time.perf_counter() - started)
            raise
        call = GenerationCall(self, ticket, ref.name, metrics, started)
        try:
            call.generation = await start()
        except MaasError as exc:
            call.finish(exc.status)
            raise
        except asyncio.CancelledError:
            call.finish(CLIENT_CLOSED)
            raise
        ticket.version = call.generation.version.version
        return call

    async def _metered(
        self, principal: Principal, model: str, endpoint: str, work: Work[T], protocol: str
    ) -> Served[T]:
        """``work`` on ``model`` for ``principal``: access checked, admitted, metered in
        the units it reports, and counted in the request metrics however it ends."""
        started = time.perf_counter()
        metrics = self.metrics(protocol)
        labels = UNRESOLVED
        try:
            ref = self.text_ref(principal, model, Action.INFER)
            ticket = await self.admission.admit(principal, ref.name, endpoint)
            with ticket:
                result, version, units = await work()
                labels = (ref.name, str(version.version))
                ticket.version = version.version
                ticket.finish(200, units, time.perf_counter() - started)
        except MaasError as exc:
            metrics.observe(*labels, int(exc.status), time.perf_counter() - started)
            raise
        except BaseException as exc:
            code = CLIENT_CLOSED if isinstance(exc, asyncio.CancelledError) else 500
            metrics.observe(*labels, code, time.perf_counter() - started)
            raise
        metrics.observe(*labels, 200, time.perf_counter() - started)
        return Served(result, ticket.headers)

    async def embed(
        self,
        principal: Principal,
        model: str,
        texts: Sequence[str],
        *,
        dimensions: int | None = None,
        endpoint: str = "openai.embeddings",
        protocol: str = "openai",
        timeout_s: float | None = None,
    ) -> Embedded:
        """Embed ``texts`` with ``model`` for ``principal``, cut to ``dimensions``
        (OpenAI's: the first components, renormalised)."""

        async def work() -> tuple[Embeddings, VersionInfo, Mapping[str, float]]:
            result = await self.text.embed(model, texts, timeout_s=timeout_s)
            vectors = truncate_dimensions(result.vectors, dimensions)
            cut = Embeddings(result.version, vectors, result.prompt_tokens)
            return cut, result.version, {"prompt_tokens": result.prompt_tokens}

        served = await self._metered(principal, model, endpoint, work, protocol)
        done = served.result
        return Embedded(done.version, done.vectors, done.prompt_tokens, served.headers)

    async def transcribe(
        self,
        principal: Principal,
        model: str,
        data: bytes,
        options: TranscriptionOptions,
        *,
        endpoint: str = "openai.transcriptions",
        protocol: str = "openai",
        timeout_s: float | None = None,
    ) -> Served[Transcribed]:
        """``data`` (an audio file) transcribed, or translated to English, metered in
        seconds of audio. The file is decoded once the call is admitted."""

        async def work() -> tuple[Transcribed, VersionInfo, Mapping[str, float]]:
            done = await self.audio.transcribe(model, data, options, timeout_s=timeout_s)
            return done, done.version, {"audio_s": done.audio_s}

        return await self._metered(principal, model, endpoint, work, protocol)

    async def speak(
        self,
        principal: Principal,
        request: SpeechRequest,
        *,
        endpoint: str = "openai.speech",
        protocol: str = "openai",
        timeout_s: float | None = None,
    ) -> Served[Spoken]:
        """``request.input`` spoken by ``request.model``, metered in characters."""

        async def work() -> tuple[Spoken, VersionInfo, Mapping[str, float]]:
            done = await self.audio.speak(request, timeout_s=timeout_s)
            return done, done.version, {"characters": done.characters}

        return await self._metered(principal, request.model, endpoint, work, protocol)

    async def rerank(
        self,
        principal: Principal,
        model: str,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        endpoint: str = "rerank",
        protocol: str = "openai",
        timeout_s: float | None = None,
    ) -> Served[Ranked]:
        """``documents`` ranked by relevance to ``query``, metered in tokens."""

        async def work() -> tuple[Ranked, VersionInfo, Mapping[str, float]]:
            done = await self.ranking.rerank(
                model, query, documents, top_n=top_n, timeout_s=timeout_s
            )
            return done, done.version, {"prompt_tokens": done.tokens}

        return await self._metered(principal, model, endpoint, work, protocol)


class GenerationCall:
    """One admitted generation: its ticket, its metrics, and how it ended.

    A transport either ``collect``s every choice or iterates ``stream`` and renders
    the pieces; either way the call is metered exactly once, with its tokens.
    """

    def __init__(
        self,
        service: InferenceService,
        ticket: Ticket,
        model: str,
        metrics: RequestMetrics,
        started: float,
    ) -> None:
        self._service = service
        self._ticket = ticket
        self._metrics = metrics
        self._started = started
        self.model = model
        self.generation: Generation | None = None

    @property
    def version(self) -> str:
        return "" if self.generation is None else str(self.generation.version.version)

    @property
    def headers(self) -> dict[str, str]:
        """``X-Model-Version`` and the key's rate-limit headers."""
        return {"X-Model-Version": self.version, **self._ticket.headers}

    def finish(self, status: int) -> None:
        generation = self.generation
        units = None
        if generation is not None:
            units = {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
            }
        elapsed = time.perf_counter() - self._started
        if self._ticket.finish(status, units, elapsed):
            model, version = (self.model, self.version) if self.version else UNRESOLVED
            self._metrics.observe(model, version, status, elapsed)

    async def collect(
        self, *, timeout_s: float | None = None, disconnected: Disconnected | None = None
    ) -> list[Completion]:
        """Every choice, complete, within the caller's timeout."""
        generation = self.generation
        assert generation is not None
        try:
            work = asyncio.gather(*(s.collect() for s in generation.streams))
            completions = await self._service.models.bounded(
                work, timeout_s=timeout_s, disconnected=disconnected
            )
        except MaasError as exc:
            generation.cancel()
            self.finish(exc.status)
            raise
        except asyncio.CancelledError:
            generation.cancel()
            self.finish(CLIENT_CLOSED)
            raise
        self.finish(200)
        return list(completions)

    async def stream(self) -> AsyncGenerator[tuple[int, TextDelta]]:
        """The pieces of every choice as they come, tagged with the choice's index.

        An error raised to the consumer is metered with its status; a consumer that
        stops early (the client hung up) is metered as ``CLIENT_CLOSED``.
        """
        generation = self.generation
        assert generation is not None
        status = CLIENT_CLOSED
        try:
            async for item in merged(generation):
                yield item
            status = 200
        except MaasError as exc:
            status = int(exc.status)
            raise
        except Exception:
            status = 500
            raise
        finally:
            generation.cancel()
            self.finish(status)


async def merged(generation: Generation) -> AsyncIterator[tuple[int, TextDelta]]:
    """The pieces of every choice as they come, tagged with the choice's index."""
    if len(generation.streams) == 1:
        async for delta in generation.streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, TextDelta] | BaseException | None] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for delta in generation.streams[index]:
                await queue.put((index, delta))
        except BaseException as exc:
            await queue.put(exc)
            raise
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(i)) for i in range(len(generation.streams))]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def rows_of(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows of a batch: the first dimension of the first input (1 for a scalar)."""
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def truncate_dimensions(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """OpenAI's ``dimensions``: the first ``dimensions`` components, renormalised."""
    if dimensions is None:
        return vectors
    if dimensions > vectors.shape[1]:
        raise InvalidRequest(
            f"dimensions: this model gives {vectors.shape[1]} dimensions at most",
            details={"param": "dimensions"},
        )
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    result: np.ndarray = cut / np.where(norms == 0, 1, norms)
    return result
