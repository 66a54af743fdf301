"""scikit-learn → ONNX with skl2onnx: the conversion training and ``optimize`` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["sklearn_to_onnx"]


def sklearn_to_onnx(model: Any, sample: Any, out: Path) -> str | None:
    """Write ``model`` as ONNX to ``out``; ``None`` on success, else why it is not possible.

    Text pipelines take a [N, 1] string tensor named ``text``; tabular models a
    [N, features] float tensor named ``input``. Classifiers output ``label`` and
    ``probabilities`` tensors (no ZipMap, which V2 cannot carry).
    """
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError:
        return "skl2onnx is not installed (the [onnx] extra)"
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if isinstance(sample, np.ndarray) and sample.dtype == object:
        initial = [("text", StringTensorType([None, 1]))]
    else:
        initial = [("input", FloatTensorType([None, int(np.asarray(sample).shape[1])]))]
    options = {id(final): {"zipmap": False}} if hasattr(final, "classes_") else None
    try:
        onnx_model = convert_sklearn(model, initial_types=initial, options=options)
    except Exception as exc:  # skl2onnx raises many kinds for unsupported pieces
        return (
            f"{type(final).__name__} cannot be converted ({type(exc).__name__}: {str(exc)[:160]})"
        )
    _portable_locale(onnx_model)
    out.write_bytes(onnx_model.SerializeToString())
    problem = _check_loads(out)
    if problem is not None:
        out.unlink(missing_ok=True)
    return problem


def _portable_locale(model: Any) -> None:
    """onnxruntime's StringNormalizer defaults to en_US.UTF-8, which slim machines lack;
    lowercasing ASCII tokens needs no more than C.UTF-8, which glibc always has."""
    from onnx.helper import make_attribute

    for node in model.graph.node:
        if node.op_type == "StringNormalizer" and not any(
            a.name == "locale" for a in node.attribute
        ):
            node.attribute.append(make_attribute("locale", "C.UTF-8"))


def _check_loads(path: Path) -> str | None:
    """``None`` if onnxruntime opens the converted file, else why not."""
    try:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        return f"onnxruntime cannot load the conversion ({str(exc).splitlines()[0][:160]})"
    return None
