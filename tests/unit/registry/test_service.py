"""``RegistryService`` on SQLite and PostgreSQL: models, versions, aliases, GC."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.unit.registry.conftest import PushVersion

from maas.errors import (
    AliasNotFound,
    InvalidDeployment,
    InvalidName,
    ModelExists,
    ModelNotFound,
    VersionInUse,
    VersionNotFound,
)
from maas.protocols.bounds import MAX_VERSION
from maas.protocols.management import DeploymentSpec
from maas.protocols.signature import Signature, TensorSpec
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService


def test_create_get_list_delete_model(registry: RegistryService) -> None:
    created = registry.create_model("iris", "flowers", "classification")
    assert (created.name, created.description, created.task) == (
        "iris",
        "flowers",
        "classification",
    )
    assert created.latest_version is None
    registry.create_model("alpha")
    assert registry.get_model("iris") == created
    assert [m.name for m in registry.list_models()] == ["alpha", "iris"]
    registry.delete_model("iris")
    with pytest.raises(ModelNotFound):
        registry.get_model("iris")
    assert [m.name for m in registry.list_models()] == ["alpha"]


def test_duplicate_model_is_a_conflict(registry: RegistryService) -> None:
    registry.create_model("iris")
    with pytest.raises(ModelExists) as caught:
        registry.create_model("iris")
    assert caught.value.status == 409


def test_invalid_model_name_is_refused(registry: RegistryService) -> None:
    with pytest.raises(InvalidName):
        registry.create_model("../etc")


def test_unknown_model_is_model_not_found(registry: RegistryService) -> None:
    with pytest.raises(ModelNotFound):
        registry.get_version("nope")
    with pytest.raises(ModelNotFound):
        registry.delete_model("nope")


def test_version_numbers_are_never_reused(registry: RegistryService, push: PushVersion) -> None:
    assert [push("iris", b"a"), push("iris", b"b")] == [1, 2]
    registry.delete_version("iris", 2)
    assert push("iris", b"c") == 3
    assert [v.version for v in registry.list_versions("iris")] == [1, 3]
    assert registry.get_model("iris").latest_version == 3


def test_get_version_selectors(registry: RegistryService, push: PushVersion) -> None:
    for content in (b"a", b"b", b"c"):
        push("iris", content)
    assert registry.get_version("iris").version == 3  # no production alias: the latest
    assert registry.get_version("iris", "latest").version == 3
    assert registry.get_version("iris", 1).version == 1
    registry.set_alias("iris", "production", 2)
    registry.set_alias("iris", "staging", 1)
    assert registry.get_version("iris").version == 2  # the production alias
    assert registry.get_version("iris", "staging").version == 1
    assert registry.get_version("iris", "latest").version == 3


@pytest.mark.parametrize(
    ("selector", "error"), [(9, VersionNotFound), ("beta", AliasNotFound), ("latest", None)]
)
def test_get_version_unknown_selector(
    registry: RegistryService, selector: int | str, error: type[Exception] | None
) -> None:
    registry.create_model("empty")
    with pytest.raises(error or VersionNotFound):
        registry.get_version("empty", selector)
    with pytest.raises(VersionNotFound):
        registry.get_version("empty")


@pytest.mark.parametrize("number", [0, -1, MAX_VERSION + 1, 2**63, 10**30])
def test_numbers_outside_the_version_range_are_versions_not_found(
    registry: RegistryService, push: PushVersion, number: int
) -> None:
    """Past 2**31 - 1 PostgreSQL's INTEGER overflows, past 2**63 SQLite's: such a number
    is answered like any number that has no version, by every method that takes one."""
    push("iris")
    calls = [
        lambda: registry.get_version("iris", number),
        lambda: registry.set_alias("iris", "production", number),
        lambda: registry.delete_version("iris", number),
        lambda: registry.update_deployment("iris", number, DeploymentSpec()),
        lambda: registry.merge_metrics("iris", number, {"accuracy": 1.0}),
    ]
    for call in calls:
        with pytest.raises(VersionNotFound, match="has no version"):
            call()
    assert registry.get_version("iris", 1).aliases == []  # nothing was changed


def test_set_alias_moves(registry: RegistryService, push: PushVersion) -> None:
    push("iris", b"a")
    push("iris", b"b")
    assert registry.set_alias("iris", "production", 1).version == 1
    assert registry.set_alias("iris", "production", 2).version == 2
    assert [(a.alias, a.version) for a in registry.list_aliases("iris")] == [("production", 2)]
    assert registry.get_version("iris", 2).aliases == ["production"]
    assert registry.get_version("iris", 1).aliases == []
    assert registry.get_model("iris").aliases == {"production": 2}


def test_set_alias_refuses_bad_names_and_versions(
    registry: RegistryService, push: PushVersion
) -> None:
    push("iris")
    for alias in ("latest", "7", "Prod"):
        with pytest.raises(InvalidName):
            registry.set_alias("iris", alias, 1)
    with pytest.raises(VersionNotFound):
        registry.set_alias("iris", "production", 2)


def test_delete_alias(registry: RegistryService, push: PushVersion) -> None:
    push("iris")
    registry.set_alias("iris", "production", 1)
    registry.delete_alias("iris", "production")
    assert registry.list_aliases("iris") == []
    with pytest.raises(AliasNotFound):
        registry.delete_alias("iris", "production")


def test_deleting_an_aliased_version_names_the_aliases(
    registry: RegistryService, push: PushVersion
) -> None:
    push("iris")
    registry.set_alias("iris", "production", 1)
    registry.set_alias("iris", "canary", 1)
    with pytest.raises(VersionInUse) as caught:
        registry.delete_version("iris", 1)
    assert caught.value.status == 409
    assert caught.value.details == {"aliases": ["canary", "production"]}
    assert "canary" in caught.value.message
    assert registry.get_version("iris", 1).version == 1


def test_artifact_is_collected_only_when_unreferenced(
    registry: RegistryService, store: ArtifactStore, push: PushVersion
) -> None:
    push("iris", b"shared")
    push("other", b"shared")
    push("iris", b"own")
    shared, own = registry.get_version("iris", 1).digest, registry.get_version("iris", 2).digest
    registry.delete_version("iris", 2)
    assert not store.exists(own)
    assert not registry.digest_in_use(own)
    registry.delete_model("iris")
    assert store.exists(shared)  # "other" still uses it
    assert registry.digest_in_use(shared)
    registry.delete_model("other")
    assert not store.exists(shared)


def test_aliased_versions(registry: RegistryService, push: PushVersion) -> None:
    push("iris", b"a")
    push("iris", b"b")
    push("wine", b"c")
    assert registry.aliased_versions() == []
    registry.set_alias("iris", "production", 1)
    registry.set_alias("iris", "canary", 1)
    registry.set_alias("wine", "production", 1)
    found = {(v.model, v.version): v.aliases for v in registry.aliased_versions()}
    assert found == {("iris", 1): ["canary", "production"], ("wine", 1): ["production"]}


def test_update_deployment(registry: RegistryService, push: PushVersion) -> None:
    push("iris")
    before = registry.get_version("iris", 1)
    spec = DeploymentSpec(max_batch_size=8, instances=2)
    updated = registry.update_deployment("iris", 1, spec)
    assert updated.deployment == spec
    again = registry.get_version("iris", 1)
    assert again.deployment == spec
    assert (again.digest, again.signature) == (before.digest, before.signature)
    with pytest.raises(VersionNotFound):
        registry.update_deployment("iris", 5, spec)


def _version_with_input_shape(
    registry: RegistryService, store: ArtifactStore, shape: list[int]
) -> int:
    with store.writer() as writer:
        writer.write(b"model bytes")
        artifact = writer.commit()
    tensor = TensorSpec(name="x", datatype="FP32", shape=shape)
    signature = Signature(inputs=[tensor], outputs=[tensor])
    info = registry.create_version(
        "m", artifact=artifact, filename="m.onnx", framework="onnx", signature=signature
    )
    return info.version


def test_update_deployment_refuses_specs_the_version_cannot_serve(
    registry: RegistryService, store: ArtifactStore
) -> None:
    any_rows = _version_with_input_shape(registry, store, [-1, 4])
    one_row = _version_with_input_shape(registry, store, [1, 4])
    with pytest.raises(InvalidDeployment) as past_max:
        registry.update_deployment(
            "m", any_rows, DeploymentSpec(max_batch_size=8, preferred_batch_sizes=[4, 16])
        )
    assert past_max.value.details["preferred_batch_sizes"] == [16]
    with pytest.raises(ValidationError):  # no batch has 0 rows: the schema refuses it
        DeploymentSpec(preferred_batch_sizes=[0])
    with pytest.raises(InvalidDeployment) as fixed:
        registry.update_deployment("m", one_row, DeploymentSpec(max_batch_size=8))
    assert fixed.value.details == {"input": "x", "shape": [1, 4]}
    assert registry.get_version("m", one_row).deployment == DeploymentSpec()  # unchanged
    # What the model can do is accepted: batching on any rows, no batching on fixed rows.
    batched = DeploymentSpec(max_batch_size=8, preferred_batch_sizes=[4, 8])
    assert registry.update_deployment("m", any_rows, batched).deployment == batched
    alone = DeploymentSpec(max_batch_size=1, instances=2)
    assert registry.update_deployment("m", one_row, alone).deployment == alone


def test_create_version_records_what_it_was_given(
    registry: RegistryService, store: ArtifactStore
) -> None:
    from maas.protocols.signature import Signature, TensorSpec

    artifact = store.put_file(_file(store, b"xyz"))
    signature = Signature(inputs=[TensorSpec(name="input", datatype="FP64", shape=[-1, 4])])
    info = registry.create_version(
        "iris",
        artifact=artifact,
        filename="iris.onnx",
        framework="onnx",
        signature=signature,
        metadata={"team": "a"},
        lineage={"parent": "x:1"},
        created_by="alice",
    )
    assert info == registry.get_version("iris", 1)
    assert (info.digest, info.size_bytes, info.framework) == (artifact.digest, 3, "onnx")
    assert (info.signature, info.metadata, info.created_by) == (signature, {"team": "a"}, "alice")


def _file(store: ArtifactStore, content: bytes) -> Path:
    path = store.root / "upload.bin"
    path.write_bytes(content)
    return path
