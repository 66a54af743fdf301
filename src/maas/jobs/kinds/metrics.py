"""The task metrics a job reports: accuracy, macro F1 and ROC AUC; R² and MAE."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["classification_metrics", "regression_metrics"]


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None = None, classes: Any = None
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
    }
    if scores is not None and classes is not None:
        classes = list(classes)
        present = set(y_true.tolist())
        try:
            if len(classes) == 2 and present <= set(classes):
                positive = np.asarray([value == classes[1] for value in y_true])
                score = scores[:, 1] if scores.ndim == 2 else scores
                metrics["roc_auc"] = float(roc_auc_score(positive, score))
            elif len(classes) > 2 and present == set(classes) and scores.ndim == 2:
                probabilities = scores / np.clip(scores.sum(axis=1, keepdims=True), 1e-12, None)
                metrics["roc_auc"] = float(
                    roc_auc_score(y_true, probabilities, multi_class="ovr", labels=classes)
                )
        except ValueError:  # one class only in the held-out split
            pass
    return metrics


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score

    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
    }
