"""``finetune``: a small transformers encoder (MiniLM) fine-tuned for sequence
classification on CPU, for a bounded number of steps.

A plain PyTorch loop rather than ``Trainer``: a handful of CPU steps need no
accelerate, and every step's loss goes straight into the job's progress. The result
is the model directory (safetensors weights, config, tokenizer) packed as a ``.tar``
with the files at its root, the form the transformers runtime loads.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from maas.jobs.kinds.data import load_frame, normalise_labels
from maas.jobs.kinds.metrics import classification_metrics
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import FinetuneSpec

__all__ = ["run_finetune"]

_EVAL_BATCH = 64


def _split(labels: np.ndarray, spec: FinetuneSpec) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    train, test = train_test_split(
        index, test_size=spec.test_size, random_state=spec.seed, stratify=stratify
    )
    return np.asarray(train), np.asarray(test)


def _evaluate(
    model: Any, tokenizer: Any, texts: list[str], ids: np.ndarray, spec: FinetuneSpec
) -> dict[str, float]:
    import torch

    model.eval()
    predictions: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(texts), _EVAL_BATCH):
            batch = tokenizer(
                texts[start : start + _EVAL_BATCH],
                padding=True,
                truncation=True,
                max_length=spec.max_length,
                return_tensors="pt",
            )
            logits = model(**batch).logits
            scores.append(torch.softmax(logits, dim=-1).numpy())
            predictions.append(logits.argmax(dim=-1).numpy())
    model.train()
    n_classes = model.config.num_labels
    return classification_metrics(
        ids, np.concatenate(predictions), np.concatenate(scores), list(range(n_classes))
    )


def run_finetune(payload: dict[str, Any], report: Reporter, work_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = FinetuneSpec.model_validate(payload["spec"])
    inputs = payload["inputs"]
    frame = load_frame(inputs["dataset"])
    texts = frame.texts(spec.text_column)
    labels = normalise_labels(frame.target(spec.target))
    classes = sorted(set(labels.tolist()))
    label_ids = np.array([classes.index(label) for label in labels])
    train, test = _split(labels, spec)
    torch.manual_seed(spec.seed)
    base = inputs["base_dir"]
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        use_safetensors=True,
        trust_remote_code=False,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={label: i for i, label in enumerate(classes)},
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(train)
    cursor = 0
    test_texts = [texts[i] for i in test]
    report.log(f"fine-tuning {base.rsplit('/', 2)[-2]} on {len(train)} rows, {len(classes)} labels")
    losses: list[float] = []
    for step in range(1, spec.max_steps + 1):
        if cursor + spec.batch_size > len(order):
            order, cursor = rng.permutation(train), 0
        rows = order[cursor : cursor + spec.batch_size]
        cursor += spec.batch_size
        batch = tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=spec.max_length,
            return_tensors="pt",
        )
        loss = model(**batch, labels=torch.tensor(label_ids[rows])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.item()))
        update: dict[str, Any] = {
            "stage": "train",
            "step": step,
            "max_steps": spec.max_steps,
            "loss": round(losses[-1], 5),
            "fraction": round(0.9 * step / spec.max_steps, 4),
            "message": f"step {step}/{spec.max_steps} loss {losses[-1]:.4f}",
        }
        if spec.eval_every and step % spec.eval_every == 0 and step < spec.max_steps:
            update["eval"] = _evaluate(model, tokenizer, test_texts, label_ids[test], spec)
        report.progress(**update)
    metrics = _evaluate(model, tokenizer, test_texts, label_ids[test], spec)
    metrics["final_loss"] = losses[-1]
    report.progress(stage="evaluated", fraction=0.95, eval=metrics)
    out_dir = work_dir / "model"
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    archive = work_dir / "model.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(out_dir.iterdir()):
            tar.add(path, arcname=path.name)
    metadata = {
        "task": "classification",
        "train_task": "text_classification",
        "base": spec.base,
        "labels": classes,
        "text_column": spec.text_column,
        "target": spec.target,
        "steps": spec.max_steps,
        "rows": {"train": len(train), "test": len(test)},
    }
    return {
        "artifacts": [{"file": "model.tar", "metadata": metadata, "metrics": metrics}],
        "metrics": metrics,
        "dataset": frame.ref,
    }
