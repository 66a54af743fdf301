"""``optimize`` for transformers versions: sentence embedders and text classifiers.

Every result is a drop-in replacement of its source, served with the same signature
and task (``text`` in; embeddings, or labels and probabilities, out):

* ``onnx``: ``torch.onnx.export`` of the encoder (its last hidden state, or the
  classifier's logits), packed as an ONNX text model (``maas.runtimes.hf.onnx_text``)
  with the source's tokenizer, longest input, pooling and normalisation or labels, all
  read from the runtime that serves the source.
* ``quantize_int8``: that export, int8-quantized by onnxruntime (the version that is
  registered), and PyTorch's dynamic quantization of the linear layers measured beside
  it in the report (``alternatives``): no runtime loads a quantized PyTorch module
  safely, so it is reported, not registered.
* ``prune``: global magnitude pruning of every linear layer's weights to the target
  sparsity, saved back as a model directory (safetensors) with the source's tokenizer
  and sentence-transformers files (pooling, normalisation, longest input).

Source, result and alternative are measured by ``build_report`` through the runtimes
that serve them, on the same texts with the same thread count, so the numbers are
what a caller gets.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maas.errors import InvalidSpec
from maas.jobs.kinds.data import Frame
from maas.jobs.kinds.measure import load
from maas.jobs.kinds.optimize import Candidate, build_report
from maas.jobs.kinds.shrink import onnx_quantize_int8
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import OptimizeSpec
from maas.registry.archives import safe_extract
from maas.runtimes.base import Runtime
from maas.runtimes.hf.classifier import TextClassifierRuntime
from maas.runtimes.hf.embedder import EmbeddingRuntime
from maas.runtimes.hf.loading import EMBEDDINGS
from maas.runtimes.hf.onnx_text import MANIFEST, MODEL_FILE, TOKENIZER_FILE, TextManifest

__all__ = ["export_onnx_text", "rebuild_onnx_text", "run_hf_optimize"]

ServedText = EmbeddingRuntime | TextClassifierRuntime

#: sentence-transformers files that say how an embedder pools, normalises and truncates.
_SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_ONNX_FILES = {"onnx": "model.onnx.tar", "quantize_int8": "model.int8.onnx.tar"}
_OPSET = 17


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
    served = _served(load("transformers", Path(source["path"]), threads, work_dir))
    model, tokenizer = _pretrained(served)
    alternatives: dict[str, Candidate] = {}
    if spec.method == "prune":
        framework, out = "transformers", work_dir / "model.pruned.tar"
        details = _prune(model, tokenizer, served.model_dir, spec.sparsity, work_dir / "pruned")
        _pack(work_dir / "pruned", out)
    else:
        framework, out = "onnx-text", work_dir / _ONNX_FILES[spec.method]
        details = _export_onnx_text(model, tokenizer, served, spec.method, work_dir)
        _pack(work_dir / "onnx-text", out)
        if spec.method == "quantize_int8":
            alternatives["torch_dynamic_int8"] = _torch_int8(model, tokenizer, served)
    report.progress(stage="measure", fraction=0.4, message="measuring the source and the result")
    body = build_report(
        Candidate(served, int(source["size_bytes"])),
        Candidate(load(framework, out, threads, work_dir), out.stat().st_size),
        frame,
        target=spec.target,
        text_column=spec.text_column,
        features=None,
        task=None,
        threads=threads,
        report=report,
        latency_budget_s=spec.latency_budget_s,
        alternatives=alternatives,
    )
    return out, {"model_kind": served.task, **details, **body}


def export_onnx_text(model_dir: Path, work_dir: Path, threads: int = 1) -> Path:
    """A transformers embedder or text classifier directory exported as an ONNX text
    model directory (``work_dir/onnx-text``), served as its source is: what an
    ``optimize`` job's ``onnx`` method registers, for callers outside a job (the demo
    exports its embedder once so that serving it needs no torch)."""
    import torch

    torch.set_num_threads(threads)
    served = _served(load("transformers", model_dir, threads, work_dir))
    model, tokenizer = _pretrained(served)
    _export_onnx_text(model, tokenizer, served, "onnx", work_dir)
    return work_dir / "onnx-text"


def _served(runtime: Runtime) -> ServedText:
    if not isinstance(runtime, EmbeddingRuntime | TextClassifierRuntime):
        raise InvalidSpec(
            "optimize takes transformers embedders and text classifiers, "
            f"not a {getattr(runtime, 'task', 'other')} model"
        )
    return runtime


def _pretrained(served: ServedText) -> tuple[Any, Any]:
    """The source's model and tokenizer as torch modules, loaded the safe way."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    loader = AutoModel if served.task == EMBEDDINGS else AutoModelForSequenceClassification
    tokenizer = AutoTokenizer.from_pretrained(served.model_dir, trust_remote_code=False)
    model = loader.from_pretrained(
        served.model_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
    )
    return model.eval(), tokenizer


def _pack(directory: Path, out: Path) -> None:
    """A model directory as a tar with its files at the root, as uploads carry it."""
    with tarfile.open(out, "w") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)


# -- ONNX --------------------------------------------------------------------------------


def _manifest(served: ServedText) -> TextManifest:
    """How the source is served, for the ONNX text runtime to serve the same way."""
    if isinstance(served, EmbeddingRuntime):
        pooling = served.pooling
        return TextManifest(EMBEDDINGS, pooling.max_tokens, pooling, served.dimensions)
    return TextManifest(served.task, served.max_tokens, labels=list(served.labels))


def _export_onnx_text(
    model: Any, tokenizer: Any, served: ServedText, method: str, work_dir: Path
) -> dict[str, Any]:
    """``work_dir/onnx-text``: the manifest, the tokenizer, and the (quantized) export."""
    if not tokenizer.is_fast:
        raise InvalidSpec("ONNX export needs the model's fast tokenizer (tokenizer.json)")
    directory = work_dir / "onnx-text"
    directory.mkdir()
    _manifest(served).write(directory)
    tokenizer.backend_tokenizer.save(str(directory / TOKENIZER_FILE))
    details: dict[str, Any] = {"exporter": "torch.onnx.export", "opset": _OPSET}
    if method == "quantize_int8":
        exported = work_dir / "export.onnx"
        _export(model, tokenizer, served.task == EMBEDDINGS, exported)
        details |= onnx_quantize_int8(exported, directory / MODEL_FILE)
    else:
        _export(model, tokenizer, served.task == EMBEDDINGS, directory / MODEL_FILE)
    return details


def _export(model: Any, tokenizer: Any, hidden_state: bool, out: Path) -> None:
    """The encoder as ONNX: token ids and mask in; the last hidden state (an embedder:
    the runtime pools it) or the logits (a classifier) out."""
    import torch

    class Encoder(torch.nn.Module):  # type: ignore[misc]  # torch is not followed
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            output = self.model(input_ids=input_ids, attention_mask=attention_mask)
            result: torch.Tensor = output.last_hidden_state if hidden_state else output.logits
            return result

    name = "last_hidden_state" if hidden_state else "logits"
    sample = tokenizer(["a short example", "another one"], padding=True, return_tensors="pt")
    tokens = {0: "batch", 1: "tokens"}
    axes = {"input_ids": tokens, "attention_mask": tokens, name: tokens}
    if not hidden_state:
        axes[name] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder().eval(),
            (sample["input_ids"], sample["attention_mask"]),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=[name],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )


def rebuild_onnx_text(
    source: Path, out: Path, work_dir: Path, transform: Callable[[Path, Path], dict[str, Any]]
) -> dict[str, Any]:
    """An ONNX text model with ``transform`` (quantization, pruning) applied to its graph;
    tokenizer and manifest carried over unchanged."""
    unpacked, rebuilt = work_dir / "source", work_dir / "rebuilt"
    safe_extract(source, unpacked)
    rebuilt.mkdir()
    for name in (MANIFEST, TOKENIZER_FILE):
        shutil.copyfile(unpacked / name, rebuilt / name)
    details = transform(unpacked / MODEL_FILE, rebuilt / MODEL_FILE)
    _pack(rebuilt, out)
    return details


# -- PyTorch -----------------------------------------------------------------------------


def _prune(
    model: Any, tokenizer: Any, source_dir: Path, sparsity: float, out_dir: Path
) -> dict[str, Any]:
    import torch
    from torch.nn.utils import prune

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    targets = [(layer, "weight") for layer in linears]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    for layer, name in targets:
        prune.remove(layer, name)
    total = sum(layer.weight.numel() for layer in linears)
    zeros = sum(int((layer.weight == 0).sum()) for layer in linears)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _copy_sentence_config(source_dir, out_dir)
    return {"sparsity": {"target": sparsity, "achieved": round(zeros / total, 4)}}


def _copy_sentence_config(source: Path, target: Path) -> None:
    """The source's sentence-transformers files: without them the pruned embedder would
    be served with default pooling and the encoder's own longest input."""
    for name in _SENTENCE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    modules_file = source / "modules.json"
    if not modules_file.is_file():
        return
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    root = source.resolve()
    for module in modules if isinstance(modules, list) else []:
        folder = str(module.get("path", "")) if isinstance(module, dict) else ""
        inner = (source / folder).resolve()
        if not folder or not inner.is_dir() or not inner.is_relative_to(root):
            continue
        (target / folder).mkdir(parents=True, exist_ok=True)
        for file in inner.glob("*.json"):
            shutil.copyfile(file, target / folder / file.name)


def _torch_int8(model: Any, tokenizer: Any, served: ServedText) -> Candidate:
    """PyTorch dynamic int8 quantization of the linear layers, served in memory by the
    source's runtime class; its size is that of its saved state dict."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)
    runtime: Runtime
    if isinstance(served, EmbeddingRuntime):
        runtime = EmbeddingRuntime(quantized, tokenizer, served.model_dir, served.pooling)
    else:
        runtime = TextClassifierRuntime(quantized, tokenizer, served.model_dir)
    return Candidate(runtime, len(buffer.getvalue()))
