"""``optimize`` for transformers versions (a model directory packed as ``.tar``).

* ``onnx``: ``torch.onnx.export`` of the encoder with its head in the graph (mean
  pooling and L2 normalisation for an embedder, softmax for a classifier); the ONNX
  version takes the tokenizer's ``input_ids`` and ``attention_mask``.
* ``quantize_int8``: that export, int8-quantized by onnxruntime (the version that is
  registered), and PyTorch's dynamic quantization of the linear layers measured beside
  it in the report (``alternatives``): no runtime loads a quantized PyTorch module
  safely, so it is reported, not registered.
* ``prune``: global magnitude pruning of every linear layer's weights to the target
  sparsity, saved back as a model directory (safetensors) that the transformers
  runtime serves.

Both sides are measured here with the same tokenizer, texts and thread count.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from maas.errors import InvalidSpec
from maas.jobs.kinds.data import Frame, normalise_labels
from maas.jobs.kinds.measure import cosine
from maas.jobs.kinds.metrics import classification_metrics
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import OptimizeSpec
from maas.registry.archives import safe_extract

__all__ = ["run_hf_optimize"]

Predict = Callable[[list[str]], np.ndarray]

_MAX_LENGTH = 128
_BATCH = 32
_MAX_CALLS = 100


def _unpack(path: Path, work_dir: Path) -> Path:
    if path.is_dir():
        return path
    target = work_dir / "source"
    safe_extract(path, target)
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def _modules(model_dir: Path) -> tuple[Any, Any, str, dict[int, str]]:
    """(wrapper module, tokenizer, "classification" | "embeddings", id2label)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])

    class Head(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            if classifier:
                return torch.softmax(out.logits, dim=-1)
            hidden = out[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    loader = AutoModelForSequenceClassification if classifier else AutoModel
    model = loader.from_pretrained(model_dir).eval()
    labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return Head(model).eval(), tokenizer, "classification" if classifier else "embeddings", labels


def _tokens(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    return dict(
        tokenizer(texts, padding=True, truncation=True, max_length=_MAX_LENGTH, return_tensors="pt")
    )


def _torch_predict(module: Any, tokenizer: Any) -> Predict:
    import torch

    def predict(texts: list[str]) -> np.ndarray:
        batch = _tokens(tokenizer, texts)
        with torch.no_grad():
            return np.asarray(module(batch["input_ids"], batch["attention_mask"]).numpy())

    return predict


def _onnx_predict(path: Path, tokenizer: Any, threads: int) -> Predict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(texts: list[str]) -> np.ndarray:
        batch = _tokens(tokenizer, texts)
        feeds = {name: batch[name].numpy() for name in ("input_ids", "attention_mask")}
        return np.asarray(session.run(None, feeds)[0])

    return predict


def _export(module: Any, tokenizer: Any, kind: str, out: Path) -> None:
    import warnings

    import torch

    sample = _tokens(tokenizer, ["a short example", "another one"])
    output = "probabilities" if kind == "classification" else "embedding"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample["input_ids"], sample["attention_mask"]),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                output: {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )


def _prune(module: Any, sparsity: float) -> float:
    import torch
    from torch.nn.utils import prune

    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    targets = [(layer, "weight") for layer in linears]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    for layer, name in targets:
        prune.remove(layer, name)  # type: ignore[no-untyped-call]
    total = sum(layer.weight.numel() for layer in linears)
    zeros = sum(int((layer.weight == 0).sum()) for layer in linears)
    return zeros / total


def _tar_dir(directory: Path, out: Path) -> None:
    with tarfile.open(out, "w") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)


def _latency(predict: Predict, texts: list[str], batch: int, budget_s: float) -> dict[str, float]:
    sample = [texts[i % len(texts)] for i in range(batch)]
    predict(sample)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < _MAX_CALLS and (len(times) < 5 or time.perf_counter() < deadline):
        started = time.perf_counter()
        predict(sample)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 4),
        "p99_ms": round(float(np.percentile(times, 99)), 4),
        "calls": len(times),
    }


def _outputs(predict: Predict, texts: list[str]) -> np.ndarray:
    return np.concatenate([predict(texts[i : i + _BATCH]) for i in range(0, len(texts), _BATCH)])


def _side(predict: Predict, texts: list[str], size: int, budget_s: float) -> dict[str, Any]:
    return {
        "size_bytes": size,
        "outputs": _outputs(predict, texts),
        "latency": {f"batch_{b}": _latency(predict, texts, b, budget_s) for b in (1, 32)},
    }


def _quality(
    kind: str,
    before: np.ndarray,
    after: np.ndarray,
    labels: dict[int, str],
    truth: np.ndarray | None,
) -> dict[str, Any]:
    quality: dict[str, Any] = {"cosine": cosine(before, after)}
    if kind == "classification":
        quality["agreement"] = float(np.mean(before.argmax(1) == after.argmax(1)))
        if truth is not None:
            names = np.array([labels.get(i, str(i)) for i in range(before.shape[1])])
            y_true = normalise_labels(truth)
            classes = list(names)
            b = classification_metrics(y_true, names[before.argmax(1)], before, classes)
            a = classification_metrics(y_true, names[after.argmax(1)], after, classes)
            drop = b["accuracy"] - a["accuracy"]
            return quality | {
                "metric": "accuracy",
                "before": b["accuracy"],
                "after": a["accuracy"],
                "drop": drop,
                "metrics_before": b,
                "metrics_after": a,
            }
        return quality | {"metric": "agreement", "drop": 1.0 - quality["agreement"]}
    return quality | {"metric": "cosine", "drop": 1.0 - quality["cosine"]}


def run_hf_optimize(
    spec: OptimizeSpec,
    source: dict[str, Any],
    frame: Frame,
    work_dir: Path,
    threads: int,
    report: Reporter,
) -> tuple[Path, dict[str, Any]]:
    """Apply ``spec.method`` to a transformers version; the new file and its report."""
    import torch

    torch.set_num_threads(threads)
    if spec.text_column is None:
        raise InvalidSpec("a transformers model takes text: set text_column")
    texts = frame.texts(spec.text_column)
    model_dir = _unpack(Path(source["path"]), work_dir)
    module, tokenizer, kind, labels = _modules(model_dir)
    report.progress(stage="measure", fraction=0.2, message="measuring the source")
    budget = spec.latency_budget_s
    before = _side(_torch_predict(module, tokenizer), texts, int(source["size_bytes"]), budget)
    details: dict[str, Any] = {"model_kind": kind, "inputs": "tokenizer of the parent version"}
    if spec.method == "prune":
        details["sparsity"] = {
            "target": spec.sparsity,
            "achieved": round(_prune(module, spec.sparsity), 4),
        }
        pruned_dir = work_dir / "pruned"
        module.model.save_pretrained(pruned_dir, safe_serialization=True)
        tokenizer.save_pretrained(pruned_dir)
        out = work_dir / "model.pruned.tar"
        _tar_dir(pruned_dir, out)
        predict = _torch_predict(module, tokenizer)
    else:
        fp32 = work_dir / "model.onnx"
        _export(module, tokenizer, kind, fp32)
        out = fp32
        if spec.method == "quantize_int8":
            from maas.jobs.kinds.shrink import onnx_quantize_int8

            out = work_dir / "model.int8.onnx"
            details |= onnx_quantize_int8(fp32, out)
        predict = _onnx_predict(out, tokenizer, threads)
    report.progress(stage="measure", fraction=0.6, message="measuring the result")
    after = _side(predict, texts, out.stat().st_size, budget)
    truth = frame.target(spec.target) if spec.target else None
    quality = _quality(kind, before["outputs"], after["outputs"], labels, truth)
    if spec.method == "quantize_int8":
        details["alternatives"] = {
            "torch_dynamic_int8": _torch_int8(
                module, tokenizer, texts, kind, before, labels, truth, budget
            )
        }
    latency = {
        batch: {"before": before["latency"][batch], "after": after["latency"][batch]}
        for batch in ("batch_1", "batch_32")
    }
    for sides in latency.values():
        b, a = sides["before"]["p50_ms"], sides["after"]["p50_ms"]
        sides["speedup_p50"] = round(b / a, 3) if a else None
    body = {
        **details,
        "size_bytes": {
            "before": before["size_bytes"],
            "after": after["size_bytes"],
            "ratio": round(after["size_bytes"] / before["size_bytes"], 4),
        },
        "latency_ms": latency,
        "quality": quality,
        "quality_drop": round(float(quality["drop"]), 6),
        "dataset": frame.ref,
        "threads": threads,
    }
    return out, body


def _torch_int8(
    module: Any,
    tokenizer: Any,
    texts: list[str],
    kind: str,
    before: dict[str, Any],
    labels: dict[int, str],
    truth: np.ndarray | None,
    budget_s: float,
) -> dict[str, Any]:
    """PyTorch dynamic int8 quantization of the linear layers, measured in memory."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear}, dtype=torch.qint8
        )
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)
    side = _side(_torch_predict(quantized, tokenizer), texts, len(buffer.getvalue()), budget_s)
    quality = _quality(kind, before["outputs"], side["outputs"], labels, truth)
    return {"size_bytes": side["size_bytes"], "latency_ms": side["latency"], "quality": quality}
