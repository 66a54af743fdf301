"""Rows found by their id or by any unique start of it.

Listings cut long ids (a 32-digit job id does not fit an 80-column table), so every
command that takes an id accepts what a person can copy: its first characters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from maas.errors import AmbiguousId, MaasError

__all__ = ["by_id_or_prefix"]

RowT = TypeVar("RowT")


def by_id_or_prefix(
    session: Session,
    table: type[RowT],
    ident: str,
    not_found: Callable[[], MaasError],
    *,
    where: Any = None,
) -> RowT:
    """The row whose id is ``ident``, else the one whose id starts with it.

    Several matches are an ``AmbiguousId`` naming how many; ``where`` narrows the
    candidates (to what the caller may see) before they are counted.
    """
    row = session.get(table, ident)
    if row is not None:
        return row
    if not ident:
        raise not_found()
    column: Any = table.id  # type: ignore[attr-defined]
    query = select(table).where(column.startswith(ident, autoescape=True))
    if where is not None:
        query = query.where(where)
    found = list(session.scalars(query.limit(2)))
    if not found:
        raise not_found()
    if len(found) > 1:
        raise AmbiguousId(
            f"{ident!r} starts more than one id; give more of it", details={"prefix": ident}
        )
    return found[0]
