"""Optional OpenTelemetry traces: an ended execution reaches a real OTLP/HTTP receiver
as one trace (the execution the root span, its task runs the children); without an
endpoint, or without the extra, nothing happens."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest

from backends.sqlite import SqliteBackend
from runtime.config import TracingConfig
from services.tracing import make_tracer
from tests.requirements import missing
from tests.services.server_helpers import NS, ended, running, settings, start

FLOW = f"""id: traced
namespace: {NS}
tasks:
  - id: first
    type: io.kestra.plugin.core.log.Log
    message: one
  - id: group
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - id: inner
        type: io.kestra.plugin.core.debug.Return
        format: two
"""


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def otlp() -> Iterator[tuple[str, list[bytes]]]:
    """An OTLP/HTTP traces receiver on a free port: the URL and what it received."""
    bodies: list[bytes] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_an_ended_execution_is_exported_as_one_trace(
    tmp_path: Path, otlp: tuple[str, list[bytes]]
) -> None:
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        missing("the opentelemetry extra is not installed")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    url, bodies = otlp
    config = msgspec.structs.replace(settings(), tracing=TracingConfig(endpoint=url))
    backend = SqliteBackend(tmp_path / "runtime.db", synchronous="NORMAL")
    async with running(tmp_path, backend, config) as server:
        await server.backend.flows.deploy(NS, "traced", FLOW)
        done = await ended(server.backend, await start(server.backend, "traced"))
        assert done.state.current.value == "SUCCESS"
    # the server's stop flushed the exporter
    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    assert spans, "nothing was exported"
    by_name = {span.name: span for span in spans}
    root = by_name[f"{NS}.traced"]
    assert {"first", "group", "inner"} <= set(by_name)
    assert len({span.trace_id for span in spans}) == 1
    assert root.parent_span_id == b""
    assert by_name["first"].parent_span_id == root.span_id
    assert by_name["inner"].parent_span_id == by_name["group"].span_id
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["runtime.execution.id"] == done.id
    assert attributes["runtime.state"] == "SUCCESS"
    inner = {a.key: a.value.string_value for a in by_name["inner"].attributes}
    assert inner["runtime.task.type"] == "io.kestra.plugin.core.debug.Return"
    assert root.start_time_unix_nano <= by_name["first"].start_time_unix_nano
    assert by_name["inner"].end_time_unix_nano <= root.end_time_unix_nano


def test_no_endpoint_means_no_tracer() -> None:
    assert make_tracer(TracingConfig()) is None


def test_a_missing_extra_is_a_warning_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # as if the opentelemetry extra were not installed
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    assert make_tracer(TracingConfig(endpoint="http://127.0.0.1:9/v1/traces")) is None
