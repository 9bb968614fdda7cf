"""Running corpus flows through `runtime flow test --json` and reading the result."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from click.testing import CliRunner

from services.cli import cli

TERMINAL = frozenset({"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "SKIPPED"})


@dataclass(frozen=True)
class FlowRun:
    """What one `runtime flow test --json` call gave back."""

    exit_code: int
    execution: dict[str, Any]
    stderr: str

    @property
    def state(self) -> str:
        return str(self.execution["state"]["current"])

    def runs(self) -> dict[str, dict[str, Any]]:
        """Task runs by key: ``taskId``, or ``taskId[v1/v2]`` inside loops (the loop
        values of its ancestors and its own; ``#n`` for a WaitFor iteration)."""
        task_runs: list[dict[str, Any]] = self.execution["taskRunList"]
        by_id = {run["id"]: run for run in task_runs}
        keyed: dict[str, dict[str, Any]] = {}
        for run in task_runs:
            key = run_key(run, by_id)
            assert key not in keyed, f"two task runs share the key {key!r}"
            keyed[key] = run
        return keyed

    def states(self) -> dict[str, str]:
        return {key: run["state"]["current"] for key, run in self.runs().items()}


def run_key(run: Mapping[str, Any], by_id: Mapping[str, Mapping[str, Any]]) -> str:
    segments: list[str] = []
    node: Mapping[str, Any] | None = run
    while node is not None:
        if node.get("value") is not None:
            segments.append(str(node["value"]))
        elif node.get("iteration") is not None:
            segments.append(f"#{node['iteration']}")
        parent = node.get("parentTaskRunId")
        node = by_id.get(parent) if parent else None
    segments.reverse()
    return f"{run['taskId']}[{'/'.join(segments)}]" if segments else str(run["taskId"])


def flow_test_args(
    flow: Path, inputs: Sequence[str] = (), flows_dir: Path | None = None
) -> list[str]:
    args = ["flow", "test", str(flow), "--json", "--timeout", "60s"]
    if flows_dir is not None:
        args += ["--flows", str(flows_dir)]
    for item in inputs:
        args += ["--input", item]
    return args


def run_in_process(
    flow: Path, inputs: Sequence[str] = (), flows_dir: Path | None = None
) -> FlowRun:
    """`runtime flow test FILE --json` through click's CliRunner."""
    result = CliRunner().invoke(cli, flow_test_args(flow, inputs, flows_dir))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return parse_output(result.exit_code, result.stdout, result.stderr)


def parse_output(exit_code: int, stdout: str, stderr: str) -> FlowRun:
    try:
        execution = json.loads(stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"`flow test` printed no execution JSON (exit {exit_code}); stderr:\n{stderr}"
        ) from None
    return FlowRun(exit_code=exit_code, execution=execution, stderr=stderr)


def matches(actual: Any, expected: Any) -> bool:
    """``expected`` is a subset of ``actual``: maps compare only the keys given,
    callables are predicates, anything else compares equal."""
    if callable(expected):
        return bool(expected(actual))
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and matches(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected)


def is_storage_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("kestra:///")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def interval(run: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """When a task run was RUNNING: its first RUNNING date to its terminal date."""
    histories = run["state"]["histories"]
    start = next(instant(h["date"]) for h in histories if h["state"] == "RUNNING")
    end = next(instant(h["date"]) for h in histories if h["state"] in TERMINAL)
    return start, end


def max_overlap(runs: Sequence[Mapping[str, Any]]) -> int:
    """The largest number of ``runs`` RUNNING at the same instant."""
    events: list[tuple[datetime, int]] = []
    for run in runs:
        start, end = interval(run)
        events += [(start, 1), (end, -1)]
    # At equal instants an end comes before a start: back-to-back runs do not overlap.
    events.sort(key=lambda event: (event[0], event[1]))
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


class _Handler(BaseHTTPRequestHandler):
    """GET /json answers a JSON document; POST /echo answers what it received;
    anything else is a 404."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/json":
            self._send(404, {"error": f"no route {url.path}"})
            return
        who = parse_qs(url.query).get("who", [""])[0]
        self._send(200, {"items": [1, 2, 3], "who": who, "trace": self.headers.get("X-Trace")})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = json.loads(self.rfile.read(length) or b"null")
        self._send(201, {"received": received, "type": self.headers.get("Content-Type")})

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@contextmanager
def http_server() -> Iterator[str]:
    """A local HTTP server on a free port of 127.0.0.1; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="e2e-http", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


Check = Callable[[FlowRun], None]
