"""``GenerationScheduler``: continuous batching of text generation for one language model.

One thread per deployed model runs the loop; torch releases the GIL in its kernels, so
the event loop stays free. Each turn of the loop admits waiting sequences (a prefill
each) while the running batch has room, then advances every running sequence by one
token in one forward pass (``DecodeBatch.step``). New sequences join at token
boundaries and finished or abandoned ones leave at the next, so throughput grows with
concurrency instead of serialising, and a client that hangs up frees its slot within
one step.

Bounded: ``max_running`` sequences share a step, ``max_waiting`` may queue behind them,
and past both ``submit`` refuses at once with ``GenerationQueueFull`` (429,
``Retry-After``). A prompt that leaves no room in the context is refused before it
queues (``ContextLengthExceeded``).

A runtime whose batch evaluates prompts in chunks (``ChunkedBatch``, llama.cpp) gets
each admitted prompt at once and the scheduler only steps: prompts are evaluated in
chunks inside the decode steps, so a long one does not stall the running streams. Such
a batch has a fixed KV cache, so sequences are admitted only while the prompt and
completion budgets of those running fit in it (they wait otherwise, as past
``max_running``).

Tokens reach the caller through an ``asyncio.Queue`` per sequence, fed from the thread
with ``call_soon_threadsafe``. Text is detokenised incrementally: a piece is released
only once it cannot be the start of a stop string or half of a UTF-8 character, so the
streamed pieces always concatenate to the final text.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from maas.config import GenerationSettings
from maas.errors import (
    ContextLengthExceeded,
    GenerationQueueFull,
    MaasError,
    RuntimeFailure,
    ShuttingDown,
)
from maas.observability.metrics import (
    BATCH_SIZE,
    INTER_TOKEN_SECONDS,
    SEQUENCES_RUNNING,
    SEQUENCES_WAITING,
    TIME_TO_FIRST_TOKEN_SECONDS,
    TOKENS_GENERATED,
)
from maas.protocols.openai import ToolCall
from maas.runtimes.generation import ChunkedBatch, DecodeBatch, TextGenerator, TokenConstraint
from maas.serving.sampling import Sampler, SamplingParams, log_probabilities

__all__ = [
    "Completion",
    "GenerationScheduler",
    "GenerationStream",
    "TextDelta",
    "TextStream",
    "TokenLogprob",
]

log = logging.getLogger("maas.serving")

_REPLACEMENT = "\ufffd"  # what a tokenizer decodes half a UTF-8 character to


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the likeliest alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text; ``finish_reason`` is set on a sequence's last piece.
    ``logprobs``: the tokens generated since the previous piece, when asked for."""

    text: str
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    #: The tool calls the text was (``maas.services.tools``); the text is then empty.
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(eq=False)
class _Sequence:
    key: int
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[TextDelta | MaasError]
    max_new: int
    sampler: Sampler
    submitted: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    last_token_at: float = 0.0
    sent_chars: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    #: Token log-probabilities not yet sent with a piece.
    unsent_logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def budget(self) -> int:
        """KV cache tokens it may come to hold: its prompt and its whole completion."""
        return len(self.prompt) + self.max_new

    def send(self, item: TextDelta | MaasError) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def _deliver(items: list[tuple[_Sequence, TextDelta]]) -> None:
    """On the event loop: hand each sequence its piece (one wake-up for a whole step)."""
    for sequence, item in items:
        sequence.queue.put_nowait(item)


class TextStream:
    """One choice's text as it is generated, wherever the sequence runs (this process's
    scheduler, or a replica on a Ray cluster): iterate for text pieces, or ``collect``.

    Subclasses give the queue the pieces arrive on (``_pieces``), the counts and
    ``cancel``; iterating and collecting are the same for all."""

    #: Tokens of the prompt this choice continues.
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        raise NotImplementedError

    @property
    def finish_reason(self) -> str | None:
        raise NotImplementedError

    def _pieces(self) -> asyncio.Queue[TextDelta | MaasError]:
        """Where the sequence's pieces arrive, and the error that ends it early."""
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        pieces = self._pieces()
        try:
            while True:
                item = await pieces.get()
                if isinstance(item, MaasError):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self.cancel()  # a no-op once finished; frees the slot if the caller left

    def cancel(self) -> None:
        """Stop generating (the caller left): frees the sequence's slot."""
        raise NotImplementedError

    async def collect(self) -> Completion:
        pieces: list[str] = []
        logprobs: list[TokenLogprob] = []
        calls: list[ToolCall] = []
        finish = None
        async for delta in self:
            pieces.append(delta.text)
            logprobs.extend(delta.logprobs)
            calls.extend(delta.tool_calls)
            finish = delta.finish_reason or finish
        return Completion(
            "".join(pieces),
            finish or self.finish_reason or "stop",
            self.prompt_tokens,
            self.completion_tokens,
            tuple(logprobs),
            tuple(calls),
        )


class GenerationStream(TextStream):
    """The caller's side of one sequence of this process's scheduler."""

    def __init__(self, sequence: _Sequence, scheduler: GenerationScheduler) -> None:
        self._sequence = sequence
        self._scheduler = scheduler
        self.prompt_tokens = len(sequence.prompt)

    @property
    def completion_tokens(self) -> int:
        return len(self._sequence.tokens)

    @property
    def finish_reason(self) -> str | None:
        return self._sequence.finish_reason

    def _pieces(self) -> asyncio.Queue[TextDelta | MaasError]:
        return self._sequence.queue

    def cancel(self) -> None:
        self._scheduler.cancel(self._sequence)


class GenerationScheduler:
    def __init__(
        self,
        generator: TextGenerator,
        *,
        model: str,
        version: str = "",
        max_running: int,
        max_waiting: int,
        max_context: int | None = None,
        default_max_tokens: int = 512,
    ) -> None:
        self._generator = generator
        self._model = model
        self._max_running = max_running
        self._max_waiting = max_waiting
        limit = generator.context_length
        self.context_length = min(limit, max_context) if max_context else limit
        self._default_max_tokens = default_max_tokens
        self._keys = itertools.count()
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: dict[int, _Sequence] = {}
        self._wake = threading.Condition()
        self._closed = False
        self._draining = False  # refusing new sequences, finishing the rest
        # Pieces of the current step, per event loop: sent with one wake-up per step
        # rather than one per sequence (each wake-up takes the GIL from the model).
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, TextDelta]]] = {}
        self._thread: threading.Thread | None = None
        #: KV cache tokens the running sequences may share (a ``ChunkedBatch``'s).
        self._token_capacity: int | None = None
        self._running_gauge = SEQUENCES_RUNNING.labels(model)
        self._waiting_gauge = SEQUENCES_WAITING.labels(model)
        self._ttft = TIME_TO_FIRST_TOKEN_SECONDS.labels(model)
        self._itl = INTER_TOKEN_SECONDS.labels(model)
        self._generated = TOKENS_GENERATED.labels(model)
        self._batch_size = BATCH_SIZE.labels(model, version)

    @classmethod
    def for_deployment(
        cls, generator: TextGenerator, settings: GenerationSettings, *, model: str, version: str
    ) -> GenerationScheduler:
        """The scheduler of a deployed language model, as the operator's settings size
        it (in the server, or in a replica on a cluster), started."""
        scheduler = cls(
            generator,
            model=model,
            version=version,
            max_running=settings.max_running,
            max_waiting=settings.max_waiting,
            max_context=settings.max_context_tokens,
            default_max_tokens=settings.default_max_tokens,
        )
        scheduler.start()
        return scheduler

    # -- the caller's side (event loop) ----------------------------------------------

    @property
    def generator(self) -> TextGenerator:
        return self._generator

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"maas-generate-{self._model}", daemon=True
        )
        self._thread.start()

    def check_prompt(self, prompt: Sequence[int], max_tokens: int | None) -> int:
        """The completion budget of ``prompt``: ``max_tokens`` or what the context
        leaves. Raises ``ContextLengthExceeded`` when the prompt leaves no room."""
        room = self.context_length - len(prompt)
        if not prompt:
            raise ContextLengthExceeded("the prompt is empty")
        if room < 1 or (max_tokens is not None and max_tokens > room):
            asked = f" plus max_tokens {max_tokens}" if max_tokens is not None else ""
            raise ContextLengthExceeded(
                f"this model's context is {self.context_length} tokens; the prompt has "
                f"{len(prompt)}{asked}",
                details={"context_length": self.context_length, "prompt_tokens": len(prompt)},
            )
        return max_tokens if max_tokens is not None else min(room, self._default_max_tokens)

    def submit(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        constraint: TokenConstraint | None = None,
    ) -> GenerationStream:
        """Queue one sequence; its tokens arrive on the returned stream. With a
        ``constraint``, every token is one its grammar allows."""
        max_new = self.check_prompt(prompt, params.max_tokens)
        with self._wake:
            if self._closed or self._draining:
                raise ShuttingDown(retry_after=1.0)
            # A cancelled sequence holds its place only until the next step drops it;
            # it no longer counts here, so a caller who hung up frees the slot at once.
            running = sum(not s.cancelled for s in self._running.values())
            waiting = sum(not s.cancelled for s in self._waiting)
            if waiting >= self._max_waiting + max(0, self._max_running - running):
                raise GenerationQueueFull(
                    f"{self._model} is generating for {running} sequences with "
                    f"{waiting} waiting; retry shortly",
                    retry_after=1.0,
                )
            sequence = _Sequence(
                key=next(self._keys),
                prompt=list(prompt),
                params=params,
                loop=asyncio.get_running_loop(),
                queue=asyncio.Queue(),
                max_new=max_new,
                sampler=Sampler(params, constraint),
            )
            self._waiting.append(sequence)
            self._waiting_gauge.set(len(self._waiting))
            self._wake.notify()
        return GenerationStream(sequence, self)

    def cancel(self, sequence: _Sequence) -> None:
        """Abandon a sequence (its caller left); the loop frees it at the next step."""
        if sequence.finish_reason is not None or sequence.cancelled:
            return
        with self._wake:
            sequence.cancelled = True
            self._wake.notify()

    async def complete_texts(self, texts: Sequence[str], max_tokens: int) -> list[Completion]:
        """Greedy completions of plain prompts, all in the batch at once (V2 infer)."""
        streams = []
        try:
            for text in texts:
                prompt = self._generator.encode_text(text)
                budget = max(1, min(max_tokens, self.context_length - len(prompt)))
                streams.append(self.submit(prompt, SamplingParams(budget, temperature=0.0)))
            return list(await asyncio.gather(*(stream.collect() for stream in streams)))
        finally:
            for stream in streams:
                stream.cancel()

    async def close(self, drain_s: float = 30.0) -> None:
        """Refuse new sequences, let those queued and running finish for up to
        ``drain_s`` (an alias move or a SIGTERM drains, it does not cut answers off),
        then stop; what is still unfinished fails with ``ShuttingDown``."""
        with self._wake:
            self._draining = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, drain_s)
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # -- the loop (its own thread) ---------------------------------------------------

    def _loop(self) -> None:
        batch = self._generator.new_batch()
        if isinstance(batch, ChunkedBatch):
            self._token_capacity = batch.token_capacity
        while True:
            with self._wake:
                idle = not (self._waiting or self._running)
                while idle and not (self._closed or self._draining):
                    self._wake.wait()
                    idle = not (self._waiting or self._running)
                if self._closed or (self._draining and idle):
                    break
                self._drop_cancelled(batch)
                admitted = self._admissions()
            try:
                if isinstance(batch, ChunkedBatch):
                    self._step_chunked(batch, admitted)
                else:
                    for group in _prefill_groups(admitted):
                        first = batch.join_many({seq.key: seq.prompt for seq in group})
                        for sequence in group:
                            self._emit(batch, sequence, first[sequence.key])
                    if self._running:
                        last = {key: seq.tokens[-1] for key, seq in self._running.items()}
                        self._batch_size.observe(len(last))
                        for key, logits in batch.step(last).items():
                            self._emit(batch, self._running[key], logits)
            except Exception as exc:  # a framework failure: fail what ran, start afresh
                log.exception("generation step of %s failed", self._model)
                self._fail_running(RuntimeFailure(f"generation failed: {type(exc).__name__}"))
                batch = self._generator.new_batch()
            self._flush()
            self._running_gauge.set(len(self._running))
        self._flush()
        self._fail_all(ShuttingDown(retry_after=1.0))

    def _step_chunked(self, batch: ChunkedBatch, admitted: list[_Sequence]) -> None:
        """Admitted prompts join at once; one step then decodes the running sequences and
        evaluates the next chunk of prompts (a sequence without tokens is still in its
        prompt: its first logits come from the step that finishes it)."""
        for sequence in admitted:
            batch.begin(sequence.key, sequence.prompt)
        if not self._running:
            return
        last = {key: seq.tokens[-1] for key, seq in self._running.items() if seq.tokens}
        if last:
            self._batch_size.observe(len(last))
        for key, logits in batch.step(last).items():
            self._emit(batch, self._running[key], logits)

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            loop.call_soon_threadsafe(_deliver, items)

    def _admissions(self) -> list[_Sequence]:
        """Waiting sequences that fit in the batch now; called under the lock."""
        admitted = []
        capacity = self._token_capacity
        held = sum(s.budget for s in self._running.values()) if capacity is not None else 0
        while self._waiting and len(self._running) < self._max_running:
            sequence = self._waiting[0]
            if sequence.cancelled:
                self._waiting.popleft()
                continue
            if capacity is not None and self._running and held + sequence.budget > capacity:
                break  # it waits until running sequences free enough of the cache
            self._waiting.popleft()
            held += sequence.budget
            self._running[sequence.key] = sequence
            admitted.append(sequence)
        self._waiting_gauge.set(len(self._waiting))
        return admitted

    def _drop_cancelled(self, batch: DecodeBatch) -> None:
        for key in [k for k, s in self._running.items() if s.cancelled]:
            del self._running[key]
            batch.leave(key)
        if any(s.cancelled for s in self._waiting):
            self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)

    def _emit(
        self, batch: DecodeBatch | ChunkedBatch, sequence: _Sequence, logits: np.ndarray
    ) -> None:
        """Sample the next token of ``sequence``, send what text is safe, finish it if due."""
        now = time.perf_counter()
        if sequence.tokens:
            self._itl.observe(now - sequence.last_token_at)
        else:
            self._ttft.observe(now - sequence.submitted)
        sequence.last_token_at = now
        token = sequence.sampler(logits)
        finish: str | None = None
        if token in self._generator.stop_token_ids and not sequence.params.ignore_eos:
            finish = "stop"
        else:
            sequence.tokens.append(token)
            if sequence.params.logprobs:
                self._note_logprob(sequence, token)
            self._generated.inc()
            total = len(sequence.prompt) + len(sequence.tokens)
            if len(sequence.tokens) >= sequence.max_new or total >= self.context_length:
                finish = "length"
        text = self._generator.decode(sequence.tokens)
        end, hit_stop = _releasable(text, sequence.params.stop, final=finish is not None)
        if hit_stop:
            finish = "stop"
        if finish is not None:
            sequence.finish_reason = finish
            del self._running[sequence.key]
            batch.leave(sequence.key)
        if end > sequence.sent_chars or finish is not None:
            logprobs = tuple(sequence.unsent_logprobs)
            sequence.unsent_logprobs.clear()
            piece = TextDelta(text[sequence.sent_chars : end], finish, logprobs)
            self._outbox.setdefault(sequence.loop, []).append((sequence, piece))
            sequence.sent_chars = max(end, sequence.sent_chars)

    def _note_logprob(self, sequence: _Sequence, token: int) -> None:
        logits = sequence.sampler.last_logits
        assert logits is not None
        chosen, top = log_probabilities(logits, token, sequence.params.top_logprobs)
        decode = self._generator.decode
        alternatives = tuple((decode([t]), value) for t, value in top)
        sequence.unsent_logprobs.append(TokenLogprob(decode([token]), chosen, alternatives))

    def _fail_running(self, error: MaasError) -> None:
        self._flush()  # pieces already made go first
        with self._wake:
            running, self._running = self._running, {}
        for sequence in running.values():
            sequence.finish_reason = "error"
            sequence.send(error)

    def _fail_all(self, error: MaasError) -> None:
        self._fail_running(error)
        with self._wake:
            waiting, self._waiting = self._waiting, collections.deque()
        for sequence in waiting:
            sequence.finish_reason = "error"
            sequence.send(error)
        self._running_gauge.set(0)
        self._waiting_gauge.set(0)


#: Padded prompt tokens one prefill forward pass may take: prompts of very different
#: lengths are prefilled apart rather than all padded to the longest.
_PREFILL_TOKENS = 4096


def _prefill_groups(sequences: list[_Sequence]) -> list[list[_Sequence]]:
    """Admitted sequences in groups that prefill together, shortest prompts first."""
    groups: list[list[_Sequence]] = []
    for sequence in sorted(sequences, key=lambda s: len(s.prompt)):
        group = groups[-1] if groups else None
        if group and (len(group) + 1) * len(sequence.prompt) <= _PREFILL_TOKENS:
            group.append(sequence)
        else:
            groups.append([sequence])
    return groups


def _releasable(text: str, stops: Sequence[str], *, final: bool) -> tuple[int, bool]:
    """How much of ``text`` may be sent, and whether a stop string ended it.

    A stop string cuts the text where it starts. Otherwise, unless the sequence is
    finishing, hold back a trailing half character and any suffix that could still
    grow into a stop string.
    """
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut >= 0:
        return cut, True
    if final:
        return len(text), False
    end = len(text)
    while end and text[end - 1] == _REPLACEMENT:
        end -= 1
    held = max((_overlap(text[:end], stop) for stop in stops if stop), default=0)
    return end - held, False


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a beginning of ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
