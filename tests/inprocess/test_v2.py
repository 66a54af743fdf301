"""KServe V2 over the app in process: JSON inference, bad input, health. tritonclient,
which needs a socket, is in ``tests/integration/test_v2.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.demo_home import IRIS_MODELS, copy_home
from tests.inprocess.app import InProcessServer, serving

IRIS_ROW = {"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


def test_json_infer_with_curl_shape_and_version_header(demo_server: InProcessServer) -> None:
    body = {
        "id": "abc",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP64",
                "shape": [2, 4],
                "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
            }
        ],
        "outputs": [{"name": "predict"}],
    }
    with demo_server.client() as http:
        response = http.post("/v2/models/iris/versions/production/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1"
    payload = response.json()
    assert payload["model_name"] == "iris"
    assert payload["model_version"] == "1"
    assert payload["id"] == "abc"
    assert payload["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    ]


def _infer_json(
    server: InProcessServer, path: str, **kwargs: object
) -> tuple[int, dict[str, object]]:
    with server.client() as http:
        response = http.post(path, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "shape": [1, 3]}]}},
            400,
            "shape_mismatch",
            id="shape-vs-data",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "shape": [2, 2]}]}},
            400,
            "shape_mismatch",
            id="shape-vs-signature",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "datatype": "FP99"}]}},
            400,
            "unsupported_datatype",
            id="unknown-datatype",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}},
            400,
            "invalid_input",
            id="strings-to-float-model",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "data": ["x", 1, 2, 3]}]}},
            400,
            "invalid_input",
            id="data-not-of-datatype",
        ),
        pytest.param(
            "/v2/models/nope/infer",
            {"json": {"inputs": [IRIS_ROW]}},
            404,
            "model_not_found",
            id="unknown-model",
        ),
        pytest.param(
            "/v2/models/iris/versions/99/infer",
            {"json": {"inputs": [IRIS_ROW]}},
            404,
            "version_not_found",
            id="unknown-version",
        ),
        pytest.param(
            "/v2/models/iris/versions/canary/infer",
            {"json": {"inputs": [IRIS_ROW]}},
            404,
            "alias_not_found",
            id="unknown-alias",
        ),
        pytest.param("/v2/models/iris/infer", {}, 400, "invalid_input", id="missing-body"),
        pytest.param(
            "/v2/models/iris/infer",
            {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
            400,
            "invalid_input",
            id="malformed-json",
        ),
        pytest.param(
            "/v2/models/iris/infer", {"json": {"inputz": []}}, 400, "invalid_input", id="no-inputs"
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [IRIS_ROW], "outputs": [{"name": "nope"}]}},
            400,
            "invalid_input",
            id="unknown-output",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "name": "other"}]}},
            400,
            "invalid_input",
            id="unknown-input-name",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"content": b"{}", "headers": {"Inference-Header-Content-Length": "999"}},
            400,
            "invalid_input",
            id="header-length-past-body",
        ),
    ],
)
def test_bad_inference_requests_get_clear_4xx(
    demo_server: InProcessServer, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    got_status, body = _infer_json(demo_server, path, **kwargs)
    assert (got_status, body["code"]) == (status, code), body
    assert isinstance(body["error"], str) and body["error"]


def test_oversized_body_is_refused_with_413(tmp_path: Path, demo_template: Path) -> None:
    home = copy_home(demo_template, tmp_path / "home")
    with serving(
        home, demo=True, demo_models=IRIS_MODELS, limits={"max_body_bytes": 4096}
    ) as server:
        big = {"inputs": [{**IRIS_ROW, "shape": [500, 4], "data": [1.0] * 2000}]}
        status, body = _infer_json(server, "/v2/models/iris/infer", json=big)
        assert (status, body["code"]) == (413, "payload_too_large")

        # A chunked body without Content-Length is capped while it streams.
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b" " * 1000

        status, body = _infer_json(server, "/v2/models/iris/infer", content=chunks())
        assert (status, body["code"]) == (413, "payload_too_large")
        # The server still answers afterwards.
        status, _ = _infer_json(server, "/v2/models/iris/infer", json={"inputs": [IRIS_ROW]})
        assert status == 200


def test_unknown_route_and_method_are_json_errors(demo_server: InProcessServer) -> None:
    with demo_server.client() as http:
        missing = http.get("/v2/nothing/here")
        wrong_method = http.get("/v2/models/iris/infer")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")


def test_health_endpoints(demo_server: InProcessServer) -> None:
    with demo_server.client() as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2/models/iris/ready").status_code == 200
        assert http.get("/v2/models/iris/versions/1/ready").json()["ready"] is True
        assert http.get("/v2/models/nope/ready").status_code == 404


def test_readiness_names_the_aliased_versions_not_serving(
    tmp_path: Path, iris_skops: Path, iris: tuple[Any, Any]
) -> None:
    """A start whose aliased version cannot load (its blob damaged on disk) is live but
    not ready, and readiness says which version it is waiting for; the others serve."""
    import skops.io
    from sklearn.tree import DecisionTreeClassifier

    other = tmp_path / "tree.skops"
    skops.io.dump(DecisionTreeClassifier(random_state=0).fit(*iris), other)
    home = tmp_path / "home"
    with serving(home) as first, first.client() as http:
        for name, path in (("broken", iris_skops), ("fine", other)):
            pushed = http.post(
                f"/api/v1/models/{name}/versions",
                params={"filename": path.name, "alias": "production"},
                content=path.read_bytes(),
            )
            assert pushed.status_code == 201, pushed.text
        digest = http.get("/api/v1/models/broken/versions/1").json()["digest"]
    hex_digest = digest.removeprefix("sha256:")
    (home / "artifacts" / "sha256" / hex_digest[:2] / hex_digest).write_bytes(b"damaged")
    with serving(home) as restarted, restarted.client() as http:
        assert http.get("/v2/health/live").status_code == 200
        ready = http.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "loading": ["broken:1"]}
        assert http.get("/v2/models/fine/ready").status_code == 200
        assert http.post("/v2/models/fine/infer", json={"inputs": [IRIS_ROW]}).status_code == 200
