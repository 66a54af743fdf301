"""Job specs: the wire schema refuses what cannot run, before anything queues."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from maas.errors import InvalidSpec
from maas.jobs.estimators import estimator_class, valid_params
from maas.protocols.jobs import OptimizeSpec, TrainSpec, job_spec_adapter

_TEXT = {
    "kind": "train",
    "model": "m",
    "dataset": "d",
    "task": "text_classification",
    "target": "label",
    "text_column": "text",
}


def test_kind_selects_the_spec_and_defaults_fill_in() -> None:
    spec = job_spec_adapter().validate_python(_TEXT)
    assert isinstance(spec, TrainSpec) and spec.test_size == 0.2 and spec.onnx
    optimize = job_spec_adapter().validate_python(
        {"kind": "optimize", "model": "m", "dataset": "d", "method": "prune"}
    )
    assert isinstance(optimize, OptimizeSpec) and optimize.version == "latest"


@pytest.mark.parametrize(
    "change",
    [
        {"text_column": None},
        {"task": "tabular_classification"},  # text_column on a tabular task
        {"search": {"space": {"C": {"low": 2, "high": 1}}}},
        {"search": {"space": {"C": {"low": 0, "high": 1, "log": True}}}},
        {"search": {"space": {}}},
        {"unknown": 1},
    ],
)
def test_specs_that_cannot_run_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        job_spec_adapter().validate_python({**_TEXT, **change})


def test_estimators_are_a_closed_list_with_checked_parameters() -> None:
    cls = estimator_class("tabular_regression", "ridge")
    valid_params(cls, {"alpha": 1.0})
    with pytest.raises(InvalidSpec, match="no parameter 'C'"):
        valid_params(cls, {"C": 1.0})
    with pytest.raises(InvalidSpec, match=r"unknown estimator 'os\.system'"):
        estimator_class("tabular_regression", "os.system")
    with pytest.raises(InvalidSpec, match="random_forest"):  # not a text estimator
        estimator_class("text_classification", "random_forest")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),  # numpy's random_state stops at 2**32 - 1
        ({"parent": 0}, "parent"),
        ({"parent": 2**31}, "parent"),  # version numbers are 32-bit columns
        ({"params": {"C": b"\x80\x00\x00"}}, "params.C: a bytes value is not JSON"),  # !!binary
        ({"params": {"C": float("nan")}}, "params.C: nan is not a finite number"),  # .nan
        ({"params": {"max_iter": 2**70}}, "params.max_iter: the integer is out of 64-bit"),
        ({"params": {1: 2}}, "params: the key 1 is not plain text"),
        ({"target": "label\x00"}, "target: text holds a NUL character"),
        ({"search": {"space": {"C": {"choices": [b"x"]}}}}, "search.space.C.choices[0]"),
    ],
)
def test_values_a_job_cannot_store_or_use_are_refused(
    change: dict[str, object], where: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        job_spec_adapter().validate_python({**_TEXT, **change})
    assert where in str(caught.value)


def test_bounds_hold_at_their_edges() -> None:
    spec = job_spec_adapter().validate_python({**_TEXT, "seed": 2**32 - 1, "parent": 2**31 - 1})
    assert isinstance(spec, TrainSpec) and (spec.seed, spec.parent) == (2**32 - 1, 2**31 - 1)
    base = {"kind": "evaluate", "model": "m", "dataset": "d", "target": "t"}
    for number in (0, 2**31, 1e20):
        with pytest.raises(ValidationError):
            job_spec_adapter().validate_python({**base, "version": number})
