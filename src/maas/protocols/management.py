"""Schemas of the management API (``/api/v1``): models, versions, aliases.

The registry returns these value objects rather than ORM rows, so routers and the SDK
share one definition of what a model or a version looks like on the wire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

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
