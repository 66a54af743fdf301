"""What a ``.skops`` file may hold, and the checks that make its contents safe to run.

skops trusts, by default, plain data, numpy arrays and ufuncs, and scikit-learn's
public estimators. A file may hold other types only if they are listed in
``REVIEWED_TYPES``: classes that fitted models of the kinds maas trains or serves
need, each of which constructs no code and calls nothing named in the file. No
function is on the list. A name skops reports is never trusted for its module
prefix alone: ``sklearn.datasets.dump_svmlight_file`` is a scikit-learn name too,
and a ``FunctionTransformer`` holding it would write files at ``predict``.

Some reviewed classes hold raw indices that scikit-learn's compiled code follows
without bounds checks (skops refuses trees by default for that reason): a crafted
file could make ``predict`` read outside its arrays. ``check_structures`` walks the
loaded object and refuses any such index that does not stay inside its array or
that could loop, any sparse matrix whose indices are out of range, and any text
vectorizer set to open the strings it is given as files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from maas.errors import UntrustedArtifact

__all__ = ["REVIEWED_TYPES", "check_structures"]

#: Beyond skops' defaults; each entry names the models that need it.
REVIEWED_TYPES = frozenset(
    {
        # DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*, IsolationForest,
        # AdaBoost and Bagging over trees: the node storage (checked below).
        "sklearn.tree._tree.Tree",
        # HistGradientBoosting*: one predictor per tree (checked below).
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # KNeighbors*, NearestNeighbors, RadiusNeighbors*: the search trees and the
        # distance metrics that need no weight arrays but Minkowski's (checked below).
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        # MLP*: the solver state kept after fit (numbers and arrays, used only by fit).
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        # SimpleImputer, KBinsDiscretizer and others keep a dtype.
        "numpy.dtype",
        # SVC/SVR and neighbours fitted on sparse input (TF-IDF) keep sparse
        # matrices; loaded by scipy without pickle, indices checked below.
        "scipy.sparse._csr.csr_matrix",
        "scipy.sparse._csc.csc_matrix",
        "scipy.sparse._csr.csr_array",
        "scipy.sparse._csc.csc_array",
        # Plain containers: VotingClassifier and Stacking* keep a Bunch (a dict).
        "sklearn.utils._bunch.Bunch",
        "collections.OrderedDict",
    }
)

_TREE_OWNER_ATTRS = ("tree_", "estimators_", "_predictors", "_tree")
_SAFE_METRICS = frozenset(
    {"EuclideanDistance64", "ManhattanDistance64", "ChebyshevDistance64", "MinkowskiDistance64"}
)


def _refuse(what: str) -> UntrustedArtifact:
    return UntrustedArtifact(f"the .skops file holds {what}; it may be crafted, refusing to load")


def _width(obj: Any) -> int | None:
    """``n_features_in_``, the input width an estimator checks at predict, if it has one."""
    try:
        width = getattr(obj, "n_features_in_", None)
    except Exception:  # a property over a crafted attribute
        return None
    return width if isinstance(width, int) and not isinstance(width, bool) else None


def _check_children(left: np.ndarray, right: np.ndarray, internal: np.ndarray) -> bool:
    """Every internal node's children lie after it and inside the array: in range and
    free of loops (scikit-learn numbers a parent before its children)."""
    index = np.arange(len(left))[internal]
    count = len(left)
    for child in (left[internal].astype(np.int64), right[internal].astype(np.int64)):
        if np.any(child <= index) or np.any(child >= count):
            return False
    return True


def _check_tree(tree: Any, width: int | None) -> None:
    """``sklearn.tree._tree.Tree``: ``apply`` follows child ids and reads ``X[:, feature]``."""
    if width is None:
        raise _refuse("a decision tree whose input width is unknown")
    if not 0 < tree.node_count <= tree.capacity:
        raise _refuse("a decision tree whose node count exceeds its storage")
    nodes = tree.__getstate__()["nodes"]
    left, right, feature = nodes["left_child"], nodes["right_child"], nodes["feature"]
    leaf = left == -1
    internal = ~leaf
    limit = min(width, int(tree.n_features))
    if (
        np.any(right[leaf] != -1)
        or not _check_children(left, right, internal)
        or np.any(feature[internal] < 0)
        or np.any(feature[internal] >= limit)
    ):
        raise _refuse("a decision tree with node or feature indices out of range")


def _check_predictor(predictor: Any, width: int | None) -> None:
    """``TreePredictor`` (HistGradientBoosting): the same walk over a record array."""
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = predictor.nodes
    if width is None:
        raise _refuse("a boosted tree whose input width is unknown")
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE:
        raise _refuse("a boosted tree with malformed nodes")
    if nodes.ndim != 1 or len(nodes) == 0:
        raise _refuse("a boosted tree with malformed nodes")
    internal = nodes["is_leaf"] == 0
    feature = nodes["feature_idx"][internal]
    if np.any(nodes["is_categorical"][internal] != 0):
        # Categorical splits index bitsets through the owner's category maps too;
        # a model with them needs functions skops does not trust, so none is genuine.
        raise _refuse("a boosted tree with categorical splits")
    if (
        not _check_children(nodes["left"], nodes["right"], internal)
        or np.any(feature < 0)
        or np.any(feature >= width)
    ):
        raise _refuse("a boosted tree with node or feature indices out of range")


def _check_binary_tree(tree: Any) -> None:
    """``KDTree``/``BallTree``: a heap of nodes over index ranges into ``data``."""
    state = tree.__getstate__()
    data, idx_array, node_data, node_bounds = state[0], state[1], state[2], state[3]
    n_nodes, metric = state[6], state[11]
    if data.ndim != 2 or node_bounds.ndim != 3 or idx_array.ndim != 1:
        raise _refuse("a neighbour search tree with malformed arrays")
    n_samples, n_features = data.shape
    needed_bounds = 2 if type(tree).__name__ == "KDTree" else 1
    if (
        not isinstance(n_nodes, int)
        or not 0 < n_nodes <= min(len(node_data), node_bounds.shape[1])
        or node_bounds.shape[0] < needed_bounds
        or node_bounds.shape[2] != n_features
        or len(idx_array) != n_samples
        or np.any(idx_array < 0)
        or np.any(idx_array >= n_samples)
    ):
        raise _refuse("a neighbour search tree with sizes that do not match")
    nodes = node_data[:n_nodes]
    start, end = nodes["idx_start"], nodes["idx_end"]
    internal = np.flatnonzero(nodes["is_leaf"] == 0)
    if (
        np.any(start < 0)
        or np.any(end < start)
        or np.any(end > n_samples)
        or np.any(2 * internal + 2 >= n_nodes)
    ):
        raise _refuse("a neighbour search tree with indices out of range")
    _check_metric(metric, n_features)


def _check_metric(metric: Any, n_features: int) -> None:
    if type(metric).__name__ not in _SAFE_METRICS:
        raise _refuse(f"a distance metric maas does not accept ({type(metric).__name__})")
    if type(metric).__name__ != "MinkowskiDistance64":
        return  # the others read no array of their own
    weights = np.asarray(metric.__getstate__()[1])
    if weights.ndim != 1 or weights.size not in (0, n_features):  # optional, per feature
        raise _refuse("a distance metric whose weights do not match the data")


def _check_sparse(matrix: Any) -> None:
    if matrix.format not in ("csr", "csc"):
        raise _refuse(f"a sparse matrix in a format maas does not accept ({matrix.format})")
    try:
        matrix.check_format(full_check=True)
    except (ValueError, TypeError):
        raise _refuse("a sparse matrix with indices out of range") from None


_LEAVES = (str, bytes, int, float, bool, type(None), np.generic)


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """The objects ``obj`` holds: ``("", item)`` for a container's items, ``(name,
    value)`` for an object's attributes; plain values are left out."""
    if isinstance(obj, np.ndarray):
        items: Any = obj.ravel() if obj.dtype == object else ()
    elif isinstance(obj, list | tuple | set | frozenset):
        items = obj
    elif isinstance(obj, dict):
        items = (item for pair in obj.items() for item in pair)
    else:
        attrs = vars(obj) if hasattr(obj, "__dict__") else {}
        yield from ((k, v) for k, v in attrs.items() if not isinstance(v, _LEAVES))
        return
    yield from (("", item) for item in items if not isinstance(item, _LEAVES))


def _check_reads_no_files(obj: Any) -> None:
    """A text vectorizer with ``input="filename"`` (or ``"file"``) opens each string it
    is given as a path: a caller could make ``predict`` read any file on the server."""
    attrs = vars(obj) if hasattr(obj, "__dict__") else {}
    if attrs.get("input", "content") != "content" and hasattr(obj, "build_analyzer"):
        raise _refuse(f"a {type(obj).__name__} that reads its input from files")


def _member_width(obj: Any, inherited: int | None, via_members: bool) -> int | None:
    """The input width ``obj`` is called with: its own, held to its ensemble's."""
    attrs = vars(obj) if hasattr(obj, "__dict__") else {}
    own = _width(obj) if attrs else None
    if own is None:
        if any(name in attrs for name in _TREE_OWNER_ATTRS):
            # Without it scikit-learn skips the width check at predict.
            raise _refuse(f"a fitted {type(obj).__name__} without n_features_in_")
        return inherited
    return min(own, inherited) if via_members and inherited is not None else own


def check_structures(estimator: Any) -> None:
    """Refuse (``UntrustedArtifact``) a loaded model whose trees, search trees or sparse
    matrices hold indices that would make ``predict`` read outside their arrays.

    Input widths flow down ``estimators_``: an ensemble hands its own validated input
    to its members, so a member's trees are held to the smaller of the two widths.
    """
    import scipy.sparse
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree._tree import Tree

    seen: set[int] = set()
    stack: list[tuple[Any, int | None, bool]] = [(estimator, None, False)]
    while stack:
        obj, width, via_members = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            _check_tree(obj, width)
        elif isinstance(obj, TreePredictor):
            _check_predictor(obj, width)
        elif isinstance(obj, KDTree | BallTree):
            _check_binary_tree(obj)
        elif scipy.sparse.issparse(obj):
            _check_sparse(obj)
        else:
            _check_reads_no_files(obj)
            width = _member_width(obj, width, via_members)
            for name, child in _children(obj):
                stack.append((child, width, via_members if not name else name == "estimators_"))
