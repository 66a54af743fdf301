"""PyTorch programs: torch.export archives and TorchScript run as torch runs them;
torch.save pickles are refused, trusted or not, and so are archives that would make
torch.export.load or torch.jit.load run code."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests import framework_models as fm

from maas.errors import InvalidInput, UnsupportedArtifact, UntrustedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime

DECLARED = Signature.model_validate(fm.TORCHSCRIPT_SIGNATURE)


def test_an_exported_program_reads_its_signature_with_a_dynamic_batch(tmp_path: Path) -> None:
    path = fm.write_export(tmp_path / "mlp.pt2")
    info = inspect_artifact(path, "model.bin", trust_pickle=False)  # by content
    assert info.framework == "torch-export"
    assert info.signature.inputs == [TensorSpec(name="input", datatype="FP32", shape=[-1, 4])]
    assert info.signature.outputs == [TensorSpec(name="output", datatype="FP32", shape=[-1, 3])]


@pytest.mark.parametrize("rows", [1, 7, 150])
def test_an_exported_program_predicts_what_torch_predicts(tmp_path: Path, rows: int) -> None:
    path = fm.write_export(tmp_path / "mlp.pt2")
    runtime = load_runtime("torch-export", path, LoadOptions(threads=1))
    features = fm.iris()[0][:rows]
    result = runtime.predict({"input": features})["output"]
    np.testing.assert_allclose(result, fm.torch_predict(features), rtol=1e-5, atol=1e-6)


def test_a_static_export_keeps_its_batch_size(tmp_path: Path) -> None:
    path = fm.write_export(tmp_path / "mlp.pt2", dynamic=False)
    info = inspect_artifact(path, "mlp.pt2", trust_pickle=False)
    assert info.signature.inputs[0].shape == [5, 4]


def test_torchscript_runs_with_the_signature_declared_at_push(tmp_path: Path) -> None:
    path = fm.write_torchscript(tmp_path / "mlp.pt")
    info = inspect_artifact(path, "mlp.pt", trust_pickle=False, declared=DECLARED)
    assert (info.framework, info.signature) == ("torchscript", DECLARED)
    runtime = load_runtime("torchscript", path, LoadOptions(threads=1, signature=DECLARED))
    features = fm.iris()[0][:9]
    result = runtime.predict({"features": features})["logits"]
    np.testing.assert_allclose(result, fm.torch_predict(features), rtol=1e-5, atol=1e-6)


def test_torchscript_without_a_declared_signature_says_how_to_declare_one(
    tmp_path: Path,
) -> None:
    path = fm.write_torchscript(tmp_path / "mlp.pt")
    with pytest.raises(UnsupportedArtifact, match='"signature"') as caught:
        inspect_artifact(path, "mlp.pt", trust_pickle=False)
    assert caught.value.status == 400


def test_a_declared_signature_the_model_does_not_match_is_a_400(tmp_path: Path) -> None:
    path = fm.write_torchscript(tmp_path / "mlp.pt")
    wrong = DECLARED.model_copy(
        update={"outputs": [TensorSpec(name="labels", datatype="INT64", shape=[-1])]}
    )
    with pytest.raises(UnsupportedArtifact, match="outputs are not the ones"):
        inspect_artifact(path, "mlp.pt", trust_pickle=False, declared=wrong)


def test_a_declared_input_the_model_cannot_take_is_a_400_at_push(tmp_path: Path) -> None:
    path = fm.write_torchscript(tmp_path / "mlp.pt")
    wrong = DECLARED.model_copy(
        update={"inputs": [TensorSpec(name="features", datatype="FP32", shape=[-1, 5])]}
    )
    with pytest.raises(UnsupportedArtifact, match="does not run on inputs of its signature"):
        inspect_artifact(path, "mlp.pt", trust_pickle=False, declared=wrong)


def test_a_batch_the_program_cannot_take_is_a_400(tmp_path: Path) -> None:
    path = fm.write_export(tmp_path / "mlp.pt2", dynamic=False)
    runtime = load_runtime("torch-export", path, LoadOptions(threads=1))
    with pytest.raises(InvalidInput):
        runtime.run_checked({"input": np.zeros((3, 4), np.float32)}, ["output"])


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_state_dict_is_refused_trusted_or_not_with_the_way_out(
    tmp_path: Path, trust: bool, legacy: bool
) -> None:
    import torch

    path = tmp_path / "weights.pth"
    torch.save(fm.torch_mlp().state_dict(), str(path), _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsupportedArtifact) as caught:
        inspect_artifact(path, "weights.pth", trust_pickle=trust)
    message = caught.value.message
    assert "torch.export" in message and "onnx" in message and "state dict" in message
    assert caught.value.status == 400


def _rewrite(path: Path, member: str, edit: object) -> Path:
    """A copy of the archive with one member's JSON changed by ``edit``."""
    target = path.with_name("tampered.pt2")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as sink:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(member):
                document = json.loads(data)
                edit(document)  # type: ignore[operator]
                data = json.dumps(document).encode()
            sink.writestr(info, data)
    return target


def _nodes(document: dict[str, object]) -> list[dict[str, object]]:
    return document["graph_module"]["graph"]["nodes"]  # type: ignore[index,no-any-return]


def _target(document: dict[str, object]) -> None:
    _nodes(document)[0]["target"] = "torch.hub.load"


def _expression(document: dict[str, object]) -> None:
    values = document["graph_module"]["graph"]["tensor_values"]  # type: ignore[index]
    values["input"]["sizes"][0]["as_expr"]["expr_str"] = "__import__('os').getpid()"


def _file_op(document: dict[str, object]) -> None:
    _nodes(document)[0]["target"] = "torch.ops.aten.from_file.default"


@pytest.mark.parametrize("edit", [_target, _expression, _file_op])
def test_an_archive_that_would_run_code_is_refused_before_torch_reads_it(
    tmp_path: Path, edit: object
) -> None:
    path = _rewrite(fm.write_export(tmp_path / "mlp.pt2"), "models/model.json", edit)
    with pytest.raises(UntrustedArtifact) as caught:
        inspect_artifact(path, "tampered.pt2", trust_pickle=True)
    assert caught.value.status == 422


def test_a_pickled_weight_that_is_not_a_tensor_is_refused(tmp_path: Path) -> None:
    path = fm.write_export(tmp_path / "mlp.pt2")
    target = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as sink:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                config["config"]["0.weight"]["use_pickle"] = True
                data = json.dumps(config).encode()
            elif info.filename.endswith("data/weights/weight_0"):
                data = (
                    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06getpid\x93)R."
                )
            sink.writestr(info, data)
    with pytest.raises(UntrustedArtifact, match="not plain tensors"):
        inspect_artifact(target, "tampered.pt2", trust_pickle=True)


def test_torchscript_that_reads_files_is_refused(tmp_path: Path) -> None:
    import torch

    class Reader(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.from_file("/etc/hostname", size=1, dtype=torch.uint8).float()

    path = tmp_path / "reader.pt"
    torch.jit.save(torch.jit.script(Reader()), str(path))
    with pytest.raises(UntrustedArtifact, match="from_file"):
        inspect_artifact(path, "reader.pt", trust_pickle=True, declared=DECLARED)


@pytest.mark.parametrize("writer", [fm.write_export, fm.write_torchscript])
def test_a_truncated_program_is_a_400(tmp_path: Path, writer: object) -> None:
    path = writer(tmp_path / "mlp.pt2")  # type: ignore[operator]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedArtifact) as caught:
        inspect_artifact(path, "mlp.pt2", trust_pickle=False, declared=DECLARED)
    assert caught.value.status == 400
