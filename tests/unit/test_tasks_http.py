"""The HTTP Request task against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from runtime.tasks.context import TaskFailure
from tests.unit.task_context import TaskContext, load_task


class _Server:
    """A small HTTP/1.1 server: one request per connection, routes by path."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(
                {"method": method, "path": target, "headers": headers, "body": body}
            )
            status, extra, payload = await self._route(method, target, headers, body)
            response = [f"HTTP/1.1 {status}", f"Content-Length: {len(payload)}"]
            response += [*extra, "Connection: close", "", ""]
            writer.write("\r\n".join(response).encode() + payload)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, list[str], bytes]:
        if path == "/json":
            return (
                "200 OK",
                ["Content-Type: application/json", "X-Multi: a", "X-Multi: b"],
                (b'{"id": 1, "name": "pen"}'),
            )
        if path == "/echo":
            echo = {"method": method, "headers": headers, "body": body.decode("latin-1")}
            return "200 OK", ["Content-Type: application/json"], json.dumps(echo).encode()
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            return f"{code} Whatever", [], b"nope: not here"
        if path == "/redirect":
            return "302 Found", ["Location: /json"], b""
        if path == "/slow":
            await asyncio.sleep(2)
            return "200 OK", [], b"late"
        if path == "/empty":
            return "204 No Content", [], b""
        if path == "/big":
            return "200 OK", [], b"x" * 5000
        return "404 Not Found", [], b"unknown path"


@pytest_asyncio.fixture
async def server() -> AsyncIterator[_Server]:
    server = _Server()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(tmp_path, variables={"inputs": {"title": "Kestra Pen"}})


def _request(server: _Server, yaml_props: str) -> Any:
    return load_task(
        "- id: http\n  type: io.kestra.plugin.core.http.Request\n"
        + "\n".join("  " + line for line in yaml_props.replace("URL", server.url).splitlines())
    )


@pytest.mark.asyncio
async def test_get_outputs_code_headers_and_body_as_text(server: _Server, ctx: TaskContext) -> None:
    task = _request(server, "uri: URL/json")
    out = await task.run(ctx)
    assert out["code"] == 200
    assert out["uri"] == f"{server.url}/json"
    assert out["body"] == '{"id": 1, "name": "pen"}'  # JSON stays a string, as in Kestra
    assert out["headers"]["Content-Type"] == ["application/json"]
    assert out["headers"]["X-Multi"] == ["a", "b"]


@pytest.mark.asyncio
async def test_post_json_body_with_headers(server: _Server, ctx: TaskContext) -> None:
    task = _request(
        server,
        """uri: URL/echo
method: post
headers: {X-Token: "t-{{ inputs.title | length }}"}
body: '{"title": "{{ inputs.title }}"}'""",
    )
    out = await task.run(ctx)
    echo = json.loads(out["body"])
    assert echo["method"] == "POST"
    assert echo["headers"]["x-token"] == "t-10"
    assert echo["headers"]["content-type"] == "application/json"
    assert json.loads(echo["body"]) == {"title": "Kestra Pen"}


@pytest.mark.asyncio
async def test_map_body_is_sent_as_json(server: _Server, ctx: TaskContext) -> None:
    task = _request(server, "uri: URL/echo\nmethod: PUT\nbody: {a: [1, 2]}")
    echo = json.loads((await task.run(ctx))["body"])
    assert json.loads(echo["body"]) == {"a": [1, 2]}


@pytest.mark.asyncio
async def test_form_data_url_encoded(server: _Server, ctx: TaskContext) -> None:
    task = _request(
        server, "uri: URL/echo\nmethod: POST\nformData: {user: '{{ inputs.title }}', n: 2}"
    )
    echo = json.loads((await task.run(ctx))["body"])
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert echo["body"] == "user=Kestra+Pen&n=2"


@pytest.mark.asyncio
async def test_multipart_uploads_a_file_from_storage(server: _Server, ctx: TaskContext) -> None:
    uri = await ctx.storage.put(ctx.namespace, "inputs/data.csv", b"a,b\n1,2\n")
    ctx.variables["inputs"]["file"] = uri
    task = _request(
        server,
        """uri: URL/echo
method: POST
contentType: multipart/form-data
formData:
  user: John
  upload: "{{ inputs.file }}"
  named: {name: renamed.csv, content: "{{ inputs.file }}"}""",
    )
    echo = json.loads((await task.run(ctx))["body"])
    assert echo["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    body = echo["body"]
    assert 'name="user"' in body
    assert 'name="upload"; filename="data.csv"' in body
    assert 'name="named"; filename="renamed.csv"' in body
    assert body.count("a,b\n1,2\n") == 2


@pytest.mark.asyncio
async def test_failed_status_fails_with_code_and_body(server: _Server, ctx: TaskContext) -> None:
    task = _request(server, "uri: URL/status/404")
    with pytest.raises(TaskFailure, match=r"response code '404'.*nope: not here"):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_allow_failed_returns_the_error_response(server: _Server, ctx: TaskContext) -> None:
    for props in ("options: {allowFailed: true}", "allowFailed: true"):
        task = _request(server, f"uri: URL/status/500\n{props}")
        out = await task.run(ctx)
        assert out["code"] == 500
        assert out["body"] == "nope: not here"


@pytest.mark.asyncio
async def test_redirects_are_followed_unless_disabled(server: _Server, ctx: TaskContext) -> None:
    out = await _request(server, "uri: URL/redirect").run(ctx)
    assert out["code"] == 200
    task = _request(server, "uri: URL/redirect\noptions: {followRedirects: false}")
    out = await task.run(ctx)
    assert out["code"] == 302
    assert out["body"] is None


@pytest.mark.asyncio
async def test_read_timeout_fails_clearly(server: _Server, ctx: TaskContext) -> None:
    task = _request(server, "uri: URL/slow\noptions: {readTimeout: PT0.2S}")
    with pytest.raises(TaskFailure, match="timed out"):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_basic_auth_and_max_content_length(server: _Server, ctx: TaskContext) -> None:
    task = _request(
        server, "uri: URL/echo\noptions: {auth: {type: BASIC, username: u, password: p}}"
    )
    echo = json.loads((await task.run(ctx))["body"])
    assert echo["headers"]["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    big = _request(server, "uri: URL/big\noptions: {maxContentLength: 1000}")
    with pytest.raises(TaskFailure, match="larger than 1000 bytes"):
        await big.run(ctx)


@pytest.mark.asyncio
async def test_connection_refused_and_bad_uri(ctx: TaskContext, server: _Server) -> None:
    await server.stop()
    task = _request(server, "uri: URL/json")
    with pytest.raises(TaskFailure, match="failed"):
        await task.run(ctx)
    await server.start()  # the fixture stops it again
    bad = _request(server, "uri: ftp://example.invalid/x")
    with pytest.raises(TaskFailure, match="must be an http"):
        await bad.run(ctx)
