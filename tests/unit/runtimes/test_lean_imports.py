"""What a server process imports to serve scikit-learn models: nothing it does not use.

Each check runs in a fresh interpreter, since this one has imported everything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from maas.errors import MissingExtra
from maas.runtimes import catalog


def _modules_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    script = (
        f"{code}\nimport sys\nprint(' '.join(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_finding_the_sklearn_runtime_does_not_import_scikit_learn() -> None:
    loaded = _modules_after(
        "from maas.runtimes.catalog import runtime_class\nruntime_class('sklearn')"
    )
    assert "sklearn" not in loaded
    assert "maas" in loaded


def test_skops_comes_without_torch_and_pandas() -> None:
    loaded = _modules_after("from maas.runtimes.sklearn import import_skops\nimport_skops()")
    assert {"skops", "sklearn"} <= loaded
    assert not {"torch", "pandas", "pyarrow"} & loaded


def test_pandas_imported_before_skops_stays_usable() -> None:
    loaded = _modules_after(
        "import pandas\nfrom maas.runtimes.sklearn import import_skops\nimport_skops()\n"
        "import sklearn.utils.fixes as f\nassert f.pd is pandas"
    )
    assert "pandas" in loaded


def test_a_runtime_whose_package_is_absent_names_its_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = catalog._Entry("maas.runtimes.sklearn", "SklearnRuntime", "nothing", ("no_such_pkg",))
    monkeypatch.setitem(catalog._RUNTIMES, "absent", entry)
    with pytest.raises(MissingExtra) as raised:
        catalog.runtime_class("absent")
    assert "nothing" in raised.value.message


def test_a_worker_reading_skops_holds_no_test_or_console_libraries() -> None:
    """pytest (where installed), rich and charset_normalizer come with scikit-learn's
    import and serve no prediction: a scikit-learn worker process is spared them."""
    loaded = _modules_after("from maas.runtimes.sklearn import import_skops\nimport_skops()")
    assert "sklearn" in loaded
    assert not {"pytest", "_pytest", "rich", "charset_normalizer"} & loaded
