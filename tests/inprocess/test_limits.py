"""Rate limits, quotas and what metering refuses, over the app in process: 50
concurrent calls race on one loop as they would behind one server. Metering across a
SIGTERM and two servers sharing Redis are in ``tests/integration/test_limits.py``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import TEST_ADMIN_KEY
from tests.demo_home import IRIS_MODELS, copy_home
from tests.inprocess.app import InProcessServer, serving
from tests.keys import bearer, limited_key, usage

ADMIN_KEY = TEST_ADMIN_KEY
_ROW = {"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
IRIS = {"inputs": [_ROW]}


@pytest.fixture
def demo(tmp_path: Path, demo_template: Path) -> Iterator[InProcessServer]:
    """The iris demo on a home of the test's own: each test's limits start from zero."""
    with serving(
        copy_home(demo_template, tmp_path / "home"), demo=True, demo_models=IRIS_MODELS
    ) as served:
        yield served


def _infer_many(server: InProcessServer, key: str, count: int) -> list[httpx.Response]:
    """``count`` V2 calls, all in flight at once on the server's loop."""

    async def run() -> list[httpx.Response]:
        answers: list[httpx.Response] = []
        async with server.served.client(headers=bearer(key)) as http:

            async def one() -> None:
                answers.append(await http.post("/v2/models/iris/infer", json=IRIS))

            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(one)
        return answers

    answers: list[httpx.Response] = server.call(run)
    return answers


def test_fifty_concurrent_calls_against_ten_per_minute(demo: InProcessServer) -> None:
    server = demo
    _, key = limited_key(server, ADMIN_KEY, requests_per_minute=10)
    responses = _infer_many(server, key, 50)
    assert Counter(r.status_code for r in responses) == {200: 10, 429: 40}
    for response in responses:
        assert response.headers["X-RateLimit-Limit"] == "10"
        assert int(response.headers["X-RateLimit-Reset"]) > 0
        if response.status_code == 429:
            assert response.json()["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
            assert response.headers["X-RateLimit-Remaining"] == "0"
    remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.is_success)
    assert remaining == list(range(10))


def test_request_budget_refuses_the_sixth_call(demo: InProcessServer) -> None:
    server = demo
    _, key = limited_key(server, ADMIN_KEY, request_budget=5, budget_period="day")
    with server.client(headers=bearer(key)) as http:
        statuses = [http.post("/v2/models/iris/infer", json=IRIS) for _ in range(6)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429]
    refused = statuses[-1]
    assert refused.json()["code"] == "quota_exceeded"
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert int(refused.headers["Retry-After"]) <= 86_400


def test_names_no_model_can_have_never_stop_usage_or_audit_writes(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    """A NUL byte or 300 characters in a URL's model name: refused 400 before metering,
    and on PostgreSQL (which refuses both in a row) the next calls are still written."""
    settings = {"database_url": postgres_schema_url, "demo": True, "demo_models": IRIS_MODELS}
    with serving(tmp_path / "home", **settings) as server:
        _names_never_stop_usage_or_audit_writes(server)


def _names_never_stop_usage_or_audit_writes(server: InProcessServer) -> None:
    key_id, key = limited_key(server, ADMIN_KEY)
    with server.client(headers=bearer(key)) as http:
        # A NUL anywhere in a URL is refused before routing; a long name by the route.
        for name, code in [("%00", "invalid_input"), ("a%00b", "invalid_input"),
                           ("m" * 300, "invalid_name")]:  # fmt: skip
            bad = http.post(f"/v2/models/{name}/infer", json=IRIS)
            assert (bad.status_code, bad.json()["code"]) == (400, code), bad.text
        assert http.post("/v2/models/iris/infer", json=IRIS).status_code == 200
    rows = usage(server, ADMIN_KEY, key=key_id, group_by="model")
    assert [(r["model"], r["requests"]) for r in rows] == [("iris", 1)]

    with server.client(headers=bearer(ADMIN_KEY)) as http:
        refused = http.delete("/api/v1/models/" + "m" * 300)
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_name")
        assert http.delete(f"/api/v1/keys/{key_id}").status_code == 204
        audit = http.get("/api/v1/audit", params={"limit": 50})
    assert audit.status_code == 200, audit.text
    records = [(r["action"], r["target"], r["outcome"]) for r in audit.json()]
    assert ("key.revoke", key_id, "ok") in records
    denied = [target for action, target, outcome in records
              if (action, outcome) == ("model.delete", "denied")]  # fmt: skip
    assert denied and denied[0].startswith("mmmm") and len(denied[0]) < 300  # cut to fit
