"""Worker processes: real spawned processes loading a real scikit-learn model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.neighbors import KNeighborsClassifier

from maas.errors import UntrustedArtifact, WorkerCrashed
from maas.runtimes.base import LoadOptions
from maas.serving.process_workers import LoadTarget, ProcessInstances

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, KNeighborsClassifier]:
    """Brute-force nearest neighbours over many points: slow enough to kill mid-call."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20_000, 4))
    labels = (features[:, 0] > 0).astype(int)
    model = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(features, labels)
    path = tmp_path_factory.mktemp("workers") / "knn.skops"
    skops.io.dump(model, path)
    return path, model


async def _wait_for(condition: object, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def test_worker_processes_answer_predict(slow_model: tuple[Path, object]) -> None:
    path, model = slow_model
    pool = ProcessInstances(LoadTarget("sklearn", path, LoadOptions()), 2)
    await pool.start()
    try:
        assert len(pool.pids) == 2 and os.getpid() not in pool.pids
        features, _ = load_iris(return_X_y=True)
        rows = features[:5]
        results = await asyncio.gather(
            *(pool.predict({"input": rows}, ["predict"]) for _ in range(4))
        )
        for result in results:
            np.testing.assert_array_equal(result["predict"], model.predict(rows))  # type: ignore[attr-defined]
    finally:
        await pool.close()


async def test_a_killed_worker_fails_its_call_and_restarts_with_backoff(
    slow_model: tuple[Path, object],
) -> None:
    path, _ = slow_model
    pool = ProcessInstances(LoadTarget("sklearn", path, LoadOptions()), 1)
    await pool.start()
    try:
        [pid] = pool.pids
        big = np.random.default_rng(1).normal(size=(20_000, 4))
        in_flight = asyncio.ensure_future(pool.predict({"input": big}, ["predict"]))
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed):
            await asyncio.wait_for(in_flight, 30)
        assert not pool.is_alive or pool.pids != [pid]
        await _wait_for(lambda: pool.is_alive and pool.pids != [pid])
        [second] = pool.pids
        result = await pool.predict({"input": big[:3]}, ["predict"])
        assert result["predict"].shape == (3,)

        os.kill(second, signal.SIGKILL)
        await _wait_for(lambda: pool.is_alive and pool.pids != [second])
        assert pool.restart_delays == [0.1, 0.2]  # doubled: the second death came soon
    finally:
        await pool.close()


async def test_calls_fail_fast_while_no_worker_lives(slow_model: tuple[Path, object]) -> None:
    path, _ = slow_model
    pool = ProcessInstances(LoadTarget("sklearn", path, LoadOptions()), 1, backoff_initial_s=30)
    await pool.start()
    try:
        [pid] = pool.pids
        os.kill(pid, signal.SIGKILL)
        await _wait_for(lambda: not pool.is_alive)
        with pytest.raises(WorkerCrashed):
            await asyncio.wait_for(pool.predict({"input": np.zeros((1, 4))}, ["predict"]), 5)
    finally:
        await pool.close()


async def test_a_worker_that_cannot_load_reports_why(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"\x80\x04not really a pickle")
    pool = ProcessInstances(LoadTarget("pickle", path, LoadOptions(trust_pickle=False)), 1)
    with pytest.raises(UntrustedArtifact):
        await pool.start()
    assert pool.pids == []
