"""One lock for importing and first-loading the big frameworks (torch, keras).

torch's package is not safe to import from two threads at once: pushes inspected side
by side (each in its own thread) had one thread find ``torch._dynamo`` half-initialised
(``KeyError``) while another imported ``torch.export``, and keras, importing torch
underneath, failed the same way. torch also imports modules lazily on a model's first
load and first call. The runtimes built on torch (PyTorch, Keras) hold this lock while
they import, load and run a model's first call; later calls run without it.
"""

from __future__ import annotations

import threading

__all__ = ["FRAMEWORK_IMPORT"]

#: Reentrant: a runtime's load imports under it, then calls what imports again.
FRAMEWORK_IMPORT = threading.RLock()
