"""What a scikit-learn job loads: never torch, which importing skops plainly loads
(through scikit-learn's array-API shim) for 2 CPU-s and 180 MB per job process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

_TRAIN = """
import io, json, sys
from pathlib import Path
from maas.jobs.kinds.train import run_train
from maas.jobs.reporter import Reporter
payload = json.loads(sys.argv[1])
result = run_train(payload, Reporter(io.StringIO()), Path(sys.argv[2]))
files = [artifact["file"] for artifact in result["artifacts"]]
print(json.dumps({"torch": "torch" in sys.modules, "files": files}))
"""

_PRUNE = """
import json, sys
from pathlib import Path
from maas.jobs.kinds.shrink import sklearn_prune
sklearn_prune(Path(sys.argv[1]), 0.5, Path(sys.argv[2]))
print(json.dumps({"torch": "torch" in sys.modules}))
"""


def _run(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_a_training_job_writes_its_skops_file_without_torch(tmp_path: Path) -> None:
    features, labels = load_iris(return_X_y=True)
    csv = tmp_path / "iris.csv"
    rows = [",".join(["a", "b", "c", "d", "species"])]
    rows += [
        ",".join([*map(str, row), str(label)]) for row, label in zip(features, labels, strict=True)
    ]
    csv.write_text("\n".join(rows) + "\n")
    spec = {
        "kind": "train",
        "model": "iris",
        "dataset": "iris",
        "task": "tabular_classification",
        "target": "species",
        "estimator": "logistic_regression",
        "params": {"max_iter": 300},
        "onnx": False,
    }
    payload = {
        "spec": spec,
        "inputs": {
            "dataset": {"path": str(csv), "format": "csv", "name": "iris", "digest": "sha256:0"},
            "features": list("abcd"),
        },
    }
    work = tmp_path / "work"
    work.mkdir()
    answer = _run(_TRAIN, json.dumps(payload), str(work))
    assert answer == {"torch": False, "files": ["model.skops"]}
    assert (work / "model.skops").stat().st_size > 0


def test_pruning_a_scikit_learn_model_loads_no_torch(tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=300).fit(*load_iris(return_X_y=True))
    source = tmp_path / "iris.skops"
    skops.io.dump(model, source)
    assert _run(_PRUNE, str(source), str(tmp_path / "pruned.skops")) == {"torch": False}
    assert (tmp_path / "pruned.skops").stat().st_size > 0
