"""Demo models exported once, in a child process: the torch they need stays out of the
server, which serves the ONNX result with onnxruntime.

The demo's image classifier (``maas.services.vision_demo``) and sentence embedder
(``maas.services.embedder_demo``) come as PyTorch weights. Exporting them imports
torch (about 180 MB and, on a small machine, seconds), which a server that imported it
would keep for nothing, and pay again at every restart were it to serve the weights
themselves. So each export runs at the first demo start as ``python -m MODULE ARGS``,
and its failure (logged) only leaves that demo model out or served another way.
"""

from __future__ import annotations

import asyncio
import logging
import sys

__all__ = ["run_export"]

log = logging.getLogger("maas.demo")


async def run_export(name: str, module: str, *args: str) -> bool:
    """Run ``python -m module args`` to the end; whether it succeeded (its output is
    logged when it did not)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await child.communicate()
    if child.returncode != 0:
        log.warning(
            "demo model %s: its export failed:\n%s", name, output.decode(errors="replace")[-2000:]
        )
        return False
    return True
