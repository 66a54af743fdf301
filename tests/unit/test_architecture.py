"""The layering of docs/architecture.md, enforced: import-linter and a clean SDK import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sdk_imports_no_server_code() -> None:
    code = (
        "import sys, maas.client;"
        "heavy = {'fastapi', 'sqlalchemy', 'torch', 'sklearn', 'onnxruntime', 'maas.api',"
        " 'maas.registry', 'maas.serving'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_importing_maas_is_cheap() -> None:
    code = "import sys, maas; print(sorted({'numpy', 'fastapi', 'pydantic'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
