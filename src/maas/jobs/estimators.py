"""The scikit-learn estimators a training spec may name, by short name.

A closed list, not import paths: a spec comes from a caller, and naming an arbitrary
class would let it run arbitrary constructors on the server.
"""

from __future__ import annotations

import importlib
from typing import Any

from maas.errors import InvalidSpec

__all__ = ["DEFAULTS", "ESTIMATORS", "estimator_class", "valid_params"]

_CLASSIFIERS = {
    "logistic_regression": "sklearn.linear_model:LogisticRegression",
    "sgd_classifier": "sklearn.linear_model:SGDClassifier",
    "linear_svc": "sklearn.svm:LinearSVC",
    "complement_nb": "sklearn.naive_bayes:ComplementNB",
    "random_forest": "sklearn.ensemble:RandomForestClassifier",
    "gradient_boosting": "sklearn.ensemble:GradientBoostingClassifier",
    "hist_gradient_boosting": "sklearn.ensemble:HistGradientBoostingClassifier",
    "decision_tree": "sklearn.tree:DecisionTreeClassifier",
    "knn": "sklearn.neighbors:KNeighborsClassifier",
    "svc": "sklearn.svm:SVC",
    "mlp": "sklearn.neural_network:MLPClassifier",
}
_REGRESSORS = {
    "linear_regression": "sklearn.linear_model:LinearRegression",
    "ridge": "sklearn.linear_model:Ridge",
    "lasso": "sklearn.linear_model:Lasso",
    "random_forest": "sklearn.ensemble:RandomForestRegressor",
    "gradient_boosting": "sklearn.ensemble:GradientBoostingRegressor",
    "hist_gradient_boosting": "sklearn.ensemble:HistGradientBoostingRegressor",
    "decision_tree": "sklearn.tree:DecisionTreeRegressor",
    "knn": "sklearn.neighbors:KNeighborsRegressor",
    "svr": "sklearn.svm:SVR",
    "mlp": "sklearn.neural_network:MLPRegressor",
}
_TEXT = ("logistic_regression", "sgd_classifier", "linear_svc", "complement_nb")

ESTIMATORS: dict[str, dict[str, str]] = {
    "text_classification": {name: _CLASSIFIERS[name] for name in _TEXT},
    "tabular_classification": _CLASSIFIERS,
    "tabular_regression": _REGRESSORS,
}
DEFAULTS = {
    "text_classification": "logistic_regression",
    "tabular_classification": "random_forest",
    "tabular_regression": "ridge",
}


def estimator_class(task: str, name: str | None) -> type[Any]:
    choices = ESTIMATORS[task]
    name = name or DEFAULTS[task]
    if name not in choices:
        raise InvalidSpec(
            f"unknown estimator {name!r} for {task}; choose one of {', '.join(sorted(choices))}",
            details={"estimators": sorted(choices)},
        )
    module, _, cls = choices[name].partition(":")
    found: type[Any] = getattr(importlib.import_module(module), cls)
    return found


def valid_params(cls: type[Any], params: dict[str, Any] | list[str]) -> None:
    """Refuse hyperparameter names the estimator does not have (before a job starts)."""
    known = set(cls().get_params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidSpec(
            f"{cls.__name__} has no parameter {unknown[0]!r}",
            details={"unknown": unknown, "parameters": sorted(known)},
        )
