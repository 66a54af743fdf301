"""DynamicBatcher invariants, driven through its public API on a running loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from maas.errors import InvalidInput, Overloaded, RuntimeFailure, ShapeMismatch
from maas.protocols.management import DeploymentSpec
from maas.protocols.signature import Signature, TensorSpec
from maas.serving.batching import DynamicBatcher, Tensors

pytestmark = pytest.mark.anyio

SIGNATURE = Signature(
    inputs=[TensorSpec(name="x", datatype="FP64", shape=[-1, 2])],
    outputs=[
        TensorSpec(name="double", datatype="FP64", shape=[-1, 2]),
        TensorSpec(name="total", datatype="FP64", shape=[-1]),
    ],
)


class Model:
    """A tiny real model: doubles its rows and sums them; refuses negative values."""

    def __init__(self, gate: asyncio.Event | None = None, drop_row: bool = False) -> None:
        self.batches: list[int] = []
        self.gate = gate
        self.drop_row = drop_row

    async def predict(self, inputs: Tensors, outputs: list[str]) -> Tensors:
        x = inputs["x"]
        self.batches.append(len(x))
        if self.gate is not None:
            await self.gate.wait()
        if (x < 0).any():
            raise InvalidInput("negative values")
        if self.drop_row:
            x = x[:-1]
        computed = {"double": x * 2, "total": x.sum(axis=1)}
        return {name: computed[name] for name in outputs}


def batcher(model: Model, **spec: object) -> DynamicBatcher:
    return DynamicBatcher(model.predict, SIGNATURE, DeploymentSpec.model_validate(spec))


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v, v] for v in values])}


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds: the state a handoff waits for (a
    request in the model, requests in the queue), not a guess at how long it takes."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (the batcher has no event for its queue)
            await asyncio.sleep(0)


async def test_requests_of_different_sizes_batch_and_split_in_order() -> None:
    gate = asyncio.Event()
    model = Model(gate)
    b = batcher(model, max_batch_size=16, instances=1)
    first = asyncio.ensure_future(b.submit(rows(0)))  # occupies the only instance
    await until(lambda: model.batches == [1])
    tasks = [asyncio.ensure_future(b.submit(rows(*range(i, i + i)))) for i in (1, 2, 3)]
    await until(lambda: b.queue_depth == 3)
    gate.set()
    await first
    results = await asyncio.gather(*tasks)
    assert model.batches == [1, 6]
    for i, result in zip((1, 2, 3), results, strict=True):
        expected = np.array([[v, v] for v in range(i, i + i)], dtype=float)
        np.testing.assert_array_equal(result["double"], expected * 2)
        np.testing.assert_array_equal(result["total"], expected.sum(axis=1))
    await b.close()


async def test_requested_outputs_are_honoured_per_caller() -> None:
    gate = asyncio.Event()
    model = Model(gate)
    b = batcher(model, max_batch_size=8, instances=1)
    blocker = asyncio.ensure_future(b.submit(rows(0)))
    await until(lambda: model.batches == [1])
    only_total = asyncio.ensure_future(b.submit(rows(1), ["total"]))
    only_double = asyncio.ensure_future(b.submit(rows(2), ["double"]))
    await until(lambda: b.queue_depth == 2)
    gate.set()
    await blocker
    assert set(await only_total) == {"total"}
    assert set(await only_double) == {"double"}
    assert model.batches[-1] == 2
    await b.close()


async def test_one_bad_request_fails_alone() -> None:
    gate = asyncio.Event()
    model = Model(gate)
    b = batcher(model, max_batch_size=8, instances=1)
    blocker = asyncio.ensure_future(b.submit(rows(0)))
    await until(lambda: model.batches == [1])
    good = asyncio.ensure_future(b.submit(rows(1, 2)))
    bad = asyncio.ensure_future(b.submit(rows(-1)))  # passes the signature, fails in the model
    also_good = asyncio.ensure_future(b.submit(rows(3)))
    await until(lambda: b.queue_depth == 3)
    gate.set()
    await blocker
    with pytest.raises(InvalidInput):
        await bad
    np.testing.assert_array_equal((await good)["total"], [2.0, 4.0])
    np.testing.assert_array_equal((await also_good)["total"], [6.0])
    await b.close()


async def test_a_request_that_breaks_the_signature_never_joins_a_batch() -> None:
    b = batcher(Model(), max_batch_size=8)
    with pytest.raises(ShapeMismatch):
        await b.submit({"x": np.zeros((2, 3))})
    assert b.queue_depth == 0
    await b.close()


async def test_wrong_result_count_fails_the_whole_batch() -> None:
    gate = asyncio.Event()
    model = Model(gate, drop_row=True)
    b = batcher(model, max_batch_size=8, instances=1)
    blocker = asyncio.ensure_future(b.submit(rows(0, 1)))
    await until(lambda: model.batches == [2])
    tasks = [asyncio.ensure_future(b.submit(rows(i))) for i in range(3)]
    await until(lambda: b.queue_depth == 3)
    gate.set()
    for task in [blocker, *tasks]:
        with pytest.raises(RuntimeFailure, match="rows"):
            await task
    await b.close()


async def test_a_cancelled_queued_request_leaves_the_queue() -> None:
    gate = asyncio.Event()
    model = Model(gate)
    b = batcher(model, max_batch_size=1, instances=1)
    blocker = asyncio.ensure_future(b.submit(rows(0)))
    await until(lambda: model.batches == [1])
    queued = asyncio.ensure_future(b.submit(rows(5)))
    await until(lambda: b.queue_depth == 1)
    assert b.queue_depth == 1
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert b.queue_depth == 0
    gate.set()
    await blocker
    # A request queued after it runs after anything still queued before it.
    await b.submit(rows(7))
    assert model.batches == [1, 1]  # the cancelled request never reached the model
    await b.close()


async def test_a_full_queue_raises_overloaded_at_once() -> None:
    gate = asyncio.Event()
    model = Model(gate)
    b = batcher(model, max_batch_size=1, instances=1, max_queue_size=2)
    blocker = asyncio.ensure_future(b.submit(rows(0)))
    await until(lambda: model.batches == [1])
    queued = [asyncio.ensure_future(b.submit(rows(i))) for i in (1, 2)]
    await until(lambda: b.queue_depth == 2)
    with pytest.raises(Overloaded) as caught:
        await b.submit(rows(3))
    assert caught.value.retry_after is not None
    # Capacity is checked before the request is validated: a refusal costs no decode
    # check, so even a malformed request is refused as overload, not as bad input.
    with pytest.raises(Overloaded):
        await b.submit({"x": np.zeros((2, 3))})
    gate.set()
    await asyncio.gather(blocker, *queued)
    await b.close()


async def test_the_delay_timer_dispatches_a_partial_batch() -> None:
    model = Model()
    b = batcher(model, max_batch_size=64, max_queue_delay_us=20_000, instances=1)
    results = await asyncio.gather(*(b.submit(rows(i)) for i in range(3)))
    assert model.batches == [3]  # waited for company, then went without a full batch
    assert [float(r["total"][0]) for r in results] == [0.0, 2.0, 4.0]
    await b.close()


async def test_a_preferred_size_dispatches_without_waiting_for_the_delay() -> None:
    model = Model()
    # A delay of an hour: only the preferred size can explain a dispatch.
    b = batcher(model, max_batch_size=64, max_queue_delay_us=60_000_000, preferred_batch_sizes=[4])
    results = await asyncio.wait_for(asyncio.gather(*(b.submit(rows(i)) for i in range(4))), 30)
    assert model.batches == [4] and len(results) == 4
    await b.close()


async def test_batching_off_runs_each_request_alone() -> None:
    model = Model()
    b = batcher(model, max_batch_size=1, instances=2)
    await asyncio.gather(*(b.submit(rows(i, i)) for i in range(5)))
    assert model.batches == [2] * 5
    await b.close()
