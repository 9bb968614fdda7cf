"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis):
whatever a client sends, no 5xx and no response that breaks the documented schema.

The server runs for real (uvicorn, the webserver component, on SQLite in a temporary
folder) in a thread of this process, with a few flows, executions and KV entries so
that generated requests also reach existing things, not only 404s.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backends.sqlite import SqliteBackend
from backends.storage_local import LocalStorage
from runtime.config import Config, WebserverConfig
from services.standalone import Server
from tests.services.server_helpers import settings as server_settings
from tests.webserver.helpers import NS, RETURN, flow

#: examples per operation: enough to find a 500, few enough for CI (about a minute)
EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]

SEED_FLOWS = [
    flow("hello", RETURN, "inputs:\n  - id: name\n    type: STRING\n    required: false\n"),
    flow(
        "hook",
        RETURN,
        "triggers:\n  - id: hook\n    type: io.kestra.plugin.core.trigger.Webhook\n"
        "    key: secret\n  - id: daily\n    type: io.kestra.plugin.core.trigger.Schedule\n"
        '    cron: "0 9 * * *"\n',
    ),
]


def _sqlite_server(tmp: Path, config: Config) -> Server:
    return Server(
        config,
        components=("executor", "worker", "webserver"),
        backend=SqliteBackend(tmp / "runtime.db", synchronous="NORMAL"),
        storage=LocalStorage(tmp / "storage"),
        watch=False,
    )


class Running:
    """The server ``build`` makes, in a thread with its own event loop, until ``stop``."""

    def __init__(self, tmp: Path, build: Callable[[Path, Config], Server] = _sqlite_server) -> None:
        self.tmp = tmp
        self.build = build
        self.port: int | None = None
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="webserver-under-test")

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by the fixture
            self.error = exc
            self.started.set()

    async def _serve(self) -> None:
        base = server_settings()
        config = Config(
            executor=base.executor,
            worker=base.worker,
            scheduler=base.scheduler,
            liveness=base.liveness,
            webserver=WebserverConfig(port=0, poll_seconds=0.02, shutdown_seconds=1.0),
        )
        server = self.build(self.tmp, config)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with server:
            assert server.webserver is not None
            self.port = server.webserver.port
            self.started.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=30)


def seed(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for source in SEED_FLOWS:
            response = client.post(
                "/api/v1/flows", content=source, headers={"content-type": "application/x-yaml"}
            )
            assert response.status_code == 200, response.text
        done = client.post(f"/api/v1/executions/{NS}/hello?wait=true", data={"name": "Ada"})
        assert done.status_code == 200, done.text
        client.put(f"/api/v1/namespaces/{NS}/kv/answer", content="42")


def seeded_schema(running: Running, start_timeout: float = 30.0) -> Iterator[Any]:
    """Start ``running``, seed it, and yield its OpenAPI schema until the end."""
    running.thread.start()
    running.started.wait(start_timeout)
    if running.error is not None:
        raise running.error
    base = f"http://127.0.0.1:{running.port}"
    try:
        seed(base)
        yield schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from seeded_schema(Running(tmp_path_factory.mktemp("openapi")))


@pytest.mark.slow
def test_api_conforms_to_its_openapi_document(api_schema: Any) -> None:
    fuzz_every_operation(api_schema, CHECKS)


def fuzz_every_operation(api_schema: Any, checks: list[Any]) -> None:
    """Every operation, fuzzed in turn (schemathesis' pytest plugin does not run under
    this pytest, so the operations are driven through hypothesis directly)."""
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # The /api/v1/{tenant}/... copies run the same handlers as the paths without a
    # tenant (test_tenants.py checks the two forms agree): fuzzed once, not twice.
    operations = [o for o in operations if not o.path.startswith("/api/v1/{tenant}/")]
    assert len(operations) >= 35
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(checks=checks, timeout=30)

        try:
            fuzz()
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
