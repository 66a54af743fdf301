"""The job process: ``python -m maas.jobs.child WORKDIR``.

Reads ``WORKDIR/payload.json`` (written by the backend), runs the job kind, and
reports over its stdout (``Reporter``); exits 0 after a ``result``, 1 after an
``error``. It opens no database: its inputs are local files named in the payload and
its outputs are files in ``WORKDIR`` that the server registers.

If the server dies without stopping it (SIGKILL, OOM), the job notices that its parent
changed and exits instead of running on unseen.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maas.errors import MaasError
from maas.jobs.reporter import Reporter

__all__ = ["main"]

Kind = Callable[[dict[str, Any], Reporter, Path], dict[str, Any]]


def _kind(name: str) -> Kind:
    if name == "train":
        from maas.jobs.kinds.train import run_train

        return run_train
    if name == "evaluate":
        from maas.jobs.kinds.evaluate import run_evaluate

        return run_evaluate
    if name == "optimize":
        from maas.jobs.kinds.optimize import run_optimize

        return run_optimize
    if name == "finetune":
        from maas.jobs.kinds.finetune import run_finetune

        return run_finetune
    raise MaasError(f"unknown job kind {name!r}")


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _limit_threads(threads: int) -> None:
    """BLAS pools follow the environment the backend set; torch is told directly."""
    if "torch" in sys.modules or threads:
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)


def main(argv: list[str]) -> int:
    work_dir = Path(argv[1])
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints go to the log, never into the protocol
    sys.stdout = sys.stderr
    reporter = Reporter(events)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    payload = json.loads((work_dir / "payload.json").read_text())
    try:
        kind = _kind(payload["kind"])
        if payload["kind"] == "finetune":
            _limit_threads(int(payload["threads"]))
        result = kind(payload, reporter, work_dir)
    except MaasError as exc:
        reporter.send("error", code=exc.code, message=exc.message)
        return 1
    except Exception as exc:
        traceback.print_exc()
        reporter.send("error", code="job_failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    reporter.send("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
