"""What of a job process's output is worth a log line.

Libraries write for terminals: colour codes, and warnings that say nothing to the
person following a job (onnxruntime asks for a pre-processing step maas does not
need; transformers prints a table of the classifier head it initialises, which a
fine-tune always does). ``LogCleaner`` sees every line a job logs, in order, at the
one place lines are captured (``JobManager``), and keeps the rest.
"""

from __future__ import annotations

import re

__all__ = ["LogCleaner"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

#: Single lines that are noise wherever they appear.
_NOISE = (
    "Please consider to run pre-processing before quantization",
    "Please consider pre-processing before quantization",
)

#: Rows of a transformers load report that only say a fresh head was initialised.
_REPORT_START = "LOAD REPORT"
_REPORT_ROW = re.compile(r"^\s*([-+| ]+|Key\s*\|.*|.*\|\s*MISSING\s*\|.*|Notes:|- MISSING:.*)$")


class LogCleaner:
    """One per job: a transformers load report spans several lines."""

    def __init__(self) -> None:
        self._in_report = False

    def clean(self, line: str) -> str | None:
        """The line without terminal codes, or ``None`` if it is noise."""
        text = _ANSI.sub("", line).rstrip()
        if not text.strip():
            return None
        if _REPORT_START in text:
            self._in_report = True
            return None
        if self._in_report:
            if _REPORT_ROW.match(text):
                return None
            self._in_report = False  # a row maas does not expect (UNEXPECTED…) stays
        if any(noise in text for noise in _NOISE):
            return None
        return text
