"""Helpers of the webserver tests: the real ASGI app over a real backend (SQLite in
``tmp_path``, or a fresh PostgreSQL schema) with an executor and a worker running,
reached through httpx in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from backends.protocols import Backend
from backends.storage_local import LocalStorage
from runtime.config import WebserverConfig
from services.standalone import Server
from services.webserver import create_app
from tests.services.server_helpers import settings

NS = "web"
YAML = {"content-type": "application/x-yaml"}


@dataclass
class Api:
    client: httpx.AsyncClient
    server: Server
    app: Starlette

    @property
    def backend(self) -> Backend:
        return self.server.backend

    async def deploy(self, source: str) -> dict[str, Any]:
        response = await self.client.post("/api/v1/flows", content=source, headers=YAML)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def execute(self, flow_id: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.client.post(f"/api/v1/executions/{NS}/{flow_id}", **kwargs)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ended(self, execution_id: str, within: float = 10.0) -> dict[str, Any]:
        """The execution once it has ended (polled through the API)."""
        deadline = time.monotonic() + within
        while True:
            response = await self.client.get(f"/api/v1/executions/{execution_id}")
            body: dict[str, Any] = response.json()
            # 404 too: a replay's execution appears once the executor made it
            current = body["state"]["current"] if response.status_code == 200 else "missing"
            if current in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{execution_id} still {current}")
            await asyncio.sleep(0.02)

    async def in_state(self, execution_id: str, wanted: str, within: float = 10.0) -> None:
        async def reached() -> bool:
            response = await self.client.get(f"/api/v1/executions/{execution_id}")
            return bool(response.json()["state"]["current"] == wanted)

        await until(reached, within, f"{execution_id} {wanted}")


TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "RETRIED", "SKIPPED"}


async def until(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.02)


def make_backend(kind: str, tmp_path: Path, schema: str | None = None) -> Backend:
    if kind == "sqlite":
        from backends.sqlite import SqliteBackend

        return SqliteBackend(tmp_path / "runtime.db", synchronous="NORMAL")
    from backends.postgres import PostgresBackend
    from backends.postgres.testing import server_dsn

    return PostgresBackend(server_dsn(), schema=schema or "public", pool_max=4)


@asynccontextmanager
async def api(
    tmp_path: Path,
    *,
    kind: str = "sqlite",
    web: WebserverConfig | None = None,
    components: Sequence[str] = ("executor", "worker"),
    backend: Backend | None = None,
) -> AsyncIterator[Api]:
    """The API over a running server of ``components`` on a ``kind`` backend (or on
    ``backend``, made by the caller)."""
    async with AsyncExitStack() as stack:
        schema = None
        if kind == "postgres":
            from backends.postgres.testing import fresh_schema

            schema = await stack.enter_async_context(fresh_schema("runtime_web"))
        server = Server(
            settings(),
            components=components,
            backend=backend or make_backend(kind, tmp_path, schema),
            storage=LocalStorage(tmp_path / "storage"),
            watch=False,
        )
        await stack.enter_async_context(server)
        app = create_app(
            server.backend,
            server.storage,
            web or WebserverConfig(poll_seconds=0.02),
            flows=server.flows,
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        yield Api(client, server, app)


def flow(flow_id: str, tasks: str, extra: str = "") -> str:
    return f"id: {flow_id}\nnamespace: {NS}\n{extra}\ntasks:\n{tasks}"


RETURN = """  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{ inputs.name ?? 'world' }}"
"""


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of a Server-Sent Events body, comments left out."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events
