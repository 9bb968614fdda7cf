"""The http() template function against a real local server: bounded in time and
size, refused where the render cannot wait (the engine's sync renders)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from runtime.flow import template_http
from runtime.flow.template import TemplateError, render, render_async


class _Handler(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.hits.append(self.path)
        if self.path == "/slow":
            time.sleep(2)
            with contextlib.suppress(OSError):  # the client gave up long ago
                self._send(200, "text/plain", b"late")
        elif self.path == "/big":
            self._send(200, "text/plain", b"x" * 4096)
        elif self.path == "/text":
            self._send(200, "text/plain; charset=utf-8", "caf\u00e9".encode())
        elif self.path == "/json":
            self._send(200, "application/json", json.dumps({"n": [1, 2]}).encode())
        else:
            self._send(500, "text/plain", b"broken")

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        answer = {"body": body, "type": self.headers.get("Content-Type")}
        self._send(200, "application/json", json.dumps(answer).encode())

    def _send(self, code: int, kind: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.hits = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.asyncio
async def test_json_is_parsed_text_is_text_and_a_request_is_made_once_per_render(
    base: str,
) -> None:
    variables = {"base": base}
    source = "{{ http(base ~ '/json').n[1] }} {{ http(base ~ '/json').n | length }}"
    assert await render_async(source, variables) == "2 2"
    assert _Handler.hits == ["/json"]
    assert await render_async("{{ http(uri=base ~ '/text') }}", variables) == "caf\u00e9"


@pytest.mark.asyncio
async def test_a_map_body_is_sent_as_json_and_a_text_body_with_its_type(base: str) -> None:
    variables = {"base": base}
    sent = "{{ http(uri=base ~ '/put', method='PUT', body={'a': 1}) }}"
    assert json.loads(await render_async(sent, variables)) == {
        "body": '{"a": 1}',
        "type": "application/json",
    }
    typed = "{{ http(base ~ '/put', 'put', 'a=1', 'text/csv').type }}"
    assert await render_async(typed, variables) == "text/csv"


@pytest.mark.asyncio
async def test_an_error_status_fails_the_render_with_it(base: str) -> None:
    with pytest.raises(TemplateError, match="answered 500"):
        await render_async("{{ http(base ~ '/boom') }}", {"base": base})


@pytest.mark.asyncio
async def test_a_slow_server_stops_at_the_timeout(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(template_http, "TIMEOUT_SECONDS", 0.3)
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"took longer than 0\.3 s"):
        await render_async("{{ http(base ~ '/slow') }}", {"base": base})
    assert time.monotonic() - started < 1.5


@pytest.mark.asyncio
async def test_a_body_over_the_limit_is_refused(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_http, "MAX_BYTES", 1000)
    with pytest.raises(TemplateError, match="larger than 1000 bytes"):
        await render_async("{{ http(base ~ '/big') }}", {"base": base})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ http('file:///etc/passwd') }}", "http:// or https://"),
        ("{{ http('http://127.0.0.1:9/', 'BREW') }}", "unknown method 'BREW'"),
        ("{{ http('http://127.0.0.1:9/', headers='x') }}", "headers must be a map"),
    ],
)
@pytest.mark.asyncio
async def test_bad_arguments_are_named(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        await render_async(source, {})


def test_the_engines_renders_refuse_it() -> None:
    with pytest.raises(TemplateError, match="http\\(\\) needs a worker"):
        render("{{ http('http://127.0.0.1:9/') }}", {})
