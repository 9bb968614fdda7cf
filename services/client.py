"""Start and follow executions from the command line, against the configured backend.

The server carries executions out; this client only stores them and reads them
back. (A client for a remote server over HTTP comes with the webserver.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

from runtime.config import Config
from runtime.flow.execution import Execution
from runtime.messages import LogEntry
from services.flows import FlowCache
from services.standalone import make_backend, make_storage
from services.submit import start_execution

#: how often a client polls the backend for changes made by another process
POLL_SECONDS = 0.25


class LocalClient:
    """Talks to the backend of ``config`` directly."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.backend = make_backend(config)
        self.storage = make_storage(config)
        self.flows = FlowCache(self.backend)

    async def __aenter__(self) -> LocalClient:
        await self.backend.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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

    async def wait(self, execution_id: str) -> Execution:
        """Until the execution ends or pauses (another process carries it out)."""
        while True:
            execution = await self.get(execution_id)
            if execution.state.terminated or execution.state.current.value == "PAUSED":
                return execution
            await asyncio.sleep(POLL_SECONDS)

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


__all__ = ["LocalClient"]
