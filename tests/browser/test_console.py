"""The console in a real browser against a real server: log in, push and promote, call
a model from the V2 form, chat with streaming, embeddings, keys, jobs, usage, audit,
datasets and the offline ``/docs``. Each test saves screenshots of the pages it sees."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import skops.io
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.browser.conftest import Guarded
from tests.integration.server import RunningServer

ROW = [5.1, 3.5, 1.4, 0.2]
#: The first test waits for the demo server (its first start dequantizes the chat
#: model) and the optimize job runs a process of its own: minutes on a busy machine.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An iris classifier as .skops and as ONNX (another signature), and its data as CSV."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    folder = tmp_path_factory.mktemp("iris")
    skops.io.dump(model, folder / "flowers.skops")
    onnx_model = convert_sklearn(
        model,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
    )
    (folder / "flowers.onnx").write_bytes(onnx_model.SerializeToString())
    lines = ["sepal_length,sepal_width,petal_length,petal_width,label"]
    rows = zip(features, labels, strict=True)
    lines += [",".join(map(str, row)) + f",{label}" for row, label in rows]
    (folder / "iris.csv").write_text("\n".join(lines) + "\n")
    return {
        "skops": folder / "flowers.skops",
        "onnx": folder / "flowers.onnx",
        "csv": folder / "iris.csv",
    }


def _chart_total(page: Any, selector: str) -> float:
    """The sum of every value a Chart.js chart on the page shows."""
    return float(
        page.evaluate(
            """(selector) => {
                const chart = Chart.getChart(document.querySelector(selector));
                return chart.data.datasets.flatMap((d) => d.data).reduce((s, v) => s + (v || 0), 0);
            }""",
            f"{selector} canvas",
        )
    )


def test_root_redirects_to_a_login_that_refuses_a_bad_key_and_lists_the_demo(
    console: Guarded, server: RunningServer
) -> None:
    page = console.page
    page.goto(server.url + "/")
    assert page.url.startswith(server.url + "/console")
    console.shot("login")
    page.get_by_label("API key").fill("maas_not_a_real_key")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("This key is not valid").wait_for()
    # By keyboard alone: the key field has the focus, Enter logs in.
    page.keyboard.type(server.api_key or "")
    page.keyboard.press("Enter")
    page.locator("#main h1", has_text="Overview").wait_for()
    assert page.evaluate("sessionStorage.getItem('maas.apiKey')") == server.api_key
    page.locator("#stat-health .badge", has_text="ready").wait_for()
    page.locator("#stat-loaded", has_text=re.compile(r"[1-9]")).wait_for()
    console.shot("overview")
    console.open("models")
    for name in ("iris", "iris-onnx", "smollm2", "minilm"):
        page.get_by_role("link", name=name, exact=True).wait_for()
    page.get_by_label("Search models").fill("onnx")
    assert page.get_by_role("link", name="iris", exact=True).count() == 0
    page.get_by_role("link", name="iris-onnx", exact=True).wait_for()
    console.shot("models")


def test_the_page_guard_catches_a_request_to_another_host(
    console: Guarded, server: RunningServer
) -> None:
    """The check every test ends with can fail: a request off loopback is caught, by the
    route on a page without a CSP (/docs) and by the CSP report on the console."""
    fetch_elsewhere = "fetch('http://example.com/x').catch(() => null)"
    console.page.goto(server.url + "/docs")
    console.page.evaluate(fetch_elsewhere)
    console.page.wait_for_timeout(300)
    assert console.foreign == ["http://example.com/x"]
    console.foreign.clear()
    console.log_in()
    console.page.evaluate(fetch_elsewhere)
    console.page.wait_for_timeout(300)
    assert console.foreign
    assert all("example.com" in message for message in console.foreign)
    console.foreign.clear()


def test_push_by_upload_promote_past_the_signature_guard_and_call_from_the_v2_form(
    console: Guarded, iris_files: dict[str, Path]
) -> None:
    page = console.page
    console.log_in()
    console.open("models")
    page.get_by_label("Model name").fill("flowers")
    page.get_by_label("Alias for the new version").fill("production")
    page.locator("#push-file").set_input_files(str(iris_files["skops"]))
    page.get_by_role("button", name="Push").click()
    page.get_by_role("heading", name="flowers:1").wait_for()
    # The second version, dropped on the drop zone, takes float_input (FP32): another
    # signature.
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name));
            const zone = document.getElementById("push-dropzone");
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        ["flowers.onnx", base64.b64encode(iris_files["onnx"].read_bytes()).decode()],
    )
    page.get_by_text("flowers.onnx (").wait_for()
    page.get_by_role("button", name="Push").click()
    page.get_by_role("heading", name="flowers:2").wait_for()
    console.shot("model-detail")
    page.get_by_label("Version", exact=True).select_option("2")
    page.get_by_role("button", name="Promote").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("signature").wait_for()
    console.shot("promote-signature-guard")
    dialog.get_by_role("button", name="Force promote").click()
    page.get_by_text("flowers:production → 2").wait_for()

    console.open("playground/v2/flowers/2")
    page.get_by_label(re.compile(r"^float_input · FP32")).fill(f"[{ROW}]")
    page.get_by_role("button", name="Run inference").click()
    output = page.locator("#v2-output")
    output.get_by_text("flowers:2").wait_for()
    label_row = output.locator("tr", has_text="label")
    assert label_row.locator("pre").inner_text() == "[0]"
    console.shot("playground-v2")


def test_chat_streams_tokens_and_embeddings_compare_two_texts(console: Guarded) -> None:
    page = console.page
    console.log_in()
    console.open("playground/chat")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("System prompt").fill("You are a concise assistant.")
    # Count the times the answer grows: a streamed answer grows chunk by chunk.
    page.evaluate(
        """() => {
            window.__grew = 0;
            const log = document.getElementById("chat-log");
            new MutationObserver(() => { window.__grew += 1; })
                .observe(log, {subtree: true, characterData: true, childList: true});
        }"""
    )
    page.get_by_label("Message").fill("What is the capital of Germany?")
    page.get_by_role("button", name="Send").click()
    page.locator("#chat-stats", has_text="tokens/s").wait_for(timeout=120_000)
    answer = page.locator(".msg.assistant").inner_text()
    assert answer.strip()
    assert page.evaluate("window.__grew") > 3, "the answer arrived in one piece, not streamed"
    stats = page.locator("#chat-stats").inner_text()
    assert re.search(r"prompt \d+ tokens · completion \d+ tokens", stats)
    console.shot("playground-chat")

    page.get_by_role("tab", name="Embeddings").click()
    page.get_by_role("button", name="Compare").click()
    result = page.locator("#emb-result", has_text="cosine similarity")
    result.wait_for()
    cosine = float(re.search(r"cosine similarity: (-?[\d.]+)", result.inner_text()).group(1))  # type: ignore[union-attr]
    assert 0.3 < cosine <= 1.0  # two sentences about a leaking pump
    console.shot("playground-embeddings")


def test_a_created_key_works_until_revoked_and_sees_only_what_it_may(
    console: Guarded, browser: Any, server: RunningServer
) -> None:
    page = console.page
    console.log_in()
    console.open("keys")
    page.get_by_label("Name", exact=True).fill("browser-app")
    page.get_by_label("Role", exact=True).select_option("consumer")
    page.get_by_label("Model patterns").fill("iris*")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("maas_")
    console.shot("keys-created")

    other = Guarded(browser.new_context().new_page(), server, "consumer")
    try:
        other.log_in(secret)
        assert other.page.get_by_role("link", name="API keys").is_hidden()
        other.open("models")
        other.page.get_by_role("link", name="iris", exact=True).wait_for()
        assert other.page.get_by_role("link", name="smollm2", exact=True).count() == 0
        assert other.page.get_by_role("button", name="Push").count() == 0
        other.shot("models-as-consumer")

        page.get_by_role("button", name="Revoke browser-app").click()
        page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
        page.locator("#keys-table tr", has_text="browser-app").get_by_text("revoked").wait_for()
        console.shot("keys-revoked")
        with httpx.Client(base_url=server.url) as http:
            answer = http.get("/api/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 401
        other.page.reload()
        other.page.get_by_text("Log in again").wait_for()
        assert other.page.get_by_role("button", name="Log in").is_visible()
        assert not other.foreign and not other.errors
    finally:
        other.page.context.close()


def test_an_optimize_job_from_the_form_shows_its_report(
    console: Guarded, iris_files: dict[str, Path]
) -> None:
    page = console.page
    console.log_in()
    console.open("datasets")
    page.get_by_label("File (CSV, Parquet or JSONL)").set_input_files(str(iris_files["csv"]))
    page.get_by_label("Dataset name").fill("iris-data")
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("button", name="iris-data").click()
    preview = page.locator("#dataset-preview")
    preview.get_by_text("iris-data: 150 rows").wait_for()
    assert preview.locator("th", has_text="petal_width").count() >= 1
    console.shot("datasets")

    console.open("jobs")
    page.get_by_label("Kind").select_option("optimize")
    page.get_by_label("Model", exact=True).fill("iris")
    page.get_by_label("Version or alias").fill("1")
    page.get_by_label("Dataset", exact=True).fill("iris-data")
    page.get_by_label("Target column").fill("label")
    page.get_by_label("Method").select_option("onnx")
    page.get_by_role("button", name="Submit").click()
    page.locator("#job-state", has_text="succeeded").wait_for(timeout=180_000)
    report = page.locator("#optimization-report")
    report.wait_for()
    assert report.locator("tr", has_text="size").count() == 1
    assert report.locator("tr", has_text="quality: accuracy").count() == 1
    assert _chart_total(page, "#optimization-report .chart-box") > 0  # the first: sizes
    assert "onnx" in page.locator("#job-logs").inner_text()
    console.shot("job-report")
    console.open("jobs")
    console.shot("jobs")


def test_usage_chart_counts_new_calls_and_audit_and_deployment_pages_show(
    console: Guarded, server: RunningServer
) -> None:
    page = console.page
    console.log_in()
    console.open("usage")
    page.locator("#usage-totals", has_text="requests").wait_for()
    before = _chart_total(page, "#usage-chart")
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": ROW}]}
    with server.client() as http:
        for _ in range(3):
            assert http.post("/v2/models/iris/infer", json=body).status_code == 200
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function(
        """([selector, before]) => {
            const values = Chart.getChart(document.querySelector(selector))
                .data.datasets.flatMap((d) => d.data);
            return values.reduce((s, v) => s + (v || 0), 0) >= before + 3;
        }""",
        arg=["#usage-chart canvas", before],
    )
    console.shot("usage")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.startswith("key,model,day,requests")
    assert "iris" in csv_text

    console.open("audit")
    page.get_by_label("Action").select_option("key.create")
    page.get_by_role("button", name="Filter").click()
    console.shot("audit")

    console.open("models/iris-onnx/1")
    status = page.locator("#deployment-status")
    status.get_by_text("ready").first.wait_for()
    page.get_by_role("button", name="Unload").click()
    status.get_by_text("unloaded").first.wait_for()
    page.get_by_role("button", name="Load", exact=True).click()
    status.locator(".badge", has_text="ready").first.wait_for()
    console.shot("deployment")

    console.open("overview")
    page.locator("#stat-rpm", has_text=re.compile(r"[1-9]")).wait_for()


def test_docs_render_offline_and_call_with_the_console_key(
    console: Guarded, server: RunningServer
) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/docs").status_code == 200
        assert anonymous.get("/openapi.json").json()["components"]["securitySchemes"]["bearer"]
        assert anonymous.get("/api/v1/models").status_code == 401
    page = console.page
    console.log_in()  # the docs page borrows the console's key from this tab's session
    page.goto(server.url + "/docs")
    page.locator(".swagger-ui .info .title", has_text="maas").wait_for()
    operation = page.locator("#operations-models-list_models_api_v1_models_get")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert "iris" in operation.locator(".live-responses-table tbody .microlight").first.inner_text()
    console.shot("docs")
