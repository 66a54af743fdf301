"""``train``: a scikit-learn model from a spec, scored on a held-out split.

Text classification is TF-IDF plus a linear model in one ``Pipeline``, so the version
takes raw text; tabular tasks fit the named estimator on numeric columns. With
``search``, optuna picks hyperparameters by cross-validation on the training split
only; the held-out split is touched once, for the reported metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maas.jobs.estimators import DEFAULTS, estimator_class
from maas.jobs.kinds.convert import sklearn_to_onnx
from maas.jobs.kinds.data import load_frame
from maas.jobs.kinds.metrics import classification_metrics, regression_metrics
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import SearchSpec, TrainSpec

__all__ = ["run_train"]


def _build(spec: TrainSpec, params: dict[str, Any]) -> Any:
    cls = estimator_class(spec.task, spec.estimator)
    estimator = cls(**params)
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=spec.seed)
    if spec.task != "text_classification":
        return estimator
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    return Pipeline([("tfidf", vectorizer), ("clf", estimator)])


def _suggest(trial: Any, search: SearchSpec) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, space in search.space.items():
        if space.choices is not None:
            params[name] = trial.suggest_categorical(name, space.choices)
        elif space.integer:
            assert space.low is not None and space.high is not None
            params[name] = trial.suggest_int(name, int(space.low), int(space.high), log=space.log)
        else:
            assert space.low is not None and space.high is not None
            params[name] = trial.suggest_float(name, space.low, space.high, log=space.log)
    return params


def _search(spec: TrainSpec, x: Any, y: np.ndarray, report: Reporter) -> dict[str, Any]:
    import optuna
    from sklearn.model_selection import cross_val_score

    assert spec.search is not None
    search = spec.search
    scoring = "r2" if spec.task == "tabular_regression" else "f1_macro"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.seed)
    )

    def objective(trial: Any) -> float:
        params = {**spec.params, **_suggest(trial, search)}
        scores = cross_val_score(_build(spec, params), x, y, cv=search.cv, scoring=scoring)
        return float(np.mean(scores))

    def progress(study: Any, trial: Any) -> None:
        done = len(study.trials)
        report.progress(
            stage="search",
            trial=done,
            n_trials=search.n_trials,
            fraction=round(min(done / search.n_trials, 1.0) * 0.8, 4),
            best_score=round(float(study.best_value), 6),
            message=f"trial {done}: {scoring} {trial.value:.4f}",
        )

    study.optimize(
        objective, n_trials=search.n_trials, timeout=search.timeout_s, callbacks=[progress]
    )
    report.log(f"best {scoring} {study.best_value:.4f} with {study.best_params}")
    return {**spec.params, **study.best_params}


def _split(spec: TrainSpec, x: Any, y: np.ndarray) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    stratify = None
    if spec.task != "tabular_regression":
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= 2:
            stratify = y
    parts = train_test_split(
        x, y, test_size=spec.test_size, random_state=spec.seed, stratify=stratify
    )
    return parts[0], parts[1], parts[2], parts[3]


def _held_out_metrics(spec: TrainSpec, model: Any, x: Any, y: np.ndarray) -> dict[str, float]:
    if spec.task == "tabular_regression":
        return regression_metrics(y.astype(np.float64), model.predict(x))
    scores = None
    if hasattr(model, "predict_proba"):
        scores = model.predict_proba(x)
    elif hasattr(model, "decision_function"):
        scores = model.decision_function(x)
    return classification_metrics(y, model.predict(x), scores, list(model.classes_))


def run_train(payload: dict[str, Any], report: Reporter, work_dir: Path) -> dict[str, Any]:
    spec = TrainSpec.model_validate(payload["spec"])
    inputs = payload["inputs"]
    frame = load_frame(inputs["dataset"])
    features: list[str] | None = inputs.get("features")
    y = frame.target(spec.target)
    if spec.task == "text_classification":
        assert spec.text_column is not None
        x: Any = np.array(frame.texts(spec.text_column), dtype=object)
    else:
        assert features is not None
        x = frame.features(features)
    if spec.task == "tabular_regression":
        y = y.astype(np.float64)
    report.log(
        f"{frame.rows} rows; task {spec.task}; estimator {spec.estimator or DEFAULTS[spec.task]}"
    )
    x_train, x_test, y_train, y_test = _split(spec, x, y)
    params = _search(spec, x_train, y_train, report) if spec.search else dict(spec.params)
    report.progress(stage="fit", fraction=0.85, message=f"fitting on {len(y_train)} rows")
    model = _build(spec, params).fit(x_train, y_train)
    metrics = _held_out_metrics(spec, model, x_test, y_test)
    report.progress(stage="evaluated", fraction=0.95, metrics=metrics)
    report.log("held-out metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    task = "regression" if spec.task == "tabular_regression" else "classification"
    metadata = {
        "task": task,
        "train_task": spec.task,
        "estimator": spec.estimator or DEFAULTS[spec.task],
        "params": {k: v for k, v in params.items() if isinstance(v, str | int | float | bool)},
        "target": spec.target,
        "text_column": spec.text_column,
        "features": features,
        "rows": {"train": len(y_train), "test": len(y_test)},
    }
    from maas.runtimes.sklearn import import_skops

    # Without torch, which a plain import of skops loads for nothing (2 CPU-s, 180 MB).
    import_skops().dump(model, work_dir / "model.skops")
    artifacts: list[dict[str, Any]] = [
        {"file": "model.skops", "metadata": metadata, "metrics": metrics}
    ]
    notes: list[str] = []
    if spec.onnx:
        converted = sklearn_to_onnx(model, x_train, work_dir / "model.onnx")
        if converted is None:
            artifacts.append(
                {
                    "file": "model.onnx",
                    "derived": True,
                    "optional": True,
                    "metadata": {**metadata, "converted_from": "sklearn"},
                }
            )
        else:
            notes.append(f"no ONNX version: {converted}")
            report.log(notes[-1])
    return {
        "artifacts": artifacts,
        "metrics": metrics,
        "dataset": frame.ref,
        "notes": notes or None,
    }
