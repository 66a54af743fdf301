"""Schemas of the management API (``/api/v1``): models, versions, aliases.

The registry returns these value objects rather than ORM rows, so routers and the SDK
share one definition of what a model or a version looks like on the wire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maas.errors import InvalidDeployment
from maas.protocols.bounds import VersionNumber
from maas.protocols.signature import Signature

__all__ = [
    "AliasInfo",
    "AliasSet",
    "DeploymentSpec",
    "ModelCreate",
    "ModelInfo",
    "VersionInfo",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


#: Bounds of a deployment's numbers: stored as JSON and read back on every lookup of the
#: version, so one that JSON cannot carry (past 64 bits) would break the version.
_MAX_BATCH = 65_536
_MAX_DELAY_US = 60_000_000
_MAX_QUEUE = 1_000_000


class DeploymentSpec(_Frozen):
    """How a version is served; registry data, not environment variables."""

    max_batch_size: int = Field(
        1, ge=1, le=_MAX_BATCH, description="Rows per batch; 1 turns batching off."
    )
    max_queue_delay_us: int = Field(
        0,
        ge=0,
        le=_MAX_DELAY_US,
        description="How long a batch waits for more requests, in microseconds (at most 60 s).",
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=_MAX_BATCH)]] = Field(
        default_factory=list, max_length=64
    )
    instances: int = Field(1, ge=1, le=64, description="Parallel instances of the model.")
    max_queue_size: int = Field(256, ge=1, le=_MAX_QUEUE, description="Queued requests before 503.")
    workers: Literal["auto", "threads", "inline", "processes", "shared"] = Field(
        "auto",
        description="Where this version's instances run: auto follows the server's "
        "serving.worker_mode; threads runs a model that holds the GIL (scikit-learn) in the "
        "server process, with no pipe between call and model (for tiny models, whose calls "
        "then cost microseconds, not a round trip); inline calls it on the server's event "
        "loop itself, with no thread hop either (calls up to 64 KiB of input; the loop waits "
        "meanwhile, so only for models that answer in microseconds); processes isolates it in "
        "workers of its own (instances of them); shared puts it in the server's pool of "
        "workers that small models share.",
    )
    cpus: float = Field(
        1.0,
        gt=0,
        le=1024,
        description="CPUs each instance asks of a Ray cluster (MAAS_CLUSTER__RAY_ADDRESS); "
        "ignored on one machine.",
    )
    memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory each instance asks of a Ray cluster (its scheduler's `memory` "
        "resource); ignored on one machine.",
    )
    quantize: Literal["int8"] | None = Field(
        None,
        description="Serve with dynamic int8 linear layers (transformers models): weights "
        "quantized once at load, activations per call. Faster on the CPU and a quarter of "
        "the linear weights' memory, at a cost in exactness (the README gives numbers).",
    )

    def check(self, signature: Signature) -> None:
        """Raise ``InvalidDeployment`` unless this spec can serve a model of ``signature``.

        Preferred sizes must be batch sizes the batcher can form (1 to
        ``max_batch_size``). Batching concatenates requests along the first dimension,
        so every input must have a first dimension of any size (``-1``).
        """
        wrong = [
            size for size in self.preferred_batch_sizes if not 1 <= size <= self.max_batch_size
        ]
        if wrong:
            raise InvalidDeployment(
                f"preferred batch size {wrong[0]} is not between 1 and max_batch_size "
                f"({self.max_batch_size})",
                details={"preferred_batch_sizes": wrong, "max_batch_size": self.max_batch_size},
            )
        if self.max_batch_size == 1:
            return
        fixed = [spec for spec in signature.inputs if not spec.shape or spec.shape[0] != -1]
        if fixed:
            raise InvalidDeployment(
                f"max_batch_size {self.max_batch_size} needs inputs whose first dimension is "
                f"-1 (any size); {fixed[0].name!r} has shape {fixed[0].shape}",
                details={"input": fixed[0].name, "shape": fixed[0].shape},
            )


class ModelCreate(_Frozen):
    name: str
    description: str = ""
    task: str | None = Field(None, max_length=64)


class ModelInfo(_Frozen):
    name: str
    description: str
    task: str | None
    created_at: datetime
    latest_version: int | None = None
    aliases: dict[str, int] = Field(default_factory=dict)


class VersionInfo(_Frozen):
    model: str
    version: int
    framework: str
    digest: str = Field(description="sha256 of the artifact, as 'sha256:<hex>'.")
    size_bytes: int
    filename: str
    signature: Signature
    metadata: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    lineage: dict[str, Any] = Field(default_factory=dict)
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    created_at: datetime
    created_by: str | None = None
    aliases: list[str] = Field(default_factory=list)


class AliasSet(_Frozen):
    version: VersionNumber


class AliasInfo(_Frozen):
    model: str
    alias: str
    version: int
