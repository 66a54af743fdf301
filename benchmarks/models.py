"""The benchmark models, their request bodies, and their in-process ceilings.

Each model is trained here (iris logistic regression; a 64→512→512→10 MLP on the
digits set) and written as maas pushes it (.skops, .onnx) and as MLServer loads it
(.joblib). The ceiling of a model is what one core does with no HTTP at all: decode a
V2 JSON body, predict and encode the answer, in a loop; and raw ``predict`` at batch 1
and 32, in rows per second. ``run.py`` measures the ceilings in a process of their own
started under ``taskset -c 0``, like the servers (``python models.py SECONDS``, the models
as JSON on stdin), so that the BLAS and onnxruntime thread pools are sized as they are
in a server pinned to one core.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

__all__ = ["BenchModel", "build_models", "ceilings"]


@dataclass(frozen=True)
class BenchModel:
    """One model as each server sees it, and one request row for it."""

    name: str  # the maas model name
    artifact: Path  # what maas is pushed
    row: list[float]
    input_name: str
    datatype: str  # V2 datatype of the input
    #: The outputs maas is asked for (V2 ``outputs``); None for all of them.
    outputs: tuple[str, ...] | None = None

    def body(self, input_name: str | None = None, *, select: bool = True) -> bytes:
        """A V2 JSON request of one row; ``select`` adds the ``outputs`` selection."""
        tensor = {
            "name": input_name or self.input_name,
            "datatype": self.datatype,
            "shape": [1, len(self.row)],
            "data": self.row,
        }
        request: dict[str, object] = {"inputs": [tensor]}
        if select and self.outputs:
            request["outputs"] = [{"name": name} for name in self.outputs]
        return orjson.dumps(request)


def build_models(directory: Path) -> tuple[dict[str, BenchModel], Path]:
    """Train and write the models; returns them and the iris .joblib for MLServer."""
    import joblib
    import skops.io
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits, load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    directory.mkdir(parents=True, exist_ok=True)
    iris_x, iris_y = load_iris(return_X_y=True)
    iris = LogisticRegression(max_iter=1000).fit(iris_x, iris_y)
    skops.io.dump(iris, directory / "iris.skops")
    joblib.dump(iris, directory / "model.joblib")

    digits_x, digits_y = load_digits(return_X_y=True)
    digits_x = digits_x / 16.0
    mlp = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=30, random_state=0)
    mlp.fit(digits_x, digits_y)
    skops.io.dump(mlp, directory / "mlp.skops")
    onnx_model = convert_sklearn(
        mlp,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(mlp): {"zipmap": False}},
    )
    (directory / "mlp.onnx").write_bytes(onnx_model.SerializeToString())

    iris_row = [float(v) for v in iris_x[0]]
    digit_row = [float(v) for v in digits_x[0]]
    models = {
        # Only ``predict``: what MLServer's scikit-learn runtime answers, so both servers
        # do the same model work (``predict_proba`` as well would double it).
        "iris": BenchModel(
            "iris", directory / "iris.skops", iris_row, "input", "FP64", outputs=("predict",)
        ),
        "mlp-sklearn": BenchModel(
            "mlp-sklearn", directory / "mlp.skops", digit_row, "input", "FP64"
        ),
        "mlp-onnx": BenchModel("mlp-onnx", directory / "mlp.onnx", digit_row, "input", "FP32"),
    }
    return models, directory / "model.joblib"


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            fn()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def ceilings(model: BenchModel, seconds: float) -> dict[str, float]:
    """Requests/s of decode+predict+encode, and rows/s of raw predict at batch 1 and 32."""
    from maas.config import LimitSettings
    from maas.protocols.tensors import DecodeLimits
    from maas.protocols.v2 import (
        choose_binary_outputs,
        decode_infer_request,
        encode_infer_response,
    )
    from maas.runtimes.base import LoadOptions
    from maas.runtimes.catalog import load_runtime

    framework = "onnx" if model.artifact.suffix == ".onnx" else "sklearn"
    runtime = load_runtime(framework, model.artifact, LoadOptions())
    limits = DecodeLimits.from_settings(LimitSettings())
    body = model.body()
    dtype = np.float32 if model.datatype == "FP32" else np.float64

    def v2_round_trip() -> None:
        infer = decode_infer_request(body, None, limits)
        requested = [output.name for output in infer.outputs] if infer.outputs else None
        outputs = runtime.predict(infer.inputs, requested)
        encode_infer_response(
            model_name=model.name,
            model_version="1",
            request_id=infer.id,
            outputs=outputs,
            parameters=None,
            binary_outputs=choose_binary_outputs(infer, list(outputs)),
        )

    wanted = list(model.outputs) if model.outputs else None
    one = {model.input_name: np.asarray([model.row], dtype=dtype)}
    batch = {model.input_name: np.repeat(one[model.input_name], 32, axis=0)}
    try:
        return {
            "v2_json": _rate(v2_round_trip, seconds),
            "rows_b1": _rate(lambda: runtime.predict(one, wanted), seconds),
            "rows_b32": 32 * _rate(lambda: runtime.predict(batch, wanted), seconds),
        }
    finally:
        runtime.close()


def main() -> None:
    """``python models.py SECONDS``, a JSON list of models on stdin: their ceilings, as JSON."""
    seconds = float(sys.argv[1])
    result = {}
    for spec in json.loads(sys.stdin.read()):
        model = BenchModel(**{**spec, "artifact": Path(spec["artifact"])})
        result[model.name] = ceilings(model, seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
