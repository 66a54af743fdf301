"""Secure defaults, in process: metrics need a key, a revoked key stops at once where
it was revoked, and a shared database without Redis says its limits are per server.
(The CLI's metrics key is made over a socket, in ``tests/integration/test_security.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inprocess.app import InProcessServer, serving

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture(scope="module")
def server(demo_server: InProcessServer) -> InProcessServer:
    return demo_server


def _key(server: InProcessServer, role: str, models: list[str] | None = None) -> tuple[str, str]:
    spec: dict[str, object] = {"name": f"{role}-key", "role": role}
    if models is not None:
        spec["models"] = models
    with server.client() as http:
        created = http.post("/api/v1/keys", json=spec)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- item 7: /metrics needs a key by default ------------------------------------------------


def test_metrics_need_a_key_by_default(server: InProcessServer) -> None:
    with server.client(headers={}) as anonymous:
        assert anonymous.post("/v2/models/iris/infer", json=ROW).status_code == 401
        refused = anonymous.get("/metrics")
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "unauthenticated"
    assert "iris" not in refused.text


def test_a_metrics_key_scrapes_and_does_nothing_else(server: InProcessServer) -> None:
    _, key = _key(server, "metrics")
    with server.client(headers=_bearer(key)) as scraper:
        scraped = scraper.get("/metrics")
        infer = scraper.post("/v2/models/iris/infer", json=ROW)
        models = scraper.get("/api/v1/models")
    assert scraped.status_code == 200, scraped.text
    assert "maas_requests_total" in scraped.text
    assert infer.status_code in (403, 404), infer.text
    assert models.status_code == 403 or models.json() in ([], {"models": []}), models.text


def test_a_consumer_key_may_not_scrape(server: InProcessServer) -> None:
    _, key = _key(server, "consumer")
    with server.client(headers=_bearer(key)) as consumer:
        response = consumer.get("/metrics")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"


def test_the_operator_can_open_metrics(tmp_path: Path) -> None:
    with (
        serving(tmp_path / "home", auth={"metrics_public": True}) as running,
        running.client(headers={}) as anonymous,
    ):
        response = anonymous.get("/metrics")
    assert response.status_code == 200, response.text


# -- item 8: a revoked key stops at once on the server that revoked it ---------------------


@pytest.mark.parametrize("how", ["revoke", "rotate"])
def test_a_revoked_key_stops_at_once_where_it_was_revoked(
    server: InProcessServer, how: str
) -> None:
    key_id, key = _key(server, "consumer", ["iris*"])
    with server.client(headers=_bearer(key)) as caller, server.client() as admin:
        assert caller.post("/v2/models/iris/infer", json=ROW).status_code == 200  # cached now
        if how == "revoke":
            assert admin.delete(f"/api/v1/keys/{key_id}").status_code == 204
        else:
            assert admin.post(f"/api/v1/keys/{key_id}/rotate").status_code == 200
        after = caller.post("/v2/models/iris/infer", json=ROW)
    assert after.status_code == 401, after.text
    assert after.json()["code"] == "unauthenticated"


# -- item 9: a shared database without Redis says its limits are per server ---------------

_PER_SERVER = "rate limits are per server"


def test_postgresql_without_redis_warns_that_limits_are_per_server(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    settings = {"database_url": postgres_schema_url, "redis_url": None}
    with (
        serving(tmp_path / "home", **settings) as running,
        running.client(headers={}) as anonymous,
    ):
        ready = anonymous.get("/v2/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["details"]["rate_limits"] == "per_server"
    assert any(_PER_SERVER in warning for warning in ready.json()["details"]["warnings"])
    [line] = [line for line in running.output if _PER_SERVER in line]
    assert line.startswith("WARNING"), line


def test_postgresql_with_redis_says_nothing(
    tmp_path: Path, postgres_schema_url: str, redis_url: str
) -> None:
    with (
        serving(
            tmp_path / "home", database_url=postgres_schema_url, redis_url=redis_url
        ) as running,
        running.client(headers={}) as anonymous,
    ):
        ready = anonymous.get("/v2/health/ready")
    assert ready.json() == {"ready": True}, ready.text
    assert not any(_PER_SERVER in line for line in running.output)
