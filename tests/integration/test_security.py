"""The security suite: attacks on a real server over HTTP, with real clients and the CLI."""

from __future__ import annotations

import datetime as dt
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
import sklearn.datasets
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import maas.errors
from maas.client import Client
from tests.integration.server import RunningServer, start_server
from tests.integration.tls import self_signed as _self_signed

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def skops_bytes(iris_model: LogisticRegression, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("skops") / "iris.skops"
    skops.io.dump(iris_model, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, skops_bytes: bytes) -> Iterator[RunningServer]:
    """A secured demo server (iris, iris-onnx) with a model only admins should see."""
    home = tmp_path_factory.mktemp("secure-home")
    env = {"MAAS_SERVER__CORS_ORIGINS": f'["{ORIGIN}"]', "MAAS_LIMITS__MAX_BODY_BYTES": "65536"}
    running = start_server(home, "--demo", env=env)
    try:
        with running.client() as http:
            pushed = http.post(
                "/api/v1/models/secret-model/versions",
                params={"filename": "iris.skops", "alias": "production"},
                content=skops_bytes,
            )
        assert pushed.status_code == 201, pushed.text
        yield running
    finally:
        running.stop()


def _key(server: RunningServer, **spec: object) -> dict[str, object]:
    with server.client() as http:
        response = http.post("/api/v1/keys", json={"name": "test", **spec})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def _as(server: RunningServer, key: object) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {key}"})


def _cli(
    server: RunningServer, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MAAS_API_KEY": key or server.api_key or ""}
    return subprocess.run(
        [sys.executable, "-m", "maas", "--url", server.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _without_request_id(response: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = response.json()
    body.pop("request_id", None)
    return body


# -- who may call ----------------------------------------------------------------------


def test_every_endpoint_but_health_needs_a_key(server: RunningServer) -> None:
    with server.client(headers={}) as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        for method, path in [
            ("GET", "/v2"),
            ("GET", "/v2/models/iris"),
            ("POST", "/v2/models/iris/infer"),
            ("GET", "/api/v1/models"),
            ("GET", "/api/v1/keys"),
            ("GET", "/api/v1/audit"),
            ("GET", "/api/v1/usage"),
            ("GET", "/api/v1/jobs"),
            ("GET", "/api/v1/datasets"),
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/embeddings"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
        ]:
            response = http.request(method, path, json=ROW if method == "POST" else None)
            assert response.status_code == 401, (path, response.text)
            body = response.json()
            code = body["error"]["code"] if path.startswith("/v1/") else body["code"]
            assert code == "unauthenticated", (path, body)
            assert response.headers["www-authenticate"] == "Bearer"


def test_the_openapi_page_can_be_made_public(tmp_path: Path) -> None:
    running = start_server(tmp_path / "home", env={"MAAS_AUTH__DOCS_PUBLIC": "true"})
    try:
        with running.client(headers={}) as anonymous:
            assert anonymous.get("/docs").status_code == 200
            assert "/v2/models/{model}/infer" in anonymous.get("/openapi.json").json()["paths"]
            assert anonymous.get("/api/v1/models").status_code == 401
    finally:
        running.stop()


def test_a_failing_key_store_answers_a_json_500_with_the_request_id(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    """An exception in the layers before any route (here the key lookup, its table
    gone) is answered by the gateway's error boundary, not by a bare server error."""
    import psycopg

    server = start_server(tmp_path / "home", env={"MAAS_DATABASE_URL": postgres_schema_url})
    try:
        base, _, options = postgres_schema_url.partition("?")
        schema = options.rpartition("%3D")[2]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{schema}".api_keys CASCADE')
        with _as(server, "maas_unknownkey_" + "0" * 32) as http:
            answer = http.get("/api/v1/models", headers={"X-Request-ID": "boundary-1"})
        assert answer.status_code == 500, answer.text
        body = answer.json()
        assert (body["code"], body["request_id"]) == ("internal_error", "boundary-1")
        assert "api_keys" not in answer.text  # no exception text in the body
    finally:
        server.stop()


def test_bad_key_is_refused_and_never_echoed_or_logged(server: RunningServer) -> None:
    bad = "maas_deadbeef_" + "f00d" * 10
    with _as(server, bad) as http:
        response = http.post("/v2/models/iris/infer", json=ROW)
    with server.client(headers={"X-API-Key": bad + "x"}) as http:
        other = http.get("/api/v1/models")
    assert (response.status_code, other.status_code) == (401, 401)
    assert bad not in response.text and bad not in other.text
    assert bad not in "".join(server.output)


def test_x_api_key_header_and_sdk_work(server: RunningServer) -> None:
    with server.client(headers={"X-API-Key": server.api_key}) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200
    with Client(server.url, api_key=server.api_key) as client:
        assert client.predict("iris", np.array([[5.1, 3.5, 1.4, 0.2]]))["predict"].tolist() == [0]
    with Client(server.url) as anonymous, pytest.raises(maas.errors.Unauthenticated):
        anonymous.list_models()


def test_expired_key_is_refused(server: RunningServer) -> None:
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    expired = _key(server, role="consumer", expires_at=past)
    live = _key(server, role="consumer", expires_at=future)
    with _as(server, expired["key"]) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 401
    with _as(server, live["key"]) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200


def test_revoked_key_stops_within_a_second(server: RunningServer) -> None:
    created = _key(server, role="consumer")
    with _as(server, created["key"]) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200
        with server.client() as admin:
            assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 204
        time.sleep(1.1)  # the resolver caches a key for at most one second
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 401


def test_rotation_gives_a_new_secret_and_revokes_the_old(server: RunningServer) -> None:
    created = _key(server, role="consumer", models=["iris"])
    with server.client() as admin:
        rotated = admin.post(f"/api/v1/keys/{created['id']}/rotate").json()
    assert rotated["key"] != created["key"] and rotated["models"] == ["iris"]
    time.sleep(1.1)
    with _as(server, created["key"]) as old, _as(server, rotated["key"]) as new:
        assert old.post("/v2/models/iris/infer", json=ROW).status_code == 401
        assert new.post("/v2/models/iris/infer", json=ROW).status_code == 200


def test_key_secret_is_shown_once_and_listed_by_prefix(server: RunningServer) -> None:
    created = _key(server, role="consumer", name="shown-once")
    assert str(created["key"]).startswith(f"maas_{created['prefix']}_")
    with server.client() as http:
        listed = http.get("/api/v1/keys")
    assert listed.status_code == 200
    mine = next(k for k in listed.json() if k["id"] == created["id"])
    assert "key" not in mine and "key_hash" not in mine and mine["prefix"] == created["prefix"]
    assert str(created["key"]) not in listed.text


# -- what a key may do -------------------------------------------------------------------


def test_consumer_may_infer_but_not_push_or_manage_keys(server: RunningServer) -> None:
    consumer = _key(server, role="consumer", models=["iris*"])
    with _as(server, consumer["key"]) as http:
        pushed = http.post(
            "/api/v1/models/iris/versions", params={"filename": "x.skops"}, content=b"x"
        )
        assert (pushed.status_code, pushed.json()["code"]) == (403, "forbidden")
        alias = http.put("/api/v1/models/iris/aliases/production", json={"version": 1})
        assert alias.status_code == 403
        assert http.post("/api/v1/keys", json={"name": "escalate"}).status_code == 403
        assert http.get("/api/v1/audit").status_code == 403
        assert (
            http.post(
                "/v2/models/iris-onnx/infer",
                json={
                    "inputs": [
                        {
                            "name": "float_input",
                            "datatype": "FP32",
                            "shape": [1, 4],
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ]
                },
            ).status_code
            == 200
        )


def test_hidden_model_looks_exactly_like_a_missing_one(server: RunningServer) -> None:
    consumer = _key(server, role="consumer", models=["iris*"])
    paths = [
        ("GET", "/v2/models/{m}"),
        ("GET", "/v2/models/{m}/ready"),
        ("GET", "/v2/models/{m}/versions/1"),
        ("POST", "/v2/models/{m}/infer"),
        ("POST", "/v2/models/{m}/versions/production/infer"),
        ("GET", "/api/v1/models/{m}"),
        ("GET", "/api/v1/models/{m}/versions"),
        ("GET", "/api/v1/models/{m}/versions/1"),
        ("GET", "/api/v1/models/{m}/aliases"),
    ]
    with _as(server, consumer["key"]) as http:
        for method, path in paths:
            body = ROW if method == "POST" else None
            hidden = http.request(method, path.format(m="secret-model"), json=body)
            missing = http.request(method, path.format(m="no-such-model"), json=body)
            assert hidden.status_code == missing.status_code == 404, path
            expected = _without_request_id(missing)
            expected["error"] = str(expected["error"]).replace("no-such-model", "secret-model")
            assert _without_request_id(hidden) == expected, path
        names = {m["name"] for m in http.get("/api/v1/models").json()}
    assert names == {"iris", "iris-onnx"}
    with server.client() as admin:
        assert "secret-model" in {m["name"] for m in admin.get("/api/v1/models").json()}


def test_deployer_writes_only_inside_its_patterns(
    server: RunningServer, skops_bytes: bytes
) -> None:
    deployer = _key(server, role="deployer", models=["team-a-*"])
    with _as(server, deployer["key"]) as http:
        ok = http.post(
            "/api/v1/models/team-a-iris/versions",
            params={"filename": "iris.skops"},
            content=skops_bytes,
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["created_by"] == "test"
        outside = http.delete("/api/v1/models/secret-model")
        assert (outside.status_code, outside.json()["code"]) == (404, "model_not_found")
        assert http.get("/api/v1/keys").status_code == 403
    with server.client() as admin:
        assert admin.get("/api/v1/models/secret-model").status_code == 200


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
    with _as(server, "maas_00000000_" + "0" * 40) as stranger:
        for _ in range(5):
            assert stranger.get("/api/v1/models").status_code == 401
    consumer = _key(server, role="consumer", name="pusher")
    with _as(server, consumer["key"]) as http:
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

    listed = _cli(server, "-o", "json", "audit", "--action", "model.push")
    assert listed.returncode == 0, listed.stderr
    assert '"audited"' in listed.stdout


# -- hardened inputs -----------------------------------------------------------------------


def test_oversized_and_deeply_nested_bodies_are_refused(server: RunningServer) -> None:
    with server.client() as http:
        big = http.post("/v2/models/iris/infer", content=b"{" + b" " * 70_000 + b"}")
        assert (big.status_code, big.json()["code"]) == (413, "payload_too_large")
        for depth in (40, 5000):
            nested = b'{"name": ' + b"[" * depth + b"]" * depth + b"}"
            response = http.post(
                "/api/v1/keys", content=nested, headers={"Content-Type": "application/json"}
            )
            assert (response.status_code, response.json()["code"]) == (400, "invalid_input")
            v2 = http.post(
                "/v2/models/iris/infer",
                content=b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}",
                headers={"Content-Type": "application/json"},
            )
            assert v2.status_code == 400, v2.text
        assert http.get("/v2/health/live").status_code == 200


def test_an_upload_typed_as_json_is_streamed_not_parsed(server: RunningServer) -> None:
    """Uploads may exceed the body cap (65536 here), so the JSON depth check must not
    read them: it would hold the whole upload in memory. The route gets the stream."""
    nested = b"[" * 40 + b" " * 200_000 + b"]" * 40
    with server.client() as http:
        pushed = http.post(
            "/api/v1/models/json-upload/versions",
            params={"filename": "model.json"},
            content=nested,
            headers={"Content-Type": "application/json"},
        )
        assert (pushed.status_code, pushed.json()["code"]) == (400, "unsupported_artifact")
        keys = http.post(
            "/api/v1/keys", content=iter([nested]), headers={"Content-Type": "application/json"}
        )
        assert (keys.status_code, keys.json()["code"]) == (413, "payload_too_large")


def test_times_are_compared_in_utc_and_out_of_range_ones_refused(server: RunningServer) -> None:
    with server.client() as http:
        # One aware, one naive (taken as UTC): comparable, not a TypeError.
        mixed = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00"}
        answer = http.get("/api/v1/usage", params=mixed)
        assert answer.status_code == 200 and answer.json()["group_by"] == ["key", "model"]
        backwards = {"since": "2026-01-02T00:00:00", "until": "2026-01-01T23:00:00-00:30"}
        answer = http.get("/api/v1/usage", params=backwards)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
        assert "until must be after since" in answer.json()["error"]
        # Naive means UTC, not the server's local time (which had no year 0 to go to).
        assert http.get("/api/v1/audit", params={"since": "0001-01-01T00:00:00"}).status_code == 200
        for path, params in [
            ("/api/v1/usage", {"since": "0001-01-01T00:00:00+14:00"}),  # in year 0 in UTC
            ("/api/v1/usage", {"until": "9999-12-31T23:59:59-14:00"}),  # in year 10000
            ("/api/v1/audit", {"since": "0001-01-01T00:00:00+01:00"}),
        ]:
            answer = http.get(path, params=params)
            assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
            assert "out of range once converted to UTC" in answer.json()["error"]


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


def test_a_head_whose_blank_line_straddles_two_reads_is_not_counted_with_its_body(
    server: RunningServer,
) -> None:
    """The head cap counts the head only: a big body after a head whose final CRLF came
    in the next read used to be counted as head, and a large push got 431."""
    host, port = server.hostport.rsplit(":", 1)
    head = (
        f"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.api_key}\r\nContent-Length: 200000\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        time.sleep(0.3)  # the head's closing CRLF arrives in a read of its own, with the body
        sock.sendall(b"\r\n" + b" " * 100_000)
        answer = sock.recv(200)
    # Past the head cap the protocol answers 431 before the app; the app's body cap
    # (65536 on this server) answers 413.
    assert answer.split(b" ")[1] == b"413", answer


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


def test_skops_pipeline_calling_a_sklearn_function_is_refused(
    tmp_path: Path, server: RunningServer, iris_model: LogisticRegression
) -> None:
    """A ``FunctionTransformer`` over ``sklearn.datasets.dump_svmlight_file`` would write
    a file wherever it is told at every ``predict``: a scikit-learn name is not enough."""
    target = tmp_path / "written-by-predict"
    features = np.zeros((3, 4))
    dump = FunctionTransformer(
        sklearn.datasets.dump_svmlight_file, kw_args={"f": str(target), "y": np.zeros(3)}
    )
    exploit = Pipeline([("dump", dump.fit(features)), ("clf", iris_model)])
    path = tmp_path / "exploit.skops"
    skops.io.dump(exploit, path)
    with server.client() as http:
        pushed = http.post(
            "/api/v1/models/exploit/versions",
            params={"filename": "exploit.skops", "alias": "production"},
            content=path.read_bytes(),
        )
        assert (pushed.status_code, pushed.json()["code"]) == (422, "untrusted_artifact")
        assert "dump_svmlight_file" in pushed.json()["details"]["types"][0]
        answer = http.post("/v2/models/exploit/infer", json=ROW)
        assert answer.status_code == 404
    assert not target.exists()


def test_cors_answers_only_listed_origins(server: RunningServer) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    with server.client(headers={}) as http:
        allowed = http.options("/v2/models/iris/infer", headers=preflight)
        other = http.options(
            "/v2/models/iris/infer", headers={**preflight, "Origin": "https://evil.example"}
        )
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    assert "access-control-allow-origin" not in other.headers


# -- the CLI -------------------------------------------------------------------------------


def test_cli_creates_a_consumer_key_that_calls_only_its_models(server: RunningServer) -> None:
    created = _cli(
        server, "keys", "create", "--name", "app", "--role", "consumer", "--models", "iris*"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("maas_")
    predicted = _cli(server, "predict", "iris", "--data", "[[5.1, 3.5, 1.4, 0.2]]", key=key)
    assert predicted.returncode == 0, predicted.stderr
    assert '"predict"' in predicted.stdout
    hidden = _cli(server, "predict", "secret-model", "--data", "[[5.1, 3.5, 1.4, 0.2]]", key=key)
    assert hidden.returncode == 1 and "model_not_found" in hidden.stderr
    listed = _cli(server, "-o", "json", "keys", "list")
    assert (
        listed.returncode == 0 and key not in listed.stdout and key.split("_")[1] in listed.stdout
    )
    key_id = next(line.split('"')[3] for line in listed.stdout.splitlines() if '"id"' in line)
    assert _cli(server, "keys", "revoke", key_id).returncode == 0


# -- servers of their own ----------------------------------------------------------------------


def test_first_start_writes_the_admin_key_0600_for_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_server(home, "--demo", env={"MAAS_ADMIN_KEY": ""})
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
        listed = subprocess.run(
            [sys.executable, "-m", "maas", "--url", first.url, "models", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
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


def test_no_auth_serves_everyone_with_a_warning(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", "--demo", "--no-auth")
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


def test_request_deadline_answers_504(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "home", env={"MAAS_LIMITS__REQUEST_DEADLINE_S": "0.000001"}, wait_ready=False
    )
    try:
        with server.client() as http:
            response = _retry(lambda: http.get("/api/v1/models"))
        assert (response.status_code, response.json()["code"]) == (504, "request_timeout")
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
