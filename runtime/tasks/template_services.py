"""The worker side of the template functions that read an execution's logs and
files (errorLogs, fileSize, fileExists, isFileEmpty: runtime.flow.template_functions)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

_ERROR_LOGS_WAIT = 5.0  # Kestra waits up to 5 s for the failed task's logs to land


class _LogEntry(Protocol):
    task_id: str | None
    task_run_id: str | None
    message: str
    level: str
    attempt: int | None
    timestamp: Any
    execution_id: str
    namespace: str
    flow_id: str


class _Logs(Protocol):
    async def query(self, execution_id: str, *, min_level: str | None = None) -> list[Any]: ...


class _Storage(Protocol):
    async def exists(self, uri: str) -> bool: ...

    async def size(self, uri: str) -> int: ...


class _Context(Protocol):
    execution_id: str
    logs: _Logs
    storage: _Storage


class WorkerFunctionServices:
    """Mixed into the worker's template services, whose ``_ctx`` is the task's
    RunContext."""

    async def error_logs(self) -> list[dict[str, Any]]:
        ctx: _Context = vars(self)["_ctx"]
        delay, waited = 0.1, 0.0
        while True:
            entries = await ctx.logs.query(ctx.execution_id, min_level="ERROR")
            # the failed task's lines may still be in a worker's buffer: wait a little
            if entries or waited >= _ERROR_LOGS_WAIT:
                return [_entry(entry) for entry in entries]
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)

    async def file_size(self, uri: str) -> int | None:
        ctx: _Context = vars(self)["_ctx"]
        if not await ctx.storage.exists(uri):
            return None
        return await ctx.storage.size(uri)


def _entry(entry: _LogEntry) -> dict[str, Any]:
    timestamp = entry.timestamp
    return {
        "executionId": entry.execution_id,
        "namespace": entry.namespace,
        "flowId": entry.flow_id,
        "taskId": entry.task_id,
        "taskRunId": entry.task_run_id,
        "attemptNumber": entry.attempt,
        "level": entry.level,
        "message": entry.message,
        "timestamp": timestamp.isoformat() if hasattr(timestamp, "isoformat") else timestamp,
    }
