"""Start, follow and list executions from the command line, against the configured
backend. The server carries executions out; this client only stores them and reads
them back. :class:`services.remote_client.RemoteClient` does the same over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from backends.protocols import ExecutionFilter
from runtime.config import Config
from runtime.flow.execution import Execution
from runtime.messages import LogEntry
from services.flows import FlowCache
from services.standalone import make_backend, make_storage
from services.submit import start_execution
from services.triggers import list_triggers

#: how often a client polls the backend for changes made by another process
POLL_SECONDS = 0.25
#: how long `execute --wait` waits for a server that is starting to register a worker
START_GRACE_SECONDS = 10.0


class LocalClient:
    """Talks to the backend of ``config`` directly."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.backend = make_backend(config)
        self.storage = make_storage(config)
        self.flows = FlowCache(self.backend)

    async def __aenter__(self) -> LocalClient:
        await self.backend.start()
        try:
            await self.storage.start()
        except BaseException:
            await self.backend.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.storage.stop()
        finally:
            await self.backend.stop()

    async def execute(self, namespace: str, flow_id: str, inputs: Mapping[str, str]) -> Execution:
        record = await self.backend.flows.get(namespace, flow_id)
        if record is None:
            raise LookupError(
                f"flow {namespace}.{flow_id} is not deployed: runtime flow deploy <file> first"
            )
        flow = self.flows.parse(record)
        return await start_execution(self.backend, self.storage, flow, record.revision, inputs)

    async def get(self, execution_id: str) -> Execution:
        execution = await self.backend.executions.get(execution_id)
        if execution is None:
            raise LookupError(f"no execution {execution_id!r}")
        return execution

    async def wait(
        self, execution_id: str, on_change: Callable[[Execution], None] | None = None
    ) -> Execution:
        """Until the execution ends or pauses (another process carries it out).

        Raises :class:`NoServerError` when the server that ran it stops answering
        (a check before the wait is the caller's: see :meth:`check_server`)."""
        last: Execution | None = None
        checked = asyncio.get_running_loop().time()
        while True:
            execution = await self.get(execution_id)
            if on_change is not None and execution != last:
                on_change(execution)
            last = execution
            if execution.state.terminated or execution.state.current.value == "PAUSED":
                return execution
            now = asyncio.get_running_loop().time()
            if now - checked > self.config.liveness.worker_timeout_seconds:
                try:
                    await self.check_server(grace=0.0)
                except NoServerError as exc:
                    raise NoServerError(
                        f"{exc}. Execution {execution_id} is kept: it goes on when a server starts"
                    ) from None
                checked = now
            await asyncio.sleep(POLL_SECONDS)

    async def check_server(self, *, grace: float = START_GRACE_SECONDS) -> None:
        """A worker of this backend sent a heartbeat within the liveness timeout;
        a server that is starting gets ``grace`` seconds to say so."""
        timeout = self.config.liveness.worker_timeout_seconds
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while True:
            now = self.backend.clock()
            for instance in await self.backend.services.list():
                if (
                    instance.kind == "worker"
                    and instance.state == "RUNNING"
                    and (now - instance.heartbeat).total_seconds() <= timeout
                ):
                    return
            if loop.time() >= until:
                break
            await asyncio.sleep(POLL_SECONDS)
        raise NoServerError(
            f"no server is running on {describe_backend(self.config)}: no worker has sent a "
            f"heartbeat in the last {timeout:g}s. Start one (runtime run --all) with the same "
            "settings, or pass --server URL to use a running server's API"
        )

    async def search(
        self, where: ExecutionFilter, *, limit: int, offset: int = 0
    ) -> tuple[list[Execution], int]:
        """Executions matching ``where``, newest first, and how many match in all."""
        found, total = await self.backend.executions.find(
            where, sort="start_date", descending=True, limit=limit, offset=offset
        )
        return list(found), total

    async def triggers(
        self, namespace: str | None = None, flow_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every trigger of the deployed flows, in the API's shape (dates as ISO text)."""
        found = await list_triggers(self.backend, self.flows, namespace=namespace, flow_id=flow_id)
        items: list[dict[str, Any]] = msgspec.to_builtins(found)
        return items

    async def logs(self, execution_id: str, *, follow: bool = False) -> AsyncIterator[LogEntry]:
        await self.get(execution_id)
        after = 0
        while True:
            entries = await self.backend.logs.query(execution_id, after_seq=after)
            for entry in entries:
                after = entry.seq
                yield entry
            if not follow or entries:
                if not follow:
                    return
                continue
            if (await self.get(execution_id)).state.terminated:
                # One last read: logs written with the final result.
                for entry in await self.backend.logs.query(execution_id, after_seq=after):
                    yield entry
                return
            await asyncio.sleep(POLL_SECONDS)


class NoServerError(RuntimeError):
    """No component of a server runs on the configured backend."""


def describe_backend(config: Config) -> str:
    """The configured backend as a person can find it, without a password."""
    kind = config.backend.type.lower()
    if kind == "sqlite":
        return f"the sqlite backend at {config.sqlite_path()}"
    if config.backend.dsn:
        parts = urlsplit(config.backend.dsn)
        if parts.password:
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            parts = parts._replace(netloc=f"{parts.username}:***@{host}{port}")
        return f"the {kind} backend at {urlunsplit(parts)}"
    return f"the {kind} backend"


__all__ = ["LocalClient", "NoServerError", "describe_backend"]
