"""The security suite in process: keys, roles, hidden models, audit, hardened bodies,
CORS and deadlines, over the app with no socket. What needs one (the SDK and CLI, raw
HTTP heads, TLS, a first start's banner) is in ``tests/integration/test_security.py``."""

from __future__ import annotations

import datetime as dt
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

from tests.demo_home import IRIS_MODELS, copy_home
from tests.inprocess.app import InProcessServer, serving
from tests.keys import as_key, make_key, push_secret_model

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path, skops_bytes: bytes
) -> Iterator[InProcessServer]:
    """A secured demo (iris, iris-onnx) with a model only admins should see."""
    home = copy_home(demo_template, tmp_path_factory.mktemp("secure-home"))
    with serving(
        home,
        demo=True,
        demo_models=IRIS_MODELS,
        server={"cors_origins": [ORIGIN]},
        limits={"max_body_bytes": 65536},
    ) as running:
        push_secret_model(running, skops_bytes)
        yield running


def _without_request_id(response: httpx.Response) -> dict[str, object]:
    body: dict[str, object] = response.json()
    body.pop("request_id", None)
    return body


def test_every_endpoint_but_health_needs_a_key(server: InProcessServer) -> None:
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
        ]:
            response = http.request(method, path, json=ROW if method == "POST" else None)
            assert response.status_code == 401, (path, response.text)
            body = response.json()
            code = body["error"]["code"] if path.startswith("/v1/") else body["code"]
            assert code == "unauthenticated", (path, body)
            assert response.headers["www-authenticate"] == "Bearer"


def test_the_openapi_document_can_be_made_private_while_the_pages_stay_public(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "home", auth={"docs_public": False}) as running:
        with running.client(headers={}) as anonymous:
            assert anonymous.get("/openapi.json").status_code == 401
            assert anonymous.get("/docs").status_code == 200  # a page without data
            assert anonymous.get("/console").status_code == 200
            assert anonymous.get("/api/v1/models").status_code == 401
        with running.client() as admin:
            assert "/v2/models/{model}/infer" in admin.get("/openapi.json").json()["paths"]


def test_a_failing_key_store_answers_a_json_500_with_the_request_id(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    """An exception in the layers before any route (here the key lookup, its table
    gone) is answered by the gateway's error boundary, not by a bare server error."""
    import psycopg

    with serving(tmp_path / "home", database_url=postgres_schema_url) as server:
        base, _, options = postgres_schema_url.partition("?")
        schema = options.rpartition("%3D")[2]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{schema}".api_keys CASCADE')
        with as_key(server, "maas_unknownkey_" + "0" * 32) as http:
            answer = http.get("/api/v1/models", headers={"X-Request-ID": "boundary-1"})
        assert answer.status_code == 500, answer.text
        body = answer.json()
        assert (body["code"], body["request_id"]) == ("internal_error", "boundary-1")
        assert "api_keys" not in answer.text  # no exception text in the body


def test_bad_key_is_refused_and_never_echoed_or_logged(server: InProcessServer) -> None:
    bad = "maas_deadbeef_" + "f00d" * 10
    with as_key(server, bad) as http:
        response = http.post("/v2/models/iris/infer", json=ROW)
    with server.client(headers={"X-API-Key": bad + "x"}) as http:
        other = http.get("/api/v1/models")
    assert (response.status_code, other.status_code) == (401, 401)
    assert bad not in response.text and bad not in other.text
    assert bad not in "".join(server.output)


def test_expired_key_is_refused(server: InProcessServer) -> None:
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    expired = make_key(server, role="consumer", expires_at=past)
    live = make_key(server, role="consumer", expires_at=future)
    with as_key(server, expired["key"]) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 401
    with as_key(server, live["key"]) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200


def test_revoked_key_stops_within_a_second(server: InProcessServer) -> None:
    created = make_key(server, role="consumer")
    with as_key(server, created["key"]) as http:
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 200
        with server.client() as admin:
            assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 204
        # No wait: the resolver caches a key for up to a second, but a revocation made
        # through this server's own key store empties its cache at once.
        assert http.post("/v2/models/iris/infer", json=ROW).status_code == 401


def test_rotation_gives_a_new_secret_and_revokes_the_old(server: InProcessServer) -> None:
    created = make_key(server, role="consumer", models=["iris"])
    with server.client() as admin:
        rotated = admin.post(f"/api/v1/keys/{created['id']}/rotate").json()
    assert rotated["key"] != created["key"] and rotated["models"] == ["iris"]
    # At once, as for a revocation: the rotation went through this server's key store.
    with as_key(server, created["key"]) as old, as_key(server, rotated["key"]) as new:
        assert old.post("/v2/models/iris/infer", json=ROW).status_code == 401
        assert new.post("/v2/models/iris/infer", json=ROW).status_code == 200


def test_key_secret_is_shown_once_and_listed_by_prefix(server: InProcessServer) -> None:
    created = make_key(server, role="consumer", name="shown-once")
    assert str(created["key"]).startswith(f"maas_{created['prefix']}_")
    with server.client() as http:
        listed = http.get("/api/v1/keys")
    assert listed.status_code == 200
    mine = next(k for k in listed.json() if k["id"] == created["id"])
    assert "key" not in mine and "key_hash" not in mine and mine["prefix"] == created["prefix"]
    assert str(created["key"]) not in listed.text


def test_consumer_may_infer_but_not_push_or_manage_keys(server: InProcessServer) -> None:
    consumer = make_key(server, role="consumer", models=["iris*"])
    with as_key(server, consumer["key"]) as http:
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


def test_hidden_model_looks_exactly_like_a_missing_one(server: InProcessServer) -> None:
    consumer = make_key(server, role="consumer", models=["iris*"])
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
    with as_key(server, consumer["key"]) as http:
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
    server: InProcessServer, skops_bytes: bytes
) -> None:
    deployer = make_key(server, role="deployer", models=["team-a-*"])
    with as_key(server, deployer["key"]) as http:
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


def test_oversized_and_deeply_nested_bodies_are_refused(server: InProcessServer) -> None:
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


def test_an_upload_typed_as_json_is_streamed_not_parsed(server: InProcessServer) -> None:
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


def test_times_are_compared_in_utc_and_out_of_range_ones_refused(server: InProcessServer) -> None:
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


def test_skops_pipeline_calling_a_sklearn_function_is_refused(
    tmp_path: Path, server: InProcessServer, iris_model: LogisticRegression
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


def test_cors_answers_only_listed_origins(server: InProcessServer) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    with server.client(headers={}) as http:
        allowed = http.options("/v2/models/iris/infer", headers=preflight)
        other = http.options(
            "/v2/models/iris/infer", headers={**preflight, "Origin": "https://evil.example"}
        )
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    assert "access-control-allow-origin" not in other.headers


def test_request_deadline_answers_504(tmp_path: Path) -> None:
    with serving(tmp_path / "home", limits={"request_deadline_s": 0.000001}) as server:
        with server.client() as http:
            response = http.get("/api/v1/models")
        assert (response.status_code, response.json()["code"]) == (504, "request_timeout")
