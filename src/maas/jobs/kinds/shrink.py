"""The optimization methods themselves: file in, file out, plus what was done.

ONNX conversion (skl2onnx), int8 dynamic quantization (onnxruntime's quantizer: int8
weights, activations quantized per call) and global magnitude pruning (the smallest
weights of all weight matrices set to zero until the target sparsity is reached).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from maas.errors import InvalidSpec

__all__ = [
    "check_quantizable",
    "onnx_prune",
    "onnx_quantize_int8",
    "sklearn_prune",
    "sklearn_to_onnx_file",
]


def _threshold(weights: list[np.ndarray], sparsity: float) -> float:
    magnitudes = np.concatenate([np.abs(w).ravel() for w in weights])
    return float(np.quantile(magnitudes, sparsity))


def _achieved(weights: list[np.ndarray]) -> float:
    total = sum(w.size for w in weights)
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
    return zeros / total if total else 0.0


def sklearn_to_onnx_file(source: Path, sample: Any, out: Path) -> dict[str, Any]:
    from maas.jobs.kinds.convert import sklearn_to_onnx
    from maas.runtimes.sklearn import load_estimator

    model = load_estimator(source, trust_pickle=False)
    failure = sklearn_to_onnx(model, sample, out)
    if failure is not None:
        raise InvalidSpec(failure)
    return {"converter": "skl2onnx"}


def sklearn_prune(source: Path, sparsity: float, out: Path) -> dict[str, Any]:
    """Prune ``coef_`` (linear models) or ``coefs_`` (MLPs); intercepts stay."""
    from maas.runtimes.sklearn import import_skops, load_estimator

    model = load_estimator(source, trust_pickle=False)  # imports skops without torch
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if hasattr(final, "coefs_"):
        weights = [np.asarray(w) for w in final.coefs_]
        cut = _threshold(weights, sparsity)
        final.coefs_ = [np.where(np.abs(w) <= cut, 0.0, w) for w in weights]
        pruned = list(final.coefs_)
    elif hasattr(final, "coef_"):
        weight = np.asarray(final.coef_)
        cut = _threshold([weight], sparsity)
        final.coef_ = np.where(np.abs(weight) <= cut, 0.0, weight)
        pruned = [final.coef_]
    else:
        raise InvalidSpec(
            f"{type(final).__name__} has no weight matrices to prune; "
            "prune needs a linear model or an MLP"
        )
    import_skops().dump(model, out, compression=zipfile.ZIP_DEFLATED)
    return {"sparsity": {"target": sparsity, "achieved": round(_achieved(pruned), 4)}}


def check_quantizable(source: Path) -> None:
    """Refuse a graph in which onnxruntime's dynamic quantizer has nothing to do.

    It quantizes default-domain operators (MatMul, Conv, Gather, …) and skips the
    ``ai.onnx.ml`` ones skl2onnx writes for linear models and trees (LinearClassifier,
    TreeEnsemble…), whose weights are attributes. A graph of those only would come out
    unchanged, so the job is refused with the reason instead.
    """
    try:
        import onnx
        from onnxruntime.quantization.registry import IntegerOpsRegistry
    except ImportError:  # the job itself will say what is missing
        return
    graph = onnx.load(str(source), load_external_data=False).graph
    default = {n.op_type for n in graph.node if n.domain in ("", "ai.onnx")}
    if default & set(IntegerOpsRegistry):
        return
    others = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")})
    raise InvalidSpec(
        "quantize_int8 has nothing to quantize in this model: onnxruntime quantizes "
        f"{', '.join(sorted(IntegerOpsRegistry))} weights, and this graph has "
        f"{', '.join(others[:8]) or 'none of them'} (ai.onnx.ml operators keep their "
        "weights as attributes). Use method prune on the scikit-learn version, or serve "
        "this one as it is",
        details={"operators": others[:20]},
    )


def _one_opset_per_domain(model: Any) -> bool:
    """skl2onnx may import the default opset twice; onnxruntime's quantizer then fails
    ('Failed to find proper ai.onnx domain'). Keep the highest version of each domain."""
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        versions[domain] = max(versions.get(domain, 0), opset.version)
    if len(versions) == len(model.opset_import):
        return False
    del model.opset_import[:]
    for domain, version in versions.items():
        model.opset_import.add(domain=domain, version=version)
    return True


def onnx_quantize_int8(source: Path, out: Path) -> dict[str, Any]:
    """int8 weights for the operators onnxruntime quantizes; ai.onnx.ml ones are kept."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    check_quantizable(source)
    model = onnx.load(str(source))
    model_input: Any = model if _one_opset_per_domain(model) else str(source)
    try:
        quantize_dynamic(model_input, str(out), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise InvalidSpec(
            f"onnxruntime could not quantize this model ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    return {"quantizer": "onnxruntime.quantize_dynamic", "weight_type": "int8"}


def onnx_prune(source: Path, sparsity: float, out: Path) -> dict[str, Any]:
    """Prune the float weight matrices that feed MatMul and Gemm nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weight_names = {
        node.input[1]
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1
    }
    targets = [
        init
        for init in graph.initializer
        if init.name in weight_names
        and len(init.dims) >= 2
        and init.data_type == onnx.TensorProto.FLOAT
    ]
    if not targets:
        raise InvalidSpec("the ONNX model has no float weight matrices to prune")
    arrays = [numpy_helper.to_array(init) for init in targets]
    cut = _threshold(arrays, sparsity)
    pruned = []
    for init, array in zip(targets, arrays, strict=True):
        new = np.where(np.abs(array) <= cut, 0, array).astype(array.dtype)
        init.CopyFrom(numpy_helper.from_array(new, init.name))
        pruned.append(new)
    onnx.save(model, str(out))
    return {"sparsity": {"target": sparsity, "achieved": round(_achieved(pruned), 4)}}
