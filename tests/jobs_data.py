"""Datasets for the job tests, made here: generated maintenance tickets and
scikit-learn's bundled tables (no downloads)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

__all__ = ["digits_csv", "iris_csv", "tickets_csv", "tickets_rows", "wine_jsonl"]

_TOPICS = {
    "hydraulic": ["pump", "pressure", "leak", "hose", "valve", "oil", "cylinder", "seal"],
    "electrical": ["fuse", "wiring", "voltage", "breaker", "motor", "short", "cable", "relay"],
    "software": ["plc", "firmware", "screen", "login", "update", "crash", "network", "sensor"],
}
_FILLER = [
    "the",
    "machine",
    "line",
    "operator",
    "reported",
    "again",
    "after",
    "shift",
    "near",
    "station",
    "since",
    "morning",
    "urgent",
    "check",
    "please",
]


def tickets_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """Short ticket texts whose label follows from their topic words, with noise."""
    rng = np.random.default_rng(seed)
    labels = list(_TOPICS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = list(rng.choice(_TOPICS[label], size=3)) + list(rng.choice(_FILLER, size=5))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def tickets_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(tickets_rows(n, seed))
    return path


def digits_csv(path: Path, *, labels: bool = True, start: int = 0, stop: int | None = None) -> Path:
    from sklearn.datasets import load_digits

    features, target = load_digits(return_X_y=True)
    features, target = features[start:stop], target[start:stop]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"p{i}" for i in range(features.shape[1])] + (["digit"] if labels else []))
        for row, label in zip(features, target, strict=True):
            writer.writerow([*row.tolist(), *([int(label)] if labels else [])])
    return path


def wine_jsonl(path: Path) -> Path:
    from sklearn.datasets import load_wine

    data = load_wine()
    with path.open("w") as handle:
        for row, label in zip(data.data, data.target, strict=True):
            record = dict(zip(data.feature_names, row.tolist(), strict=True))
            handle.write(json.dumps({**record, "cultivar": int(label)}) + "\n")
    return path


def iris_csv(path: Path) -> Path:
    """scikit-learn's iris table: four measurements and the species (0, 1, 2)."""
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "species"])
        for row, label in zip(data.data, data.target, strict=True):
            writer.writerow([*row.tolist(), int(label)])
    return path
