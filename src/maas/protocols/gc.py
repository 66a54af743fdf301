"""Schemas of the artifact garbage collector (``POST /api/v1/admin/gc``, ``maas gc``).

A report lists each thing deleted (or, in a dry run, that would be), so an operator
can see what a pass did before trusting it to run on its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CollectedBlob", "CollectedCache", "GcReport", "GcRequest", "SkippedBlob"]

#: The stores a blob can live in: model versions' and datasets'.
StoreName = Literal["models", "datasets"]
#: A grace window longer than this is surely a typo (ten years).
MAX_GRACE_S = 10 * 365 * 86_400.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GcRequest(_Frozen):
    dry_run: bool = Field(False, description="List what would be deleted; delete nothing.")
    grace_s: float | None = Field(
        None,
        ge=0,
        le=MAX_GRACE_S,
        allow_inf_nan=False,
        description="Keep unreferenced blobs modified less than this many seconds ago (a "
        "push may be inspecting them); default the server's storage.gc_grace_s.",
    )


class CollectedBlob(_Frozen):
    store: StoreName
    digest: str
    size_bytes: int
    age_s: float = Field(description="Seconds since the blob was last written or reused.")


class CollectedCache(_Frozen):
    """A derived directory (an unpacked archive, dequantized GGUF weights) whose blob is
    gone, or a temp directory an extraction that died left behind."""

    path: str = Field(description="Relative to the cache directory, e.g. unpacked/<hex>.")
    size_bytes: int


class SkippedBlob(_Frozen):
    store: StoreName
    digest: str
    reason: str


class GcReport(_Frozen):
    dry_run: bool
    grace_s: float
    scanned: int = Field(description="Blobs found in the stores.")
    referenced: int = Field(description="Of them, those a version, dataset or job names.")
    young: int = Field(
        description="Unreferenced blobs kept because they are inside the grace window (a "
        "push in progress) or became referenced while the pass ran."
    )
    collected: list[CollectedBlob] = Field(description="Blobs deleted (would be, dry run).")
    caches: list[CollectedCache] = Field(description="Derived directories deleted (ditto).")
    skipped: list[SkippedBlob] = Field(
        description="Blobs not judged, with the reason (a remote store without times)."
    )
    freed_bytes: int = Field(description="Bytes of the blobs and directories deleted.")
