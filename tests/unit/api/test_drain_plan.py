"""The drain's phases as arithmetic: the teardown keeps a share a real teardown fits in."""

from __future__ import annotations

import pytest

from maas.cli.drain import DrainPlan


@pytest.mark.parametrize(
    ("timeout_s", "teardown_s"),
    [(4.0, 2.0), (10.0, 2.0), (20.0, 4.0), (30.0, 5.0), (60.0, 5.0), (3.0, 1.5)],
)
def test_the_teardown_share_has_a_floor_a_cap_and_leaves_requests_half(
    timeout_s: float, teardown_s: float
) -> None:
    """An idle server's teardown takes 1.1-1.2 s: a fifth of a short timeout (0.8 s of
    4 s) cut it short. At least 2 s, at most 5 s, never more than half the timeout."""
    plan = DrainPlan(started=100.0, grace_s=0.0, timeout_s=timeout_s)
    assert plan.deadline - plan.requests_end == pytest.approx(teardown_s)
