"""The files of prometheus_client's multiprocess mode: wiped at start, pruned at exit.

In multiprocess mode every process writes its values to files named after its pid
under ``PROMETHEUS_MULTIPROC_DIR``, and a scrape sums them. Counters of a process
that exited must stay (their counts happened), but its ``livesum`` gauges (loaded
models, queue depth) must go, or a scrape keeps adding what a dead process last
held: ``mark_process_dead`` removes them. A process killed outright cannot do that
for itself, so the server wipes the directory before it writes anything.

No metric is defined here: importing this module must write no file, so the wipe can
run before the first value exists.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import multiprocess

__all__ = ["mark_process_dead", "reset_multiprocess_dir"]


def reset_multiprocess_dir(path: Path) -> None:
    """Create ``path`` if needed and remove every value file a previous run left there.

    Call it once per server start, before any metric has a value: the directory
    belongs to one server and the worker processes it starts.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def mark_process_dead(path: Path, pid: int) -> None:
    """Drop the live gauges of process ``pid`` (it exited); its counters stay summed."""
    # prometheus_client leaves this function unannotated.
    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
