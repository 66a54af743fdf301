"""The management API in process: names, uploads and version selectors it refuses, on
both registry backends. Pushing with the SDK and CLI is in
``tests/integration/test_management.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import POSTGRES_URL, require_service
from tests.demo_home import IRIS_MODELS, copy_home
from tests.inprocess.app import InProcessServer, serving


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[InProcessServer]:
    """An empty server of its own, for tests that change the registry."""
    with serving(tmp_path / "home") as server:
        yield server


ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1, 0]}]}
HUGE = "99999999999999999999"  # past SQLite's 64-bit integers
PAST_INT32 = str(2**31)  # past PostgreSQL's INTEGER


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo_on(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    demo_template: Path,
) -> Iterator[InProcessServer]:
    """A demo on each registry backend: they overflow at different numbers, and
    PostgreSQL refuses NUL in any text, even one it only compares."""
    home = tmp_path_factory.mktemp(f"odd-{request.param}")
    settings: dict[str, Any] = {"demo": True, "demo_models": IRIS_MODELS}
    if request.param == "sqlite":
        with serving(copy_home(demo_template, home), **settings) as server:
            yield server
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = f"it_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        with serving(home, database_url=url, **settings) as server:
            yield server
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize("name", ["../etc", "a/b", "Upper", "..", "x..y", "-lead"])
def test_bad_model_names_are_refused(
    fresh_server: InProcessServer, iris_skops: Path, name: str
) -> None:
    with fresh_server.client() as http:
        response = http.post(
            f"/api/v1/models/{name}/versions",
            params={"filename": "iris.skops"},
            content=iris_skops.read_bytes(),
        )
        created = http.post("/api/v1/models", json={"name": name})
    assert response.status_code in (400, 404), response.text
    assert created.status_code == 400 and created.json()["code"] == "invalid_name"


def test_garbage_upload_and_bad_alias_and_traversal_filename(
    fresh_server: InProcessServer, iris_skops: Path
) -> None:
    with fresh_server.client() as http:
        garbage = http.post(
            "/api/v1/models/junk/versions", params={"filename": "x.onnx"}, content=b"not a model"
        )
        assert (garbage.status_code, garbage.json()["code"]) == (400, "unsupported_artifact")
        sneaky = http.post(
            "/api/v1/models/junk/versions",
            params={"filename": "../../x.skops"},
            content=iris_skops.read_bytes(),
        )
        assert sneaky.status_code == 400
        numeric_alias = http.post(
            "/api/v1/models/junk/versions",
            params={"filename": "iris.skops", "alias": "12"},
            content=iris_skops.read_bytes(),
        )
        assert (numeric_alias.status_code, numeric_alias.json()["code"]) == (400, "invalid_name")
        assert http.get("/api/v1/models").json() == []
        empty = http.post(
            "/api/v1/models/junk/versions", params={"filename": "x.skops"}, content=b""
        )
        assert empty.status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        # "³" passes str.isdigit() but not int(): it is no number, and no alias name either.
        ("GET", "/v2/models/iris/versions/%C2%B3", None, 400, "invalid_name"),
        ("GET", "/v2/models/iris/versions/%C2%B3/ready", None, 400, "invalid_name"),
        ("POST", "/v2/models/iris/versions/%C2%B3/infer", ROW, 400, "invalid_name"),
        ("GET", "/api/v1/models/iris/versions/%C2%B3", None, 400, "invalid_name"),
        ("GET", "/api/v1/models/iris/versions/%C2%B3/deployment/status", None, 400, "invalid_name"),
        # A number past the columns is a version that does not exist.
        ("GET", f"/v2/models/iris/versions/{PAST_INT32}", None, 404, "version_not_found"),
        ("GET", f"/v2/models/iris/versions/{HUGE}/ready", None, 404, "version_not_found"),
        ("POST", f"/v2/models/iris/versions/{HUGE}/infer", ROW, 404, "version_not_found"),
        ("GET", f"/api/v1/models/iris/versions/{HUGE}", None, 404, "version_not_found"),
        pytest.param(
            *("GET", "/api/v1/models/iris/versions/" + "9" * 5000, None),
            *(404, "version_not_found"),
            id="GET-5000-digits",
        ),
        ("DELETE", f"/api/v1/models/iris/versions/{HUGE}", None, 404, "version_not_found"),
        ("DELETE", f"/api/v1/models/iris/versions/{PAST_INT32}", None, 404, "version_not_found"),
        ("PUT", f"/api/v1/models/iris/versions/{HUGE}/deployment", {}, 404, "version_not_found"),
        (
            "GET",
            f"/api/v1/models/iris/versions/{HUGE}/deployment/status",
            None,
            404,
            "version_not_found",
        ),
        # In a body, the version number is a field with a range.
        ("PUT", "/api/v1/models/iris/aliases/x", {"version": 1e20}, 400, "invalid_request"),
        ("PUT", "/api/v1/models/iris/aliases/x", {"version": 2**31}, 400, "invalid_request"),
        (
            "PUT",
            "/api/v1/models/iris/versions/1/deployment",
            {"max_queue_delay_us": 10**30},
            400,
            "invalid_request",
        ),
    ],
)
def test_odd_version_selectors_are_refused_or_not_found(
    demo_on: InProcessServer, method: str, path: str, body: object, status: int, code: str
) -> None:
    with demo_on.client() as http:
        answer = http.request(method, path, json=body)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert http.get("/api/v1/models/iris").json()["aliases"] == {"production": 1}
        assert http.get("/api/v1/models/iris/versions/1").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/api/v1/models/%00", {}, 400, "invalid_input"),
        ("DELETE", "/api/v1/models/%00", {}, 400, "invalid_input"),
        ("GET", "/v2/models/%00/ready", {}, 400, "invalid_input"),
        ("GET", "/api/v1/jobs", {"params": {"model": "\x00"}}, 400, "invalid_input"),
        (
            "POST",
            "/api/v1/models",
            {"json": {"name": "m", "description": "a\x00"}},
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/api/v1/models",
            {
                "content": b'{"name": "m", "description": "\\ud800"}',
                "headers": {"Content-Type": "application/json"},
            },
            400,
            "invalid_input",
        ),
        ("POST", "/api/v1/keys", {"json": {"name": "k", "owner": "a\x00"}}, 400, "invalid_input"),
        (
            "POST",
            "/api/v1/models",
            {"json": {"name": "m", "task": "x" * 65}},
            400,
            "invalid_request",
        ),
    ],
)
def test_text_no_database_stores_is_refused(
    demo_on: InProcessServer,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    with demo_on.client() as http:
        answer = http.request(method, path, **kwargs)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
        assert "m" not in {model["name"] for model in http.get("/api/v1/models").json()}


def test_uploads_with_unstorable_metadata_or_filename_are_refused_and_audit_goes_on(
    demo_on: InProcessServer, iris_skops: Path
) -> None:
    content = iris_skops.read_bytes()
    with demo_on.client() as http:
        for params, code in [
            ({"filename": "iris.skops", "metadata": '{"team": "a\\u0000"}'}, "invalid_input"),
            ({"filename": "x" * 250 + ".skops"}, "invalid_request"),  # past String(255)
        ]:
            answer = http.post("/api/v1/models/odd/versions", params=params, content=content)
            assert (answer.status_code, answer.json()["code"]) == (400, code), answer.text
        assert http.get("/api/v1/models/odd").status_code == 404
        # Nothing unstorable reached the audit log's batch: later records are written.
        assert http.post("/api/v1/models", json={"name": "after-odd"}).status_code == 201
        audit = http.get("/api/v1/audit", params={"action": "model.create"}).json()
        assert "after-odd" in {record["target"] for record in audit}


def test_openapi_page_documents_the_api(fresh_server: InProcessServer) -> None:
    with fresh_server.client() as http:
        spec = http.get("/openapi.json").json()
        docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    for path in ("/api/v1/models/{name}/versions", "/v2/models/{model}/infer", "/v2/health/ready"):
        assert path in spec["paths"]
