"""One contract for every runtime: load, signature, batches of 1 and N, outputs, close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests import framework_models
from tests.unit.runtimes import trained

from maas.protocols.signature import Signature
from maas.protocols.tensors import DATATYPES
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.catalog import load_runtime

TORCHSCRIPT = Signature.model_validate(framework_models.TORCHSCRIPT_SIGNATURE)

# (framework, fixture with the file, load options)
CASES = [
    ("sklearn", "iris_skops", LoadOptions()),
    ("sklearn", "species_skops", LoadOptions()),
    ("sklearn", "regressor_skops", LoadOptions()),
    ("pickle", "iris_pickle", LoadOptions(trust_pickle=True)),
    ("onnx", "iris_onnx", LoadOptions(threads=1)),
    ("onnx", "species_onnx", LoadOptions(threads=1)),
    ("xgboost", "iris_xgboost", LoadOptions(threads=1)),
    ("lightgbm", "iris_lightgbm", LoadOptions(threads=1)),
    ("torch-export", "mlp_export", LoadOptions(threads=1)),
    ("torchscript", "mlp_torchscript", LoadOptions(threads=1, signature=TORCHSCRIPT)),
    ("keras", "mlp_keras", LoadOptions(threads=1)),
]


@pytest.fixture(params=CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    framework, fixture, options = request.param
    path: Path = request.getfixturevalue(fixture)
    return load_runtime(framework, path, options)


def batch(runtime: Runtime, rows: int) -> dict[str, np.ndarray]:
    features, _ = trained.iris()
    result = {}
    for spec in runtime.signature.inputs:
        width = spec.shape[1] if len(spec.shape) > 1 else features.shape[1]
        result[spec.name] = features[:rows, :width].astype(DATATYPES[spec.datatype])
    return result


def test_signature_describes_tensors(runtime: Runtime) -> None:
    assert runtime.signature.inputs
    assert runtime.signature.outputs
    for spec in [*runtime.signature.inputs, *runtime.signature.outputs]:
        assert spec.datatype in DATATYPES
        assert spec.shape[0] == -1  # rows along the first axis, any count


@pytest.mark.parametrize("rows", [1, 7, 150])
def test_one_row_out_per_row_in_with_the_declared_datatypes(runtime: Runtime, rows: int) -> None:
    outputs = runtime.predict(batch(runtime, rows))
    assert set(outputs) == {spec.name for spec in runtime.signature.outputs}
    for spec in runtime.signature.outputs:
        value = outputs[spec.name]
        assert value.shape[0] == rows
        assert len(value.shape) == len(spec.shape)
        assert value.dtype == DATATYPES[spec.datatype], spec.name


def test_requested_outputs_only(runtime: Runtime) -> None:
    for spec in runtime.signature.outputs:
        assert list(runtime.predict(batch(runtime, 3), [spec.name])) == [spec.name]


def test_close_is_safe(runtime: Runtime) -> None:
    runtime.predict(batch(runtime, 2))
    runtime.close()


def test_onnx_sessions_use_the_cpus_this_process_may_run_on(tmp_path: Path) -> None:
    """onnxruntime's own default counts the machine's cores and pins its threads to
    them, escaping taskset and container CPU sets."""
    import os

    from tests.unit.runtimes import trained

    from maas.runtimes.onnx import open_session

    path = trained.write_onnx(trained.iris_classifier(), tmp_path / "iris.onnx")
    session = open_session(path)
    allowed = len(os.sched_getaffinity(0))
    assert session.get_session_options().intra_op_num_threads == allowed
    assert open_session(path, threads=1).get_session_options().intra_op_num_threads == 1
