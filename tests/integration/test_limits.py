"""Usage metering across a SIGTERM, and limits shared by two servers through Redis,
against real servers; limits and quotas behind one server are checked in process
(``tests/inprocess/test_limits.py``)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import secrets
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.demo_home import copy_home
from tests.forked import run_maas
from tests.integration.server import RunningServer, start_server
from tests.keys import bearer, limited_key, usage

ADMIN_KEY = f"maas-it-admin-{secrets.token_hex(16)}"
_ROW = {"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
IRIS = {"inputs": [_ROW]}


def _start(home: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    return start_server(home, *args, env={"MAAS_AUTH__ADMIN_KEY": ADMIN_KEY, **(env or {})})


@pytest.fixture
def servers() -> Iterator[list[RunningServer]]:
    """Servers a test starts; each is stopped after it, and must have stopped cleanly."""
    started: list[RunningServer] = []
    yield started
    for server in started:
        assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)


async def _infer_many(
    urls: list[str], key: str, count: int, *, model: str = "iris", concurrency: int = 50
) -> list[httpx.Response]:
    """``count`` V2 calls spread over ``urls``, at most ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(headers=bearer(key), timeout=60, limits=limits) as http:

        async def one(i: int) -> httpx.Response:
            async with gate:
                url = urls[i % len(urls)]
                return await http.post(f"{url}/v2/models/{model}/infer", json=IRIS)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_every_call_is_metered_and_survives_sigterm(
    tmp_path: Path, servers: list[RunningServer], demo_template: Path
) -> None:
    home = copy_home(demo_template, tmp_path / "home")
    servers.append(server := _start(home, "--demo"))
    key_id, key = limited_key(server, ADMIN_KEY)
    asyncio.run(_infer_many([server.url], key, 900))
    missing = asyncio.run(_infer_many([server.url], key, 100, model="no-such-model"))
    assert {r.status_code for r in missing} == {404}

    by_model = usage(server, ADMIN_KEY, key=key_id, group_by="key,model")
    counts = {(r["key"], r["model"]): (r["requests"], r["errors"], r["rows"]) for r in by_model}
    assert counts == {(key_id, "iris"): (900, 0, 900), (key_id, "no-such-model"): (100, 100, 0)}
    assert usage(server, key, group_by="model") == [
        {k: v for k, v in row.items() if k != "key"} for row in by_model
    ]  # a key sees its own usage without asking
    with server.client(headers=bearer(key)) as http:
        assert http.get("/api/v1/usage", params={"key": "someone-else"}).status_code == 403

    cli = run_maas(
        ["usage", "--csv", "--key", key_id, "-g", "model,day"],
        {**os.environ, "MAAS_URL": server.url, "MAAS_API_KEY": ADMIN_KEY},
        check=True,
    )
    exported = list(csv.DictReader(io.StringIO(cli.stdout)))
    # A row per model and UTC day: calls made across midnight count on two days.
    totals: dict[str, int] = {}
    for row in exported:
        assert row["day"], exported
        totals[row["model"]] = totals.get(row["model"], 0) + int(row["requests"])
    assert totals == {"iris": 900, "no-such-model": 100}, exported

    # Records still queued at SIGTERM are written before the process ends.
    asyncio.run(_infer_many([server.url], key, 250))
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)
    servers.append(restarted := _start(home))
    rows = usage(restarted, ADMIN_KEY, key=key_id, group_by="key")
    assert [(r["key"], r["requests"]) for r in rows] == [(key_id, 1250)]


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"it-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(f"{prefix}:*"):
        client.delete(name)
    client.close()


def test_two_servers_share_one_limit_through_redis(
    tmp_path: Path,
    servers: list[RunningServer],
    postgres_schema_url: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Two replicas (one database, one Redis) pass exactly the limit between them."""
    env = {
        "MAAS_DATABASE_URL": postgres_schema_url,
        "MAAS_REDIS_URL": redis_url,
        "MAAS_REDIS_PREFIX": redis_prefix,
    }
    home = tmp_path / "home"
    servers.append(first := _start(home, "--demo", env=env))
    servers.append(second := _start(home, env=env))
    key_id, key = limited_key(first, ADMIN_KEY, requests_per_minute=10)
    responses = asyncio.run(_infer_many([first.url, second.url], key, 60))
    assert Counter(r.status_code for r in responses) == {200: 10, 429: 50}
    served_by = Counter(str(r.url).rsplit("/v2/", 1)[0] for r in responses if r.is_success)
    assert sum(served_by.values()) == 10
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(f"{redis_prefix}:{{{key_id}}}:rpm") == 1
    finally:
        client.close()
