"""What the console stands on: its pages and /docs are public and local-only, and the
small endpoints it added (whoami, dataset preview, load/unload, loaded deployments, key
last use) answer over the app in process, with the same key checks as everything else."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.inprocess.app import InProcessServer

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture(scope="module")
def server(demo_server: InProcessServer) -> InProcessServer:
    return demo_server


def _consumer(http: httpx.Client, name: str, models: list[str]) -> dict[str, str]:
    created = http.post("/api/v1/keys", json={"name": name, "role": "consumer", "models": models})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and tag in ("script", "link", "img"):
                self.links.append(value)


def test_pages_are_public_and_load_only_files_of_this_server(server: InProcessServer) -> None:
    with server.client(headers={}) as anonymous:
        root = anonymous.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"].endswith("/console")
        for page in ("/console", "/docs"):
            answer = anonymous.get(page)
            assert answer.status_code == 200, page
            parser = _Links()
            parser.feed(answer.text)
            assert parser.links, page
            for link in parser.links:
                if link.startswith("data:"):
                    continue
                assert link.startswith("/"), f"{page} loads {link} from elsewhere"
                assert anonymous.get(link).status_code == 200, link
        assert "connect-src 'self'" in anonymous.get("/console").headers["content-security-policy"]
        assert anonymous.get("/console/static/js/pages/models.js").status_code == 200
        assert anonymous.get("/console/static/%2e%2e/%2e%2e/auth.py").status_code == 404
        schemes = anonymous.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes["bearer"]["scheme"] == "bearer"
        assert schemes["apiKey"]["name"] == "X-API-Key"
        assert anonymous.get("/api/v1/whoami").status_code == 401


def test_no_console_or_docs_file_names_another_host() -> None:
    """The console's own files (not the vendored libraries' licence comments) load no
    script, style or font from a CDN."""
    static = Path(__file__).parents[2] / "src" / "maas" / "api" / "console" / "static"
    own = [p for p in static.rglob("*") if p.is_file() and "vendor" not in p.parts]
    assert own
    for path in own:
        assert not re.search(r"https?://", path.read_text()), path


def test_whoami_tells_each_key_its_role_patterns_and_actions(server: InProcessServer) -> None:
    with server.client() as admin:
        me = admin.get("/api/v1/whoami").json()
        assert me["role"] == "admin"
        assert me["actions"] == ["read", "infer", "write", "admin", "metrics"]
        consumer = _consumer(admin, "whoami-app", ["iris*"])
        them = admin.get("/api/v1/whoami", headers=consumer).json()
    assert them["name"] == "whoami-app" and them["role"] == "consumer"
    assert them["models"] == ["iris*"] and them["actions"] == ["read", "infer"]
    assert them["key_id"] != me["key_id"]


def test_dataset_preview_shows_the_first_rows_to_keys_that_may_see_it(
    server: InProcessServer,
) -> None:
    csv = b"x,y,label\n1,2.5,a\n3,4.5,b\n5,6.5,c\n"
    with server.client() as admin:
        pushed = admin.post("/api/v1/datasets?name=points&filename=points.csv", content=csv)
        assert pushed.status_code == 201, pushed.text
        preview = admin.get("/api/v1/datasets/points/preview?limit=2").json()
        assert preview["rows"] == 3
        assert [c["name"] for c in preview["columns"]] == ["x", "y", "label"]
        assert preview["head"] == [
            {"x": 1, "y": 2.5, "label": "a"},
            {"x": 3, "y": 4.5, "label": "b"},
        ]
        assert admin.get("/api/v1/datasets/points/preview?limit=0").status_code in (400, 422)
        assert admin.get("/api/v1/datasets/nothing/preview").status_code == 404
        outsider = _consumer(admin, "preview-outsider", ["iris*"])
        hidden = admin.get("/api/v1/datasets/points/preview", headers=outsider)
    assert hidden.status_code == 404 and hidden.json()["code"] == "dataset_not_found"


def test_a_version_unloads_and_loads_on_demand_and_only_writers_may(
    server: InProcessServer,
) -> None:
    base = "/api/v1/models/iris-onnx/versions/1/deployment"
    with server.client() as admin:
        loaded = {(d["model"], d["version"]) for d in admin.get("/api/v1/deployments").json()}
        assert ("iris-onnx", 1) in loaded
        unloaded = admin.post(f"{base}/unload")
        assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
        loaded = {(d["model"], d["version"]) for d in admin.get("/api/v1/deployments").json()}
        assert ("iris-onnx", 1) not in loaded
        ready = admin.post(f"{base}/load").json()
        assert ready["state"] == "ready" and ready["ready"] is True
        assert admin.get(f"{base}/status").json()["state"] == "ready"
        consumer = _consumer(admin, "loader", ["iris*"])
        assert admin.post(f"{base}/unload", headers=consumer).status_code == 403
        assert admin.post("/api/v1/models/iris-onnx/versions/9/deployment/load").status_code == 404
        seen = {(d["model"]) for d in admin.get("/api/v1/deployments", headers=consumer).json()}
        assert seen <= {"iris", "iris-onnx"}
        actions = [r["action"] for r in admin.get("/api/v1/audit?limit=20").json()]
    assert "deployment.unload" in actions and "deployment.load" in actions


def test_keys_show_when_they_were_last_used(server: InProcessServer) -> None:
    with server.client() as admin:
        consumer = _consumer(admin, "last-used-app", ["iris"])
        key_id = admin.get("/api/v1/whoami", headers=consumer).json()["key_id"]
        assert key_id not in admin.get("/api/v1/keys/last-used").json()
        assert admin.post("/v2/models/iris/infer", json=ROW, headers=consumer).status_code == 200
        last = admin.get("/api/v1/keys/last-used").json()
        assert admin.get("/api/v1/keys/last-used", headers=consumer).status_code == 403
    used_at = datetime.fromisoformat(last[key_id])
    assert used_at.tzinfo is not None
    assert abs((datetime.now(UTC) - used_at).total_seconds()) < 600


def test_cluster_status_shows_this_host_and_where_replicas_run_to_admins_only(
    server: InProcessServer,
) -> None:
    with server.client() as admin:
        assert admin.post("/v2/models/iris/infer", json=ROW).is_success
        body = admin.get("/api/v1/cluster").json()
        consumer = _consumer(admin, "cluster-peeker", ["*"])
        refused = admin.get("/api/v1/cluster", headers=consumer)
    assert body["backend"] == "local" and body["address"] is None
    [node] = body["nodes"]
    assert node["alive"] and node["is_head"] and node["resources"]["CPU"] >= 1
    iris = next(d for d in body["deployments"] if d["model"] == "iris")
    assert iris["state"] == "ready" and iris["replicas"], iris
    assert all(r["node"] == node["node_id"] and r["pid"] > 0 for r in iris["replicas"])
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden", refused.text
