"""``DynamicBatcher``: a bounded queue per deployment that groups requests into batches.

It wraps the deployment's predict call by composition. Each request is checked against
the signature before it joins the queue, so one malformed request fails alone; its
future exists before it is queued, so no result can be lost. Requests of different row
counts are concatenated along axis 0, run once with the union of the outputs they
asked for, and split back; the output row count must equal the input row count, or the
whole batch fails with ``RuntimeFailure`` (a wrong split would hand callers each
other's answers). If a batched call fails for a reason that may belong to one member,
the members run one by one so only the bad one fails.

Dispatch is event-driven: an ``asyncio.Event`` wakes the dispatcher on arrival, on a
freed instance and on the delay timer (``loop.call_later``); nothing sleep-polls. With
batching off, a request that finds a free slot and nobody queued before it runs in its
caller's own task, sparing the dispatcher's wake-ups and a task per call.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from maas.errors import (
    ClientDisconnected,
    MaasError,
    ModelNotReady,
    Overloaded,
    RuntimeFailure,
    ShuttingDown,
    WorkerCrashed,
)
from maas.observability.metrics import BATCH_SIZE, INFERENCE_SECONDS, QUEUE_DEPTH, QUEUE_SECONDS
from maas.protocols.management import DeploymentSpec
from maas.protocols.signature import Signature
from maas.runtimes.base import check_request
from maas.serving.hangups import Disconnected, watch

__all__ = ["DynamicBatcher", "PredictFn", "Tensors"]

Tensors = dict[str, np.ndarray]
PredictFn = Callable[[Tensors, list[str]], Awaitable[Tensors]]

#: Failures that say nothing about any one member: retrying members alone cannot help.
_BATCH_WIDE = (WorkerCrashed, ShuttingDown, ModelNotReady)


@dataclass(eq=False)
class _Item:
    inputs: Tensors
    outputs: list[str]
    #: Rows along axis 0, or None when the request cannot share a batch (scalars,
    #: inputs of different row counts).
    rows: int | None
    #: Shapes past axis 0: only requests with equal trailing shapes concatenate.
    key: tuple[tuple[str, tuple[int, ...]], ...]
    future: asyncio.Future[Tensors]
    enqueued: float


def _rows_of(inputs: Mapping[str, np.ndarray]) -> int | None:
    counts = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(counts) != 1:
        return None
    return counts.pop()


class DynamicBatcher:
    """Queue, batch and dispatch the calls of one deployment.

    ``concurrency`` batches run at once (what the instances can take: ``spec.instances``
    by default); while they run, arrivals queue up and form bigger batches.
    ``max_batch_size`` 1 turns batching off but keeps the bounded queue, the
    cancellation of queued work and the concurrency limit.
    """

    def __init__(
        self,
        predict: PredictFn,
        signature: Signature,
        spec: DeploymentSpec,
        *,
        labels: tuple[str, str] = ("", ""),
        concurrency: int | None = None,
    ) -> None:
        self._predict = predict
        self._signature = signature
        self._spec = spec
        self._delay_s = spec.max_queue_delay_us / 1_000_000
        self._preferred = set(spec.preferred_batch_sizes)
        self._queue: collections.deque[_Item] = collections.deque()
        self._free = concurrency or spec.instances
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False
        self._depth = QUEUE_DEPTH.labels(*labels)
        self._queue_seconds = QUEUE_SECONDS.labels(*labels)
        self._inference_seconds = INFERENCE_SECONDS.labels(*labels)
        self._batch_size = BATCH_SIZE.labels(*labels)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance (dispatched ones are not counted)."""
        return len(self._queue)

    @property
    def is_batching(self) -> bool:
        return self._spec.max_batch_size > 1

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        disconnected: Disconnected | None = None,
    ) -> Tensors:
        """Queue one request and return its outputs.

        Raises ``Overloaded`` at once when the queue is full. Cancelling the caller, or
        its client hanging up (``disconnected``) while it waits in the queue, removes
        its request from the queue if no instance has taken it yet; a result that
        arrives after the caller left is dropped.
        """
        # Refusals first: under overload they must cost nothing, not a validation pass.
        if self._closed:
            raise ShuttingDown("this deployment is being unloaded", retry_after=1.0)
        if len(self._queue) >= self._spec.max_queue_size:
            raise Overloaded(
                f"the queue of this model is full ({self._spec.max_queue_size} requests)",
                retry_after=1.0,
            )
        checked, wanted = check_request(self._signature, inputs, outputs)
        if self._free > 0 and not self._queue and not self.is_batching:
            return await self._run_direct(checked, wanted)
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        key = tuple((name, array.shape[1:]) for name, array in checked.items())
        item = _Item(checked, wanted, _rows_of(checked), key, future, time.monotonic())
        self._queue.append(item)
        self._depth.set(len(self._queue))
        self._start_dispatcher()
        self._wake.set()
        watcher = None if disconnected is None else watch(disconnected, lambda: self._hang_up(item))
        try:
            return await future
        except asyncio.CancelledError:
            self._discard(item)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    def _hang_up(self, item: _Item) -> None:
        """The client left: its request leaves the queue and its caller stops waiting."""
        self._discard(item)
        if not item.future.done():
            item.future.set_exception(ClientDisconnected())

    async def _run_direct(self, inputs: Tensors, outputs: list[str]) -> Tensors:
        """An unbatched call with a free slot and an empty queue: run it in the caller's
        task. The slot is returned when the call ends, cancelled or not."""
        self._free -= 1
        self._queue_seconds.observe(0.0)
        try:
            return await self._call(inputs, outputs, _rows_of(inputs))
        finally:
            self._free += 1
            if self._queue:
                self._wake.set()

    def _discard(self, item: _Item) -> None:
        try:
            self._queue.remove(item)
        except ValueError:  # already dispatched: its late result will be dropped
            return
        self._depth.set(len(self._queue))
        self._wake.set()  # the head may have changed, and with it the delay deadline

    def _start_dispatcher(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._free > 0 and (batch := self._take(time.monotonic())):
                self._free -= 1
                task = asyncio.get_running_loop().create_task(self._run_batch(batch))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)

    def _take(self, now: float) -> list[_Item]:
        """The next batch to run now, or none yet (the timer is then armed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._queue:
            return []
        head = self._queue[0]
        limit = self._spec.max_batch_size
        if limit == 1 or head.rows is None or head.rows >= limit:
            return [self._pop(1)[0]]
        count, rows, prefix_rows = 0, 0, []
        for item in self._queue:
            if item.rows is None or item.key != head.key or rows + item.rows > limit:
                break
            count, rows = count + 1, rows + item.rows
            prefix_rows.append(rows)
        can_grow = rows < limit and count == len(self._queue)
        if can_grow:
            preferred = [i + 1 for i, size in enumerate(prefix_rows) if size in self._preferred]
            deadline = head.enqueued + self._delay_s
            if preferred:
                count = preferred[-1]
            elif now < deadline:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(deadline - now, self._wake.set)
                return []
        return self._pop(count)

    def _pop(self, count: int) -> list[_Item]:
        batch = [self._queue.popleft() for _ in range(count)]
        self._depth.set(len(self._queue))
        return batch

    async def _run_batch(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        for item in batch:
            self._queue_seconds.observe(started - item.enqueued)
        try:
            if len(batch) == 1:
                await self._run_alone(batch[0])
            else:
                await self._run_together(batch)
        finally:
            self._free += 1
            self._wake.set()

    async def _call(self, inputs: Tensors, outputs: list[str], rows: int | None) -> Tensors:
        started = time.monotonic()
        try:
            return await self._predict(inputs, outputs)
        except MaasError:
            raise
        except Exception as exc:  # a runtime's own exception type is the server's fault
            raise RuntimeFailure(f"the model failed: {type(exc).__name__}") from None
        finally:
            self._inference_seconds.observe(time.monotonic() - started)
            self._batch_size.observe(rows or 1)

    async def _run_alone(self, item: _Item) -> None:
        try:
            result = await self._call(item.inputs, item.outputs, item.rows)
            if self.is_batching and item.rows is not None:
                _check_rows(result, item.outputs, item.rows)
        except MaasError as exc:
            _fail([item], exc)
        else:
            _resolve(item, result)

    async def _run_together(self, batch: list[_Item]) -> None:
        wanted = {name for item in batch for name in item.outputs}
        outputs = [spec.name for spec in self._signature.outputs if spec.name in wanted]
        inputs = {
            name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs
        }
        rows = sum(item.rows or 0 for item in batch)
        try:
            result = await self._call(inputs, outputs, rows)
        except _BATCH_WIDE as exc:
            _fail(batch, exc)
            return
        except MaasError:
            for item in batch:  # the failure may be one member's: find it
                if not item.future.done():
                    await self._run_alone(item)
            return
        try:
            _check_rows(result, outputs, rows)
        except RuntimeFailure as exc:
            _fail(batch, exc)
            return
        offset = 0
        for item in batch:
            assert item.rows is not None  # only rows-bearing items share a batch
            end = offset + item.rows
            _resolve(item, {name: result[name][offset:end] for name in item.outputs})
            offset = end

    async def close(self) -> None:
        """Fail whatever is still queued and stop the dispatcher."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        _fail(self._pop(len(self._queue)), ShuttingDown("the model was unloaded", retry_after=1.0))
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await asyncio.gather(*self._batches, return_exceptions=True)


def _check_rows(result: Mapping[str, np.ndarray], outputs: list[str], rows: int) -> None:
    missing = [name for name in outputs if name not in result]
    if missing:
        raise RuntimeFailure(f"the model did not return {missing[0]!r}")
    for name, value in result.items():
        got = value.shape[0] if value.ndim else None
        if got != rows:
            raise RuntimeFailure(
                f"the model returned {got} rows of {name!r} for {rows} input rows",
                details={"output": name, "rows_in": rows, "rows_out": got},
            )


def _resolve(item: _Item, result: Tensors) -> None:
    if not item.future.done():  # a caller that left (timeout, disconnect) gets nothing
        item.future.set_result(result)


def _fail(batch: Sequence[_Item], error: MaasError) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)
