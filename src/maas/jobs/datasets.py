"""``DatasetService``: uploads of CSV, Parquet and JSONL tables as content-addressed
dataset artifacts, with their schema and row count.

Datasets live in an artifact store of their own (``<artifacts>/datasets``): the model
registry deletes blobs that no version uses, and a dataset must never be one of them.
A file is parsed completely before it is recorded, so a dataset a job names is always
readable; a refused file leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from maas.errors import DatasetNotFound
from maas.jobs.tabular import format_of, inspect_table, read_table
from maas.protocols.jobs import ColumnInfo, DatasetInfo, DatasetPreview
from maas.registry.artifacts import ArtifactStore, StoredArtifact
from maas.registry.names import validate_name
from maas.registry.tables import Dataset

__all__ = ["DatasetService"]

_WRITE_BATCH_BYTES = 1024 * 1024


def _info(row: Dataset) -> DatasetInfo:
    return DatasetInfo(
        name=row.name,
        digest=row.digest,
        format=row.format,
        size_bytes=row.size_bytes,
        rows=row.rows,
        columns=[ColumnInfo.model_validate(column) for column in row.columns],
        created_at=row.created_at,
        created_by=row.created_by,
    )


class DatasetService:
    def __init__(
        self, sessions: sessionmaker[Session], store: ArtifactStore, *, max_bytes: int
    ) -> None:
        self._sessions = sessions
        self.store = store
        self._max_bytes = max_bytes

    async def push(
        self,
        name: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str,
        fmt: str | None = None,
        created_by: str | None = None,
    ) -> DatasetInfo:
        """Stream an upload to the store, parse it, and record it (idempotently)."""
        validate_name("dataset", name)
        fmt = format_of(filename, fmt)
        with self.store.writer(max_bytes=self._max_bytes) as writer:
            pending: list[bytes] = []
            size = 0
            async for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                if size >= _WRITE_BATCH_BYTES:
                    await asyncio.to_thread(writer.write, b"".join(pending))
                    pending, size = [], 0
            if pending:
                await asyncio.to_thread(writer.write, b"".join(pending))
            artifact = await asyncio.to_thread(writer.commit)
        path = await asyncio.to_thread(self.store.local_path, artifact.digest)
        try:
            rows, columns = await asyncio.to_thread(inspect_table, path, fmt)
        except Exception:
            await asyncio.to_thread(self._discard_if_unused, artifact)
            raise
        return await asyncio.to_thread(
            self._record, name, artifact.digest, fmt, artifact.size_bytes, rows, columns, created_by
        )

    def _record(
        self,
        name: str,
        digest: str,
        fmt: str,
        size_bytes: int,
        rows: int,
        columns: list[dict[str, Any]],
        created_by: str | None,
    ) -> DatasetInfo:
        with self._sessions.begin() as session:
            existing = session.scalars(
                select(Dataset).where(Dataset.name == name, Dataset.digest == digest)
            ).one_or_none()
            if existing is not None:
                return _info(existing)
            row = Dataset(
                name=name,
                digest=digest,
                format=fmt,
                size_bytes=size_bytes,
                rows=rows,
                columns=columns,
                created_by=created_by,
            )
            session.add(row)
            session.flush()
            return _info(row)

    def _discard_if_unused(self, artifact: StoredArtifact) -> None:
        """A refused upload leaves its blob only to a dataset or an upload under way of
        the same bytes (``ArtifactStore.discard``)."""
        with self._sessions() as session:
            used = session.scalars(
                select(Dataset.id).where(Dataset.digest == artifact.digest)
            ).first()
        if used is None:
            self.store.discard(artifact)

    def list_datasets(self, name: str | None = None) -> list[DatasetInfo]:
        """Every dataset upload, newest first (one name may have several)."""
        query = select(Dataset).order_by(Dataset.id.desc())
        if name is not None:
            query = query.where(Dataset.name == name)
        with self._sessions() as session:
            return [_info(row) for row in session.scalars(query)]

    def get(self, ref: str) -> DatasetInfo:
        """``name`` (its newest upload) or ``name@sha256:<hex prefix>``."""
        name, _, digest = ref.partition("@")
        query = select(Dataset).where(Dataset.name == name).order_by(Dataset.id.desc())
        if digest:
            query = query.where(Dataset.digest.startswith(digest, autoescape=True))
        with self._sessions() as session:
            row = session.scalars(query).first()
            if row is None:
                raise DatasetNotFound(f"dataset {ref!r} not found")
            return _info(row)

    def preview(self, ref: str, limit: int) -> DatasetPreview:
        """The first ``limit`` rows of a dataset; blocking (reads the file)."""
        info = self.get(ref)
        table = read_table(self.store.local_path(info.digest), info.format)
        head = [
            {name: _plain(value) for name, value in row.items()}
            for row in table.slice(0, limit).to_pylist()
        ]
        return DatasetPreview(
            name=info.name, digest=info.digest, rows=info.rows, columns=info.columns, head=head
        )


def _plain(value: Any) -> Any:
    """A cell as JSON can carry it: numbers, text, booleans and nulls as they are,
    anything else (dates, binary, nested values) as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
