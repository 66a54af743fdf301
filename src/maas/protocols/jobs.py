"""Schemas of the jobs API (``/api/v1/jobs``, ``/api/v1/datasets``): specs, jobs, events.

A job spec is the whole of what a job does, as plain data: the CLI reads it from YAML
or JSON, the server validates it here and stores it with the job, and the job process
receives it unchanged. Unknown fields are refused, so a typo in a spec is a 400, not a
silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic_core import PydanticCustomError

from maas.protocols.bounds import Seed, VersionNumber, json_problem

__all__ = [
    "TERMINAL_STATES",
    "ColumnInfo",
    "DatasetInfo",
    "DatasetPreview",
    "EvaluateSpec",
    "FinetuneSpec",
    "JobEvent",
    "JobInfo",
    "JobSpec",
    "JobState",
    "OptimizeSpec",
    "ParamRange",
    "SearchSpec",
    "TrainSpec",
    "job_spec_adapter",
]

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
TrainTask = Literal["text_classification", "tabular_classification", "tabular_regression"]
OptimizeMethod = Literal["onnx", "quantize_int8", "prune"]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        """A spec is stored as JSON and sent to the job process as JSON: a value that
        JSON cannot hold (YAML's ``!!binary``, dates, a NUL in text) is refused here
        rather than failing when the job is stored or run."""
        problem = json_problem(data)
        if problem is not None:
            raise PydanticCustomError("not_json", "{problem}", {"problem": problem})
        return data


class ParamRange(_Spec):
    """One hyperparameter's search space: a numeric range or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> ParamRange:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("give choices, or low < high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchSpec(_Spec):
    """Hyperparameter search with optuna, scored by cross-validation on the training split."""

    space: dict[str, ParamRange] = Field(min_length=1)
    n_trials: int = Field(20, ge=1, le=10_000)
    timeout_s: float | None = Field(None, gt=0, description="Stop searching after this long.")
    cv: int = Field(3, ge=2, le=10)


class TrainSpec(_Spec):
    """Train a scikit-learn model on a dataset; the result is a new version of ``model``."""

    kind: Literal["train"] = "train"
    model: str
    dataset: str
    task: TrainTask
    target: str
    text_column: str | None = Field(None, description="The text column (text tasks).")
    features: list[str] | None = Field(
        None, description="Numeric feature columns (tabular tasks); default all but the target."
    )
    estimator: str | None = Field(None, description="Estimator name; default per task.")
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec | None = None
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: Seed = 0
    onnx: bool = Field(True, description="Also register an ONNX conversion when possible.")
    parent: VersionNumber | None = Field(
        None, description="The version of the same model this one derives from."
    )

    @model_validator(mode="after")
    def _columns(self) -> TrainSpec:
        if self.task == "text_classification" and not self.text_column:
            raise ValueError("text_classification needs text_column")
        if self.task != "text_classification" and self.text_column:
            raise ValueError("text_column is for text_classification; use features")
        return self


class FinetuneSpec(_Spec):
    """Fine-tune a small transformers encoder for sequence classification, on CPU."""

    kind: Literal["finetune"] = "finetune"
    model: str
    dataset: str
    text_column: str = "text"
    target: str = "label"
    base: Literal["all-minilm-l6-v2"] = "all-minilm-l6-v2"
    max_steps: int = Field(50, ge=1, le=100_000)
    batch_size: int = Field(16, ge=1, le=1024)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    max_length: int = Field(128, ge=8, le=512)
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0: at the end).")
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: Seed = 0


class _OnVersion(_Spec):
    model: str
    version: VersionNumber | str = Field("latest", description="Version number or alias.")
    dataset: str
    target: str | None = Field(None, description="Label column; without it, outputs are compared.")
    text_column: str | None = None
    features: list[str] | None = None
    max_rows: int = Field(2000, ge=1, le=1_000_000)


class OptimizeSpec(_OnVersion):
    """Convert, quantize or prune a version; the result is a new version with a report."""

    kind: Literal["optimize"] = "optimize"
    method: OptimizeMethod
    sparsity: float = Field(0.5, gt=0, lt=1, description="Share of weights zeroed (prune).")
    latency_budget_s: float = Field(
        1.5, gt=0, le=60, description="Time spent timing each side at each batch size."
    )


class EvaluateSpec(_OnVersion):
    """Score a version on a dataset; the metrics are stored on the version."""

    kind: Literal["evaluate"] = "evaluate"


JobSpec = Annotated[
    TrainSpec | FinetuneSpec | OptimizeSpec | EvaluateSpec, Field(discriminator="kind")
]


def job_spec_adapter() -> TypeAdapter[TrainSpec | FinetuneSpec | OptimizeSpec | EvaluateSpec]:
    return TypeAdapter(JobSpec)


class JobInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    kind: str
    model: str
    state: JobState
    spec: dict[str, Any]
    progress: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    pid: int | None = Field(
        None, description="Process id of the running job, on the machine that runs it."
    )
    runner: str | None = Field(
        None, description="Id of the server (one per start) that claimed the job last."
    )
    runner_host: str | None = Field(
        None, description="Host name of the server that claimed the job (its latest attempt)."
    )
    heartbeat_at: datetime | None = Field(
        None, description="When that server last said the job still runs."
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_by: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class JobEvent(BaseModel):
    """One entry of a job's durable event log: a log line, a progress report, a state."""

    model_config = ConfigDict(frozen=True)

    seq: int
    at: datetime
    type: Literal["log", "progress", "state"]
    data: dict[str, Any]


class ColumnInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: str = Field(description="Arrow type: int64, double, string, bool, …")


class DatasetInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    digest: str
    format: Literal["csv", "parquet", "jsonl"]
    size_bytes: int
    rows: int
    columns: list[ColumnInfo]
    created_at: datetime
    created_by: str | None = None


class DatasetPreview(BaseModel):
    """The first rows of a dataset, as JSON values (the console's preview)."""

    model_config = ConfigDict(frozen=True)

    name: str
    digest: str
    rows: int = Field(description="Rows in the whole dataset.")
    columns: list[ColumnInfo]
    head: list[dict[str, Any]] = Field(description="The first rows, column name to value.")
