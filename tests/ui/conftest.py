"""The UI tests: a real server (`runtime run --all`, SQLite, a fresh data dir, a free
port) per test, and Debian's Chromium driven by Playwright.

Screenshots go to ``build/ui-screenshots/`` (or ``$RUNTIME_UI_SCREENSHOTS``)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.requirements import missing

CHROMIUM = os.environ.get("RUNTIME_UI_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("RUNTIME_UI_SCREENSHOTS", ROOT / "build" / "ui-screenshots"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    auth: tuple[str, str] | None = None

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
        """A call to the API (test set-up), JSON answer decoded."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        for key, value in headers.items():
            request.add_header(key.replace("_", "-"), value)
        if self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def deploy(self, source: str) -> Any:
        return self.request(
            "POST", "/api/v1/flows", source.encode(), content_type="application/x-yaml"
        )

    def wait_execution(self, execution_id: str, states: set[str], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            execution = self.request("GET", f"/api/v1/executions/{execution_id}")
            if execution["state"]["current"] in states:
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{execution_id} is {execution['state']['current']}, not {states}"
                )
            time.sleep(0.1)


def start_server(tmp_path: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    environ = {
        **os.environ,
        "RUNTIME_DATA_DIR": str(tmp_path / "data"),
        "RUNTIME_WEBSERVER_PORT": str(port),
        "RUNTIME_WEBSERVER_POLL_SECONDS": "0.1",
        **(env or {}),
    }
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "--all"],
            cwd=ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    "the server did not start:\n" + (tmp_path / "server.log").read_text()
                ) from None
            time.sleep(0.1)
    return Server(url=url, process=process)


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path)
    try:
        yield running
    finally:
        stop_server(running)


# Module scope, not session: Playwright's sync API keeps its event loop set as the
# running one while it is open, which would break the asyncio tests run after these.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing(f"no Chromium at {CHROMIUM}: run .ci/services.d/chromium.sh")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1400, "height": 900}, timezone_id="UTC"
    )
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        context.close()
    # an uncaught exception in the app is a bug even when the page looked right
    assert not errors, f"JavaScript errors in the page: {errors}"


def shot(page: Any, name: str) -> None:
    """Saves a screenshot of the page as it is now."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)
