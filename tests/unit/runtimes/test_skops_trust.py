"""What a ``.skops`` file may hold: real models load, functions and crafted indices do not.

The crafted models are real fitted models whose index arrays were changed before
saving, as an attacker would; none is ever run in this process.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.datasets
import skops.io
from sklearn.ensemble import (
    BaggingClassifier,
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
    VotingClassifier,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from tests.unit.runtimes import trained

from maas.errors import UntrustedArtifact
from maas.jobs.estimators import ESTIMATORS, estimator_class
from maas.runtimes.sklearn import load_estimator

TEXTS = np.array(["good film", "bad plot", "great cast", "awful script"] * 6, dtype=object)
SENTIMENT = np.array(["pos", "neg"] * 12)


def _load(model: Any, tmp_path: Path) -> Any:
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    return load_estimator(path, trust_pickle=False)


def _job_model(task: str, name: str) -> Any:
    """A model as ``maas.jobs.kinds.train`` builds it (text: TF-IDF then the estimator)."""
    features, labels = trained.iris()
    estimator = estimator_class(task, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence on a tiny set is not the point
        if task == "text_classification":
            vectorizer = TfidfVectorizer(ngram_range=(1, 2))
            return Pipeline([("tfidf", vectorizer), ("clf", estimator)]).fit(TEXTS, SENTIMENT)
        if task == "tabular_regression":
            return estimator.fit(features[:, :3], features[:, 3])
        return estimator.fit(features, labels)


@pytest.mark.parametrize(
    ("task", "name"), [(task, name) for task, names in ESTIMATORS.items() for name in names]
)
def test_every_model_a_train_job_makes_loads_and_predicts(
    tmp_path: Path, task: str, name: str
) -> None:
    model = _job_model(task, name)
    loaded = _load(model, tmp_path)
    features, _ = trained.iris()
    sample = TEXTS[:4] if task == "text_classification" else features[:4, :3]
    if task == "tabular_classification":
        sample = features[:4]
    np.testing.assert_array_equal(loaded.predict(sample), model.predict(sample))


@pytest.mark.parametrize(
    "model",
    [
        VotingClassifier([("tree", DecisionTreeClassifier()), ("forest", ExtraTreesClassifier(3))]),
        StackingClassifier(
            [
                ("tree", DecisionTreeClassifier()),
                ("ball", KNeighborsClassifier(algorithm="ball_tree")),
            ],
            final_estimator=RandomForestClassifier(3),
        ),
        BaggingClassifier(DecisionTreeClassifier(), n_estimators=3, max_features=2),
        make_pipeline(SimpleImputer(), StandardScaler(), KNeighborsClassifier(p=3)),
        make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=500)),
    ],
    ids=["voting", "stacking", "bagging-subspace", "imputer-minkowski", "log1p"],
)
def test_common_tabular_models_load(tmp_path: Path, model: Any) -> None:
    features, labels = trained.iris()
    model.fit(features, labels)
    np.testing.assert_array_equal(_load(model, tmp_path).predict(features), model.predict(features))


def test_svc_on_sparse_text_loads(tmp_path: Path) -> None:
    model = make_pipeline(TfidfVectorizer(), SVC()).fit(TEXTS, SENTIMENT)
    np.testing.assert_array_equal(_load(model, tmp_path).predict(TEXTS), model.predict(TEXTS))


def test_a_scikit_learn_function_is_refused_and_never_runs(tmp_path: Path) -> None:
    """The audit's exploit: ``dump_svmlight_file`` is in ``sklearn.``, not trusted."""
    features, labels = trained.iris()
    target = tmp_path / "written-by-predict"
    dump = FunctionTransformer(
        sklearn.datasets.dump_svmlight_file, kw_args={"f": str(target), "y": labels}
    )
    model = Pipeline([("dump", dump.fit(features)), ("clf", trained.iris_classifier())])
    with pytest.raises(UntrustedArtifact) as caught:
        _load(model, tmp_path)
    assert caught.value.details["types"] == [
        "sklearn.datasets._svmlight_format_io.dump_svmlight_file"
    ]
    assert not target.exists()


def test_a_vectorizer_that_opens_files_is_refused(tmp_path: Path) -> None:
    model = make_pipeline(TfidfVectorizer(input="filename"), LogisticRegression())
    model.steps[0][1].set_params(input="content").fit(TEXTS)  # fitted, then switched
    model.steps[1][1].fit(model.steps[0][1].transform(TEXTS), SENTIMENT)
    model.steps[0][1].set_params(input="filename")
    with pytest.raises(UntrustedArtifact, match="reads its input from files"):
        _load(model, tmp_path)


def _forest() -> RandomForestClassifier:
    features, labels = trained.iris()
    return RandomForestClassifier(n_estimators=2, random_state=0).fit(features, labels)


def _set_tree_nodes(tree: Any, field: str, value: int) -> None:
    state = tree.__getstate__()
    state["nodes"][field][0] = value
    tree.__setstate__(state)


@pytest.mark.parametrize(
    ("field", "value"),
    [("left_child", 10_000), ("right_child", 0), ("feature", 4), ("feature", -5)],
    ids=["child-out-of-range", "child-loops", "feature-past-input", "negative-feature"],
)
def test_a_tree_with_crafted_indices_is_refused(tmp_path: Path, field: str, value: int) -> None:
    forest = _forest()
    _set_tree_nodes(forest.estimators_[1].tree_, field, value)
    with pytest.raises(UntrustedArtifact, match="decision tree"):
        _load(forest, tmp_path)


def test_a_member_tree_is_held_to_its_ensembles_input_width(tmp_path: Path) -> None:
    """A tree may not index past the ensemble's input even if its own estimator claims
    more features: the forest hands its validated input to it unchecked."""
    forest = _forest()
    member = forest.estimators_[0]
    member.n_features_in_ = 9
    _set_tree_nodes(member.tree_, "feature", 6)
    with pytest.raises(UntrustedArtifact, match="out of range"):
        _load(forest, tmp_path)


def test_a_boosted_tree_with_crafted_indices_is_refused(tmp_path: Path) -> None:
    features, labels = trained.iris()
    model = HistGradientBoostingClassifier(max_iter=3).fit(features, labels)
    model._predictors[0][0].nodes["left"][0] = 1_000_000
    with pytest.raises(UntrustedArtifact, match="boosted tree"):
        _load(model, tmp_path)


def test_a_neighbour_tree_with_crafted_indices_is_refused(tmp_path: Path) -> None:
    features, labels = trained.iris()
    model = KNeighborsClassifier(algorithm="kd_tree").fit(features, labels)
    state = list(model._tree.__getstate__())
    state[1] = state[1].copy()
    state[1][0] = 1_000_000  # idx_array: a row of data that does not exist
    model._tree.__setstate__(tuple(state))
    with pytest.raises(UntrustedArtifact, match="neighbour search tree"):
        _load(model, tmp_path)


def test_a_sparse_matrix_with_crafted_indices_is_refused(tmp_path: Path) -> None:
    model = make_pipeline(TfidfVectorizer(), SVC()).fit(TEXTS, SENTIMENT)
    model.steps[1][1].support_vectors_.indices[0] = 1_000_000
    with pytest.raises(UntrustedArtifact, match="sparse matrix"):
        _load(model, tmp_path)
