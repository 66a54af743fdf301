"""``Reporter``: how a job process talks to its server, one JSON object per line.

The job's real stdout is kept for these messages only; ``sys.stdout`` is pointed at
stderr, so whatever a library prints becomes a log line instead of breaking the
protocol.
"""

from __future__ import annotations

import json
import threading
from typing import Any, TextIO

__all__ = ["Reporter"]


def _default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class Reporter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: str, **data: Any) -> None:
        line = json.dumps({"type": kind, **data}, default=_default)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def progress(self, **data: Any) -> None:
        """Progress so far; ``fraction`` (0-1) and ``message`` drive the CLI's bar."""
        self.send("progress", **data)

    def log(self, line: str) -> None:
        self.send("log", line=line)
