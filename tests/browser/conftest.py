"""Browser tests: Playwright drives Debian's chromium against a real ``maas serve``.

Every page may talk to the server under test only: a request for any other host is
blocked and fails the test. Screenshots of each page go to ``tests/browser/artifacts``
(kept by CI as artifacts, ignored by git). Without Playwright or chromium the tests skip
with the reason; CI (``.ci/run``) installs both, and with ``MAAS_REQUIRE_SERVICES`` set
a missing one fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.demo_home import copy_home
from tests.integration.server import ALL_DEMO, RunningServer, start_server
from tests.llm_models import minilm_dir, smollm2_gguf

ARTIFACTS = Path(__file__).parent / "artifacts"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: The visible inputs, selects and text areas that neither a <label> nor aria-label names.
_UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((el) => el.offsetParent !== null)
    .filter((el) => !el.labels?.length && !el.getAttribute("aria-label"))
    .map((el) => el.outerHTML.slice(0, 120))"""


def _chromium() -> str:
    reason = None
    if importlib.util.find_spec("playwright") is None:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    path = os.environ.get("MAAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if reason is None and not Path(path).exists():
        reason = "chromium is not installed (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("MAAS_REQUIRE_SERVICES"):
            pytest.fail(reason + " (MAAS_REQUIRE_SERVICES is set)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Package-scoped, not session-scoped: Playwright's sync API runs an event loop in
    this thread until it stops, and every asyncio test collected after the browser tests
    would fail with "Cannot run the event loop while another loop is running"."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox cannot start.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def server(
    tmp_path_factory: pytest.TempPathFactory, browser: Any, demo_template: Path
) -> Iterator[RunningServer]:
    """The demo with its chat and embedding models, as README command 1 starts it (on
    a copy of the session's iris demo: the language models register at this start)."""
    smollm2_gguf(), minilm_dir()  # skip (or fail in CI) without the model packages
    running = start_server(
        copy_home(demo_template, tmp_path_factory.mktemp("console-home")),
        "--demo",
        env={"MAAS_DEMO_MODELS": ALL_DEMO},
        timeout_s=600,  # a first start dequantizes the chat model: minutes on a busy machine
    )
    yield running
    assert running.stop() in (0, -signal.SIGTERM), "".join(running.output)


class Guarded:
    """A page whose every request is checked: loopback only, and no key in any URL."""

    def __init__(self, page: Any, server: RunningServer, name: str) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.foreign: list[str] = []
        self.keys_in_urls: list[str] = []
        self.errors: list[str] = []
        page.route("**/*", self._check)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # The console's Content-Security-Policy stops a request to another host before
        # it reaches the network (and the route above); the browser reports it here.
        if "Content Security Policy" in message.text:
            self.foreign.append(message.text)

    def _check(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            route.continue_()
            return
        if parts.hostname not in _LOOPBACK:
            self.foreign.append(url)
            route.abort()
            return
        if "maas_" in url:
            self.keys_in_urls.append(url)
        route.continue_()

    def log_in(self, key: str | None = None) -> None:
        self.page.goto(self.server.url + "/")
        self.page.get_by_label("API key").fill(key or self.server.api_key or "")
        self.page.get_by_role("button", name="Log in").click()
        self.page.locator("#main h1").first.wait_for()

    def open(self, route: str) -> None:
        """A console page by its hash route, e.g. ``models/iris``."""
        self.page.goto(f"{self.server.url}/console#/{route}")
        self.page.locator("#main h1").first.wait_for()

    def shot(self, label: str) -> None:
        """Save a screenshot; on the console's pages, check first that every visible
        form control has a label a screen reader can read."""
        if "/console" in self.page.url:
            unlabelled = self.page.evaluate(_UNLABELLED)
            assert not unlabelled, f"controls without a label on {label}: {unlabelled}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{label}.png"), full_page=True)


@pytest.fixture
def console(
    browser: Any, server: RunningServer, request: pytest.FixtureRequest
) -> Iterator[Guarded]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(120_000)  # a push loads and warms the model: slow when busy
    guarded = Guarded(context.new_page(), server, request.node.name)
    yield guarded
    context.close()
    assert not guarded.foreign, f"the page asked for non-loopback URLs: {guarded.foreign}"
    assert not guarded.keys_in_urls, f"an API key appeared in a URL: {guarded.keys_in_urls}"
    assert not guarded.errors, f"uncaught errors in the page: {guarded.errors}"
