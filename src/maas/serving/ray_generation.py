"""Language models as Ray actors: each replica runs its own continuous batching.

A language model's replica (``LanguageReplica``) loads the runtime on its node and
runs a ``GenerationScheduler`` there, so the sequences sent to one replica share its
forward passes exactly as they do in one process. The gateway sends it a whole
``TextRequest`` (conversation or prompts, sampling, ``n``, output format): the replica
encodes it, compiles its grammar and checks it against the context, and answers with
the prompt's token count (or the error, a 400 or a 429 before any text) as the first
item of a Ray streaming generator; text pieces follow on the same generator.

Unlike the replicas of other models, which take their calls on a socket of their own
(``replica_socket``: a Ray task per small batch cost more than the model), a language
replica takes its requests as Ray calls: one request holds it for many steps, so the
hop is small beside it, and Ray's streaming generators already give the pieces their
backpressure.

Pieces are coalesced where they pile up: each item carries everything the request's
sequences produced since the previous item, merged per sequence, and the generator
runs at most ``_AHEAD`` items ahead of the gateway (Ray's backpressure), so a gateway
that falls behind receives fewer, larger items instead of one hop per token.

The gateway's side (``RayGeneration``) is a ``RayInstances`` whose actors are language
replicas: placement, resources, the health pings, restarts and replacement are its.
Each request goes to the live replica with the fewest open requests. A replica lost
before any piece of a request came (before it accepted it, or while the request
waited in its queue): the request goes once to another (nothing was generated).
Lost mid-answer: that answer ends with ``WorkerCrashed`` (half an answer sent again
would not be the same answer); Ray restarts the replica and the next requests go to
the live ones. A caller who hangs up cancels its sequences on the
replica, which frees their slots at the next step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from maas.config import GenerationSettings
from maas.errors import MaasError, RuntimeFailure, UnsupportedTask, WorkerCrashed
from maas.observability.metrics import TIME_TO_FIRST_TOKEN_SECONDS, TOKENS_GENERATED
from maas.runtimes.catalog import load_runtime
from maas.runtimes.generation import TextGenerator
from maas.serving.framed import error_payload, rebuild_error
from maas.serving.generation import Completion, GenerationScheduler, TextDelta, TextStream
from maas.serving.ray_instances import (
    RayCluster,
    RayInstances,
    ReplicaBody,
    ReplicaTarget,
    _Handle,
    replica_artifact,
)
from maas.serving.text_requests import StartedGeneration, TextRequest, start_request

__all__ = ["LanguageReplica", "RayGeneration", "RemoteStream"]

log = logging.getLogger("maas.serving")

T = TypeVar("T")

#: Items a replica's stream may run ahead of the gateway before it waits (and the
#: pieces made meanwhile travel together in the next item).
_AHEAD = 4
#: How long a replica being retired lets its sequences finish.
_DRAIN_S = 30.0
#: Request ids cancelled before their replica registered them (hung up while queued).
_EARLY_CANCELS = 1024

#: An error as it crosses: ``error_payload`` and the ``retry_after`` it drops.
_Error = tuple[tuple[str, str, dict[str, Any]], float | None]
#: One sequence's news: its index in the request, its piece (or error), its tokens so far.
_Piece = tuple[int, TextDelta | _Error, int]


def _error_out(exc: BaseException) -> _Error:
    return error_payload(exc), exc.retry_after if isinstance(exc, MaasError) else None


def _error_in(error: _Error) -> MaasError:
    payload, retry_after = error
    rebuilt = rebuild_error(payload)
    rebuilt.retry_after = retry_after
    return rebuilt


# -- the replica (an actor on the cluster) ---------------------------------------------


class LanguageReplica(ReplicaBody):
    """The body of a language model's actor: the runtime and its scheduler, loaded at
    creation (again after each restart), serving many requests at once."""

    def __init__(
        self, target: ReplicaTarget, settings: GenerationSettings, model: str, version: str
    ) -> None:
        self._scheduler: GenerationScheduler | None = None
        self._requests: dict[str, _Merged] = {}
        self._early: collections.OrderedDict[str, None] = collections.OrderedDict()
        try:
            runtime = load_runtime(target.framework, replica_artifact(target), target.options)
            if not isinstance(runtime, TextGenerator):
                raise UnsupportedTask(f"{model}:{version} does not generate text")
            self._scheduler = GenerationScheduler.for_deployment(
                runtime, settings, model=model, version=version
            )
        except Exception as exc:  # reported by ready(), raised in the server
            self._error = error_payload(exc)
        self._reap_when_orphaned_after(target.orphan_timeout_s)

    def _live(self) -> GenerationScheduler:
        if self._scheduler is None:
            raise WorkerCrashed("this replica failed to load its model", retry_after=1.0)
        return self._scheduler

    async def generate(self, request_id: str, request: TextRequest) -> AsyncIterator[Any]:
        """``("started", prompt_tokens, [each stream's prompt tokens])`` or ``("error",
        error)``; then ``("pieces", [piece, ...])`` until every sequence has ended."""
        try:
            started = await start_request(self._live(), request)
        except Exception as exc:
            yield ("error", _error_out(exc))
            return
        merged = _Merged(started.streams)
        self._requests[request_id] = merged
        if request_id in self._early:  # its caller left while it was being encoded
            del self._early[request_id]
            merged.cancel(None)
        try:
            yield ("started", started.prompt_tokens, [s.prompt_tokens for s in started.streams])
            while (pieces := await merged.next()) is not None:
                yield ("pieces", pieces)
        finally:
            merged.cancel(None)
            self._requests.pop(request_id, None)

    def cancel(self, request_id: str, index: int | None = None) -> None:
        """Stop one sequence of a request (``index``), or all of them."""
        merged = self._requests.get(request_id)
        if merged is not None:
            merged.cancel(index)
        elif index is None:
            self._early[request_id] = None
            while len(self._early) > _EARLY_CANCELS:
                self._early.popitem(last=False)

    async def complete_texts(self, texts: Sequence[str], max_tokens: int) -> tuple[str, Any]:
        try:
            return "ok", await self._live().complete_texts(texts, max_tokens)
        except Exception as exc:  # the caller's error, not the actor's death
            return "error", _error_out(exc)

    async def drain(self, drain_s: float) -> None:
        """Refuse new sequences; let those running finish for up to ``drain_s``."""
        if self._scheduler is not None:
            await self._scheduler.close(drain_s)


class _Merged:
    """The pieces of a request's sequences in one queue, in the order they came. Each
    ``next`` takes all that waits, one merged piece per sequence: a slow reader gets
    fewer, larger pieces."""

    def __init__(self, streams: list[TextStream]) -> None:
        self._queue: asyncio.Queue[_Piece | None] = asyncio.Queue()
        self._open = len(streams)
        self._tasks = [
            asyncio.create_task(self._pump(index, stream)) for index, stream in enumerate(streams)
        ]

    async def _pump(self, index: int, stream: TextStream) -> None:
        try:
            async for delta in stream:
                self._queue.put_nowait((index, delta, stream.completion_tokens))
        except MaasError as exc:
            self._queue.put_nowait((index, _error_out(exc), stream.completion_tokens))
        finally:  # cancelled too: its stream then cancels its sequence
            self._open -= 1
            if not self._open:
                self._queue.put_nowait(None)

    async def next(self) -> list[_Piece] | None:
        item = await self._queue.get()
        if item is None:
            return None
        pieces = [item]
        latest = {item[0]: 0}  # where each sequence's latest piece is in ``pieces``
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)  # the end, for the next call
                break
            index, piece, tokens = item
            at = latest.get(index)
            before = pieces[at][1] if at is not None else None
            if at is not None and isinstance(before, TextDelta) and isinstance(piece, TextDelta):
                pieces[at] = (index, _joined(before, piece), tokens)
            else:
                latest[index] = len(pieces)
                pieces.append(item)
        return pieces

    def cancel(self, index: int | None) -> None:
        for number, task in enumerate(self._tasks):
            if index is None or number == index:
                task.cancel()


def _joined(first: TextDelta, second: TextDelta) -> TextDelta:
    return TextDelta(
        first.text + second.text,
        second.finish_reason,
        first.logprobs + second.logprobs,
        first.tool_calls + second.tool_calls,
    )


# -- the gateway's side ------------------------------------------------------------------


class _Lost(Exception):
    """The replica died before it accepted this call: another may take it."""


class RayGeneration(RayInstances):
    """A language model's replicas on the cluster, as the deployment's instances and
    as its ``TextEngine``."""

    body = LanguageReplica

    def __init__(
        self,
        cluster: RayCluster,
        target: ReplicaTarget,
        instances: int,
        *,
        settings: GenerationSettings,
        constrains: bool,
        cpus: float = 1.0,
        memory_bytes: int | None = None,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        super().__init__(
            cluster, target, instances, cpus=cpus, memory_bytes=memory_bytes, labels=labels
        )
        self._settings = settings
        self._constrains = constrains
        self._names = labels
        # The replica's scheduler records its metrics in its own process, which no
        # /metrics exports: the gateway counts what it relays.
        self.generated = TOKENS_GENERATED.labels(labels[0])
        self.first_token = TIME_TO_FIRST_TOKEN_SECONDS.labels(labels[0])

    @property
    def constrains(self) -> bool:
        return self._constrains

    def _actor_arguments(self) -> tuple[Any, ...]:
        model, version = self._names
        return (self._target, self._settings, model, version)

    async def _once_more(self, call: Callable[[_Handle], Awaitable[T]]) -> T:
        """``call`` on the least busy live replica; if that replica was lost before it
        took the call, once more on another."""
        first = self._pick()
        try:
            return await call(first)
        except _Lost:
            log.warning("a replica of %s was lost; sending its call to another", self._label)
        try:
            return await call(self._pick(not_this=first))
        except _Lost:
            raise WorkerCrashed(retry_after=1.0) from None

    async def generate(self, request: TextRequest) -> StartedGeneration:
        return await self._once_more(lambda replica: self._open(replica, request))

    async def _open(self, replica: _Handle, request: TextRequest) -> StartedGeneration:
        request_id = uuid.uuid4().hex
        started = time.monotonic()
        replica.in_flight += 1
        opened = False
        try:
            refs, (_, prompt_tokens, each) = await self._submit(replica, request_id, request)
            remote = _RemoteRequest(self, replica, request_id, refs, request, each, started)
            opened = True
        finally:
            if not opened:
                replica.in_flight -= 1
        return StartedGeneration(list(remote.streams), prompt_tokens)

    async def _submit(
        self, replica: _Handle, request_id: str, request: TextRequest
    ) -> tuple[Any, Any]:
        """Send ``request`` to ``replica``: its stream and its header, once the replica
        has checked and queued every sequence (its refusal raised here)."""
        try:
            refs = replica.actor.generate.options(
                num_returns="streaming", _generator_backpressure_num_objects=_AHEAD
            ).remote(request_id, request)
            header = await self._next(replica, refs)
        except asyncio.CancelledError:  # the caller left while it was being encoded
            self._cancel(replica, request_id, None)
            raise
        if header is None:  # ended without a word: as good as lost
            replica.alive = False
            raise _Lost
        if header[0] == "error":
            raise _error_in(header[1])
        return refs, header

    async def _next(self, replica: _Handle, refs: Any) -> Any:
        """The next item of a replica's stream; ``None`` at its end; ``_Lost`` if the
        replica is gone (it then takes no calls until a ping finds it back)."""
        try:
            ref = await refs.__anext__()
            return await ref
        except StopAsyncIteration:
            return None
        except self._cluster.lost:
            replica.alive = False
            raise _Lost from None

    def _cancel(self, replica: _Handle, request_id: str, index: int | None) -> None:
        with contextlib.suppress(Exception):  # a lost replica's sequences are gone anyway
            replica.actor.cancel.remote(request_id, index)

    async def complete_texts(self, texts: Sequence[str], max_tokens: int) -> list[Completion]:
        """Greedy completions (idempotent: retried once on another replica)."""
        return await self._once_more(lambda replica: self._complete(replica, texts, max_tokens))

    async def _complete(
        self, replica: _Handle, texts: Sequence[str], max_tokens: int
    ) -> list[Completion]:
        replica.in_flight += 1
        try:
            status, payload = await replica.actor.complete_texts.remote(list(texts), max_tokens)
        except self._cluster.lost:
            replica.alive = False
            raise _Lost from None
        finally:
            replica.in_flight -= 1
        if status != "ok":
            raise _error_in(payload)
        completions: list[Completion] = payload
        return completions

    async def warm(self) -> None:
        """One token through every replica."""
        await asyncio.gather(*(self._complete(r, ["Hello"], 1) for r in self._replicas))

    async def _retire(self, replicas: list[_Handle]) -> None:
        """Let each replica finish its sequences (for a while), then remove them; only
        those no deployment of this server holds still (a redeploy that kept their
        spec keeps serving on them)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_S + 5.0):
                drains = (r.actor.drain.remote(_DRAIN_S) for r in replicas)
                await asyncio.gather(*drains, return_exceptions=True)
        await super()._retire(replicas)


class _RemoteRequest:
    """One request's streams on a replica: a task reads the replica's items and hands
    each sequence its pieces."""

    def __init__(
        self,
        owner: RayGeneration,
        replica: _Handle,
        request_id: str,
        refs: Any,
        request: TextRequest,
        prompt_tokens: list[int],
        started: float,
    ) -> None:
        self._owner = owner
        self._replica = replica
        self._id = request_id
        self._request = request
        #: Whether any piece has arrived (then a lost replica ends the answer) or the
        #: request was sent again already.
        self._begun = False
        self._started = started  # when the gateway sent it: time to first token
        self.streams = [
            RemoteStream(self, index, tokens) for index, tokens in enumerate(prompt_tokens)
        ]
        self._task = asyncio.get_running_loop().create_task(self._read(refs))

    async def _read(self, refs: Any) -> None:
        ended: MaasError = RuntimeFailure("the replica ended this answer early")
        try:
            while True:
                try:
                    item = await self._owner._next(self._replica, refs)
                except _Lost:
                    if self._begun:
                        raise
                    refs = await self._again()
                    continue
                if item is None:
                    break
                if not self._begun:
                    self._owner.first_token.observe(time.monotonic() - self._started)
                self._begun = True
                for index, piece, tokens in item[1]:
                    stream = self.streams[index]
                    grown = tokens - stream.completion_tokens
                    stream.feed(piece, tokens)
                    if grown > 0:
                        self._owner.generated.inc(grown)
        except MaasError as exc:  # sent again, and refused (no live replica, 429)
            ended = exc
        except _Lost:
            log.error(
                "a replica of %s (pid %s) was lost mid-answer",
                self._owner._label,
                self._replica.pid,
            )
            ended = WorkerCrashed(
                "the replica generating this answer was lost; the answer is cut short "
                "(send the request again)",
                retry_after=1.0,
            )
        finally:
            self._replica.in_flight -= 1
            for stream in self.streams:
                stream.end(ended)

    async def _again(self) -> Any:
        """The replica was lost before any piece came: nothing was generated for the
        caller, so the request goes once to another live replica."""
        self._begun = True  # once
        lost, owner = self._replica, self._owner
        log.warning("a replica of %s was lost before it answered; sending again", owner._label)
        replica = owner._pick(not_this=lost)
        lost.in_flight -= 1
        replica.in_flight += 1
        self._replica, self._id = replica, uuid.uuid4().hex
        refs, _ = await owner._submit(replica, self._id, self._request)
        for index, stream in enumerate(self.streams):
            if stream.cancelled:  # its caller left meanwhile
                self.cancel(index)
        return refs

    def cancel(self, index: int) -> None:
        self._owner._cancel(self._replica, self._id, index)


class RemoteStream(TextStream):
    """The gateway's side of one sequence on a replica."""

    def __init__(self, request: _RemoteRequest, index: int, prompt_tokens: int) -> None:
        self._request = request
        self._index = index
        self.prompt_tokens = prompt_tokens
        self._queue: asyncio.Queue[TextDelta | MaasError] = asyncio.Queue()
        self._tokens = 0
        self._finish: str | None = None
        self._cancelled = False

    @property
    def completion_tokens(self) -> int:
        return self._tokens

    @property
    def finish_reason(self) -> str | None:
        return self._finish

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def feed(self, piece: TextDelta | _Error, tokens: int) -> None:
        self._tokens = tokens
        if isinstance(piece, TextDelta):
            self._finish = piece.finish_reason
            self._queue.put_nowait(piece)
        else:
            self._finish = "error"
            self._queue.put_nowait(_error_in(piece))

    def end(self, error: MaasError) -> None:
        """The replica's stream is over: a sequence it did not finish fails."""
        if self._finish is None and not self._cancelled:
            self._finish = "error"
            self._queue.put_nowait(error)

    def _pieces(self) -> asyncio.Queue[TextDelta | MaasError]:
        return self._queue

    def cancel(self) -> None:
        if self._finish is None and not self._cancelled:
            self._cancelled = True
            self._request.cancel(self._index)
