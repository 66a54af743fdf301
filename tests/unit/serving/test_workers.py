"""Worker processes: real spawned processes loading a real scikit-learn model."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.neighbors import KNeighborsClassifier

from maas.errors import MaasError, UntrustedArtifact, WorkerCrashed
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime
from maas.serving import process_workers as pw
from maas.serving.process_workers import (
    LoadTarget,
    ProcessInstances,
    ProcessPool,
    SharedInstances,
    discard_spare_worker,
    key_of,
    prestart_worker,
)
from maas.serving.workers import INLINE_MAX_BYTES, InlineInstances, ThreadWorkers

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
    pool = ProcessInstances(ProcessPool(2), LoadTarget("sklearn", path, LoadOptions()))
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
    pool = ProcessInstances(ProcessPool(1), LoadTarget("sklearn", path, LoadOptions()))
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
    pool = ProcessInstances(
        ProcessPool(1, backoff_initial_s=30), LoadTarget("sklearn", path, LoadOptions())
    )
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
    pool = ProcessInstances(
        ProcessPool(1), LoadTarget("pickle", path, LoadOptions(trust_pickle=False))
    )
    with pytest.raises(UntrustedArtifact):
        await pool.start()
    assert pool.pids == []


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[LoadTarget, object]]:
    """Two small classifiers of iris that answer differently."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    features, labels = load_iris(return_X_y=True)
    directory = tmp_path_factory.mktemp("shared")
    found = []
    for name, model in (
        ("logistic", LogisticRegression(max_iter=500).fit(features, labels)),
        ("tree", DecisionTreeClassifier(max_depth=1).fit(features, labels)),
    ):
        skops.io.dump(model, directory / f"{name}.skops")
        found.append((LoadTarget("sklearn", directory / f"{name}.skops", LoadOptions()), model))
    return found


async def test_small_models_share_one_worker_process(
    two_models: list[tuple[LoadTarget, object]],
) -> None:
    pool = ProcessPool(1)
    (first, first_model), (second, second_model) = two_models
    instances = [SharedInstances(pool, first), SharedInstances(pool, second)]
    rows = load_iris(return_X_y=True)[0][45:105]
    try:
        await asyncio.gather(*(i.start() for i in instances))
        assert instances[0].pids == instances[1].pids and len(pool.pids) == 1
        assert os.getpid() not in pool.pids
        answers = await asyncio.gather(
            *(i.predict({"input": rows}, ["predict"]) for i in instances for _ in range(3))
        )
        for answer in answers[:3]:
            np.testing.assert_array_equal(answer["predict"], first_model.predict(rows))  # type: ignore[attr-defined]
        for answer in answers[3:]:
            np.testing.assert_array_equal(answer["predict"], second_model.predict(rows))  # type: ignore[attr-defined]
        assert not np.array_equal(answers[0]["predict"], answers[3]["predict"])

        await instances[0].close()  # the other model stays, in the same process
        assert pool.keys == [key_of(second)]
        with pytest.raises(WorkerCrashed):
            await SharedInstances(pool, first).predict({"input": rows}, ["predict"])
        answer = await instances[1].predict({"input": rows}, ["predict"])
        np.testing.assert_array_equal(answer["predict"], second_model.predict(rows))  # type: ignore[attr-defined]
    finally:
        await pool.close()


async def test_the_first_worker_is_the_one_started_ahead(
    two_models: list[tuple[LoadTarget, object]],
) -> None:
    """``maas serve`` starts a worker before its own imports: the first pool to start
    takes that process (its pid, already running) and it answers like any; the next
    worker is launched as usual; a spare nobody took is ended."""
    (first, first_model), (second, _) = two_models
    prestart_worker()
    prestart_worker()  # one spare at most
    spares = [s.process for s in pw._SPARES]
    assert len(spares) == 1 and spares[0].poll() is None
    pool, other = ProcessPool(1), ProcessPool(1)
    rows = load_iris(return_X_y=True)[0][45:105]
    try:
        instances = SharedInstances(pool, first)
        await instances.start()
        assert pool.pids == [spares[0].pid] and not pw._SPARES
        answer = await instances.predict({"input": rows}, ["predict"])
        np.testing.assert_array_equal(answer["predict"], first_model.predict(rows))  # type: ignore[attr-defined]
        await SharedInstances(other, second).start()
        assert other.pids != pool.pids
    finally:
        await asyncio.gather(pool.close(), other.close())
    prestart_worker()
    (unused,) = [s.process for s in pw._SPARES]
    discard_spare_worker()
    assert unused.poll() is not None and not pw._SPARES


async def test_a_restarted_shared_worker_holds_every_model_again(
    two_models: list[tuple[LoadTarget, object]],
) -> None:
    pool = ProcessPool(1)
    instances = [SharedInstances(pool, target) for target, _ in two_models]
    rows = load_iris(return_X_y=True)[0][:5]
    try:
        for shared in instances:
            await shared.start()
        [pid] = pool.pids
        os.kill(pid, signal.SIGKILL)
        await _wait_for(lambda: pool.is_alive and pool.pids != [pid])
        for shared, (_, model) in zip(instances, two_models, strict=True):
            answer = await shared.predict({"input": rows}, ["predict"])
            np.testing.assert_array_equal(answer["predict"], model.predict(rows))  # type: ignore[attr-defined]
    finally:
        await pool.close()


async def test_a_model_that_cannot_load_leaves_the_shared_pool_as_it_was(
    two_models: list[tuple[LoadTarget, object]], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.skops"
    broken.write_bytes(b"PK\x03\x04 not a zip at all")
    pool = ProcessPool(2)
    (good, model), _ = two_models
    try:
        await SharedInstances(pool, good).start()
        pids = pool.pids
        with pytest.raises(MaasError):
            await SharedInstances(pool, LoadTarget("sklearn", broken, LoadOptions())).start()
        assert pool.pids == pids and pool.keys == [key_of(good)]
        rows = load_iris(return_X_y=True)[0][:5]
        answer = await SharedInstances(pool, good).predict({"input": rows}, ["predict"])
        np.testing.assert_array_equal(answer["predict"], model.predict(rows))  # type: ignore[attr-defined]
    finally:
        await pool.close()


class _WhereItRan(Runtime):
    """A runtime that answers with the id of the thread that ran it."""

    signature = Signature(
        inputs=[TensorSpec(name="input", datatype="FP64", shape=[-1, -1])], outputs=[]
    )

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> _WhereItRan:
        return cls()

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            "thread": np.array([threading.get_ident()]),
            "rows": np.array([len(inputs["input"])]),
        }


async def test_inline_instances_answer_small_calls_on_the_loop_and_large_ones_in_a_thread() -> None:
    workers = ThreadWorkers(1)
    instances = InlineInstances(_WhereItRan(), workers)
    loop_thread = threading.get_ident()
    try:
        small = await instances.predict({"input": np.zeros((4, 4))}, ["thread", "rows"])
        assert small["thread"][0] == loop_thread and small["rows"][0] == 4
        rows = INLINE_MAX_BYTES // 32 + 1  # 4 float64 columns: just past the limit
        large = await instances.predict({"input": np.zeros((rows, 4))}, ["thread", "rows"])
        assert large["thread"][0] != loop_thread and large["rows"][0] == rows
        assert instances.kind == "inline" and instances.pids == [os.getpid()]
    finally:
        workers.close()


def test_a_worker_is_a_plain_child_without_a_resource_tracker(
    slow_model: tuple[Path, object],
) -> None:
    """A worker process is this process's child running ``worker_main``, and starting it
    starts no multiprocessing resource tracker (a process of 12 MB that no worker uses).
    In a fresh interpreter: this one may have started a tracker for something else."""
    import subprocess
    import sys

    path, _ = slow_model
    script = f"""
import asyncio, os
from multiprocessing import resource_tracker
from pathlib import Path
import numpy as np
from maas.runtimes.base import LoadOptions
from maas.serving.process_workers import LoadTarget, ProcessInstances, ProcessPool

async def main():
    target = LoadTarget("sklearn", Path({str(path)!r}), LoadOptions())
    pool = ProcessInstances(ProcessPool(1), target)
    await pool.start()
    try:
        out = await pool.predict({{"input": np.zeros((1, 4))}}, ["predict"])
        (pid,) = pool.pids
        parent = Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[1]
        command = Path(f"/proc/{{pid}}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
        print(out["predict"].shape, int(parent) == os.getpid(), "worker_main" in command)
        print(resource_tracker._resource_tracker._pid)
    finally:
        await pool.close()

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(1,) True True", "None"], result.stdout
