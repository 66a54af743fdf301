"""Keras 3 ``.keras`` files on the torch backend: signature from the model's inputs,
predictions as Keras makes them; Lambda layers refused."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests import framework_models as fm

from maas.errors import UnsupportedArtifact, UntrustedArtifact
from maas.protocols.signature import TensorSpec
from maas.registry.archives import is_archive
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime


def test_a_keras_file_reads_its_signature_from_the_model_inputs(tmp_path: Path) -> None:
    path = fm.write_keras(tmp_path / "mlp.keras")
    assert not is_archive(path)  # a zip with a config.json, but no model directory
    info = inspect_artifact(path, "model.bin", trust_pickle=False)  # by content
    assert info.framework == "keras"
    assert info.signature.inputs == [TensorSpec(name="features", datatype="FP32", shape=[-1, 4])]
    assert info.signature.outputs == [TensorSpec(name="output", datatype="FP32", shape=[-1, 3])]


@pytest.mark.parametrize("rows", [1, 9])
def test_a_keras_model_predicts_what_keras_predicts(tmp_path: Path, rows: int) -> None:
    path = fm.write_keras(tmp_path / "mlp.keras")
    runtime = load_runtime("keras", path, LoadOptions(threads=1))
    features = fm.iris()[0][:rows]
    result = runtime.predict({"features": features})["output"]
    np.testing.assert_allclose(result, fm.keras_predict(features), rtol=1e-5, atol=1e-6)


def test_a_lambda_layer_is_refused_as_code(tmp_path: Path) -> None:
    path = fm.write_keras_lambda(tmp_path / "lambda.keras")
    with pytest.raises(UntrustedArtifact, match="Lambda") as caught:
        inspect_artifact(path, "lambda.keras", trust_pickle=True)
    assert (caught.value.status, caught.value.code) == (422, "untrusted_artifact")


def test_a_damaged_keras_file_is_a_400(tmp_path: Path) -> None:
    path = fm.write_keras(tmp_path / "mlp.keras")
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, b"not hdf5" if name == "model.weights.h5" else data)
    with pytest.raises(UnsupportedArtifact, match=r"not a loadable \.keras file") as caught:
        inspect_artifact(path, "mlp.keras", trust_pickle=False)
    assert caught.value.status == 400


def test_the_runtime_chooses_the_torch_backend_whatever_the_environment_says(
    tmp_path: Path,
) -> None:
    """A server started with another KERAS_BACKEND (jax, not installed here) still
    loads Keras models: the runtime sets torch before it first imports keras."""
    path = fm.write_keras(tmp_path / "mlp.keras")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from maas.runtimes.base import LoadOptions\n"
        "from maas.runtimes.catalog import load_runtime\n"
        "runtime = load_runtime('keras', Path(sys.argv[1]), LoadOptions(threads=1))\n"
        "import keras\n"
        "print(keras.backend.backend(), runtime.signature.inputs[0].name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        timeout=120,
        check=False,
    )
    assert result.stdout.split() == ["torch", "features"], result.stderr[-2000:]
