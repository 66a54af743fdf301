"""PostgreSQL schemas for tests: each test that writes gets one of its own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg


@contextlib.contextmanager
def postgres_schema(base_url: str, prefix: str) -> Iterator[str]:
    """A URL of ``base_url`` whose ``search_path`` is a new schema, dropped afterwards,
    so a test sees no other test's rows and leaves nothing behind."""
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
