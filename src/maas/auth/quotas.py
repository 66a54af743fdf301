"""Budgets: how many requests or tokens a key may spend per calendar day or month.

A budget is a fixed-window counter keyed by the period it counts (``d2024-05-17`` or
``m2024-05``), so a new period starts from zero without any reset job: the old
counter simply stops being read and expires. Periods are UTC calendar days and
months, whatever the server's local time zone, so every replica agrees on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["PERIODS", "Budget", "BudgetWindow", "budget_window"]

PERIODS = ("day", "month")


@dataclass(frozen=True, slots=True)
class BudgetWindow:
    """One budget period: its id (part of the counter's key) and its UTC bounds."""

    period_id: str
    start: datetime
    end: datetime

    def seconds_left(self, now: datetime) -> float:
        return max(0.0, (self.end - now).total_seconds())


def budget_window(period: str, now: datetime) -> BudgetWindow:
    """The ``day`` or ``month`` window that holds ``now`` (an aware datetime), in UTC."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return BudgetWindow(f"d{start:%Y-%m-%d}", start, start + timedelta(days=1))
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
        return BudgetWindow(f"m{start:%Y-%m}", start, end)
    raise ValueError(f"budget period must be one of {PERIODS}, not {period!r}")


@dataclass(frozen=True, slots=True)
class Budget:
    """A counter that may not pass ``limit`` within its window.

    ``cost`` is what this call adds. A cost of 0 is a check only: it is refused once
    the counter has reached the limit. Token budgets are checked that way before a
    call (its size is unknown) and charged afterwards, so the last call of a period
    may overshoot; the next one is refused.
    """

    key: str
    limit: int
    cost: int
    ttl_s: float  # until the window ends: when the counter may be forgotten

    def refuses(self, used: float) -> bool:
        if self.cost > 0:
            return used + self.cost > self.limit
        return used >= self.limit
