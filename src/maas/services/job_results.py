"""The ``ResultSink`` that jobs publish through: the ``Publisher``, so a trained or
optimized model enters the registry by the same path as an upload (inspected, its
signature read by a runtime, aliases untouched until a person promotes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.protocols.management import VersionInfo
from maas.services.publishing import Publisher

__all__ = ["PublisherSink"]


class PublisherSink:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def publish(
        self,
        model: str,
        path: Path,
        *,
        metadata: dict[str, Any],
        metrics: dict[str, Any],
        lineage: dict[str, Any],
        created_by: str | None,
    ) -> VersionInfo:
        return await self._publisher.publish_file(
            model, path, metadata=metadata, metrics=metrics, lineage=lineage, created_by=created_by
        )

    async def record_metrics(
        self, model: str, version: int, metrics: dict[str, Any]
    ) -> VersionInfo:
        return await self._publisher.record_metrics(model, version, metrics)
