"""The security suite over a real socket: the SDK and CLI, raw HTTP heads, TLS, and what
a first start writes, the CLI's keys. Keys, roles, audit and hardened bodies are checked in process
(``tests/inprocess/test_security.py``)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import maas.errors
from maas.client import Client
from tests.demo_home import copy_home
from tests.forked import run_maas
from tests.integration.server import RunningServer, cli, start_server
from tests.integration.tls import self_signed as _self_signed
from tests.keys import as_key, make_key, push_secret_model

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, skops_bytes: bytes
) -> Iterator[RunningServer]:
    """A secured demo server (iris, iris-onnx) with a model only admins should see."""
    home = copy_home(demo_template, tmp_path_factory.mktemp("secure-home"))
    env = {"MAAS_LIMITS__MAX_BODY_BYTES": "65536"}
    running = start_server(home, "--demo", env=env)
    try:
        push_secret_model(running, skops_bytes)
        yield running
    finally:
        running.stop()


# -- who may call ----------------------------------------------------------------------


def test_x_api_key_header_and_sdk_work(server: RunningServer) -> None:
    with server.client(headers={"X-API-Key": server.api_key}) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200
    with Client(server.url, api_key=server.api_key) as client:
        assert client.predict("iris", np.array([[5.1, 3.5, 1.4, 0.2]]))["predict"].tolist() == [0]
    with Client(server.url) as anonymous, pytest.raises(maas.errors.Unauthenticated):
        anonymous.list_models()


# -- what a key may do -------------------------------------------------------------------


# -- audit -------------------------------------------------------------------------------


def test_management_actions_and_failed_logins_are_audited(
    server: RunningServer, skops_bytes: bytes
) -> None:
    with server.client() as admin:
        assert (
            admin.post(
                "/api/v1/models/audited/versions",
                params={"filename": "iris.skops"},
                content=skops_bytes,
            ).status_code
            == 201
        )
        assert (
            admin.put("/api/v1/models/audited/aliases/live", json={"version": 1}).status_code == 200
        )
        assert admin.delete("/api/v1/models/audited").status_code == 204
        created = admin.post("/api/v1/keys", json={"name": "audited-key"}).json()
        assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    with as_key(server, "maas_00000000_" + "0" * 40) as stranger:
        for _ in range(5):
            assert stranger.get("/api/v1/models").status_code == 401
    consumer = make_key(server, role="consumer", name="pusher")
    with as_key(server, consumer["key"]) as http:
        assert http.delete("/api/v1/models/iris").status_code == 403

    with server.client() as admin:
        records = admin.get("/api/v1/audit", params={"limit": 1000}).json()
        by_action = admin.get("/api/v1/audit", params={"action": "key.revoke"}).json()
    seen = {(r["action"], r["target"], r["outcome"]) for r in records}
    assert {
        ("model.push", "audited", "ok"),
        ("alias.set", "audited:live", "ok"),
        ("model.delete", "audited", "ok"),
        ("key.create", created["id"], "ok"),
        ("key.revoke", created["id"], "ok"),
        ("model.delete", "iris", "denied"),
    } <= seen
    push = next(r for r in records if r["action"] == "model.push" and r["target"] == "audited")
    assert push["actor_name"] == "admin (MAAS_ADMIN_KEY)" and push["actor_key_id"]
    assert push["source"] == "127.0.0.1" and push["details"]["version"] == 1
    assert any(r["actor_name"] == "pusher" and r["code"] == "forbidden" for r in records)
    failures = [r for r in records if r["action"] == "auth.failure"]
    assert 1 <= len(failures) <= 2  # one per source and minute (two if a minute turned)
    assert all(r["action"] == "key.revoke" for r in by_action)

    listed = cli(server, "-o", "json", "audit", "--action", "model.push")
    assert listed.returncode == 0, listed.stderr
    assert '"audited"' in listed.stdout


# -- hardened inputs -----------------------------------------------------------------------


def test_huge_header_is_refused_without_harm(server: RunningServer) -> None:
    host, port = server.hostport.rsplit(":", 1)
    request = (
        b"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(request)
            answer = sock.recv(200)
        except ConnectionError:
            answer = b""  # the server closed the connection: refused as well
    assert answer == b"" or answer.split(b" ")[1] in (b"400", b"431"), answer
    with server.client() as http:
        assert http.get("/api/v1/models").status_code == 200


def test_traversal_names_and_pickles_are_refused(tmp_path: Path, server: RunningServer) -> None:
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with server.client() as http:
        for name in ("..%2F..%2Fetc", "a%2Fb", ".."):
            response = http.post(
                f"/api/v1/models/{name}/versions", params={"filename": "m.skops"}, content=b"x"
            )
            assert response.status_code in (400, 404), (name, response.text)
        sneaky = http.post(
            "/api/v1/models/fine/versions", params={"filename": "../../m.pkl"}, content=b"x"
        )
        assert sneaky.status_code == 400
    with (
        Client(server.url, api_key=server.api_key) as client,
        pytest.raises(maas.errors.UntrustedArtifact),
    ):
        client.push(path, "pickled")


# -- the CLI -------------------------------------------------------------------------------


def test_cli_creates_a_consumer_key_that_calls_only_its_models(server: RunningServer) -> None:
    created = cli(
        server, "keys", "create", "--name", "app", "--role", "consumer", "--models", "iris*"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("maas_")
    predicted = cli(server, "predict", "iris", "--data", "[[5.1, 3.5, 1.4, 0.2]]", key=key)
    assert predicted.returncode == 0, predicted.stderr
    assert '"predict"' in predicted.stdout
    hidden = cli(server, "predict", "secret-model", "--data", "[[5.1, 3.5, 1.4, 0.2]]", key=key)
    assert hidden.returncode == 1 and "model_not_found" in hidden.stderr
    listed = cli(server, "-o", "json", "keys", "list")
    assert (
        listed.returncode == 0 and key not in listed.stdout and key.split("_")[1] in listed.stdout
    )
    # The key made above (the first listed may be another: the admin's own).
    [key_id] = [k["id"] for k in json.loads(listed.stdout) if k["prefix"] == key.split("_")[1]]
    assert cli(server, "keys", "revoke", key_id).returncode == 0


# -- servers of their own ----------------------------------------------------------------------


def test_first_start_writes_the_admin_key_0600_for_thecli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # A new interpreter, as a user's first start is: what it prints and writes.
    first = start_server(home, "--demo", env={"MAAS_ADMIN_KEY": ""}, fresh_interpreter=True)
    try:
        key_file = home / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((home / "auth.secret").stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        output = "".join(first.output)
        assert key in output and f"Bearer {key}" in output  # shown once, in the demo's curl
        with first.client(headers={"Authorization": f"Bearer {key}"}) as http:
            assert http.get("/api/v1/keys").status_code == 200
        env = {**os.environ, "MAAS_HOME": str(home), "COLUMNS": "200"}
        env.pop("MAAS_API_KEY", None)
        listed = run_maas(["--url", first.url, "models", "list"], env)
        assert listed.returncode == 0, listed.stderr
        assert "iris" in listed.stdout
    finally:
        first.stop()
    again = start_server(home, env={"MAAS_ADMIN_KEY": ""})
    try:
        assert key_file.read_text().strip() == key  # not replaced, not shown again
        assert key not in "".join(again.output)
    finally:
        again.stop()


def test_no_auth_serves_everyone_with_a_warning(tmp_path: Path, demo_template: Path) -> None:
    server = start_server(copy_home(demo_template, tmp_path / "home"), "--demo", "--no-auth")
    try:
        assert "--no-auth" in "".join(server.output) and "WARNING" in "".join(server.output)
        with server.client() as http:
            assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200
            assert http.get("/api/v1/models").status_code == 200
        assert not (tmp_path / "home" / "admin.key").exists()
    finally:
        server.stop()


def test_tls_with_a_generated_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = start_server(
        tmp_path / "home",
        "--ssl-certfile",
        str(cert),
        "--ssl-keyfile",
        str(key),
        wait_ready=False,
    )
    try:
        assert server.url.startswith("https://")
        with server.client(verify=str(cert)) as http:
            response = _retry(lambda: http.get("/api/v1/models"))
            assert response.status_code == 200 and response.url.scheme == "https"
        with (
            httpx.Client(base_url=server.url, verify=True) as untrusting,
            pytest.raises(httpx.ConnectError),
        ):
            untrusting.get("/v2/health/live")
        plain = server.url.replace("https://", "http://")
        with httpx.Client(base_url=plain) as http, pytest.raises(httpx.TransportError):
            http.get("/v2/health/live")
    finally:
        server.stop()


def _retry(call: object) -> httpx.Response:
    """Call until the server accepts connections (it prints its address before listening)."""
    for _ in range(300):
        try:
            return call()  # type: ignore[operator, no-any-return]
        except httpx.ConnectError as exc:
            if "CERTIFICATE" in str(exc).upper():
                raise
            time.sleep(0.1)
    raise AssertionError("server never accepted a connection")


def test_the_cli_creates_a_metrics_key(server: RunningServer) -> None:
    """The README's command for a Prometheus key works as written."""
    env = {"MAAS_URL": server.url, "MAAS_API_KEY": server.api_key or ""}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "maas",
            "keys",
            "create",
            "--name",
            "prometheus",
            "--role",
            "metrics",
        ],
        capture_output=True,
        text=True,
        env={**_environ(), **env},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    secret = next(word for word in done.stdout.split() if word.startswith("maas_"))
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as scraper:
        assert scraper.get("/metrics").status_code == 200


def _environ() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "200"}
