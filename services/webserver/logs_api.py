"""``/api/v1/logs/{executionId}``: an execution's logs (by task, by level), as a text
download, and followed live over Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from runtime.messages import LogEntry
from services.webserver.executions_api import load_execution
from services.webserver.http import JSON, ApiError, AppState, encode, q_int, q_str, state
from services.webserver.sse import EventStream, follow_logs
from services.webserver.tenants import DEFAULT_TENANT

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR")
_PAGE = 1000


def log_json(entry: LogEntry) -> dict[str, Any]:
    """A log entry in Kestra's field names (``index``: its place in the execution's log)."""
    return {
        "tenantId": DEFAULT_TENANT,
        "namespace": entry.namespace,
        "flowId": entry.flow_id,
        "executionId": entry.execution_id,
        "taskId": entry.task_id,
        "taskRunId": entry.task_run_id,
        "attemptNumber": entry.attempt,
        "timestamp": entry.timestamp,
        "level": "WARN" if entry.level.upper() == "WARNING" else entry.level.upper(),
        "message": entry.message,
        "index": entry.seq,
    }


class _Filters:
    """What a log request keeps: a level and above, one task run, one task, one attempt."""

    def __init__(self, request: Request) -> None:
        level = q_str(request, "minLevel")
        if level is not None:
            level = level.upper()
            if level not in LEVELS:
                raise ApiError(400, f"query parameter `minLevel`: {level!r} is not one of {LEVELS}")
        self.level = level
        self.task_run_id = q_str(request, "taskRunId")
        self.task_id = q_str(request, "taskId")
        attempt = q_int(request, "attempt", -1, lo=0)
        self.attempt = None if attempt < 0 else attempt

    def keeps(self, entry: LogEntry) -> bool:
        return (self.task_id is None or entry.task_id == self.task_id) and (
            self.attempt is None or entry.attempt == self.attempt
        )


async def _entries(app: AppState, execution_id: str, where: _Filters) -> AsyncIterator[LogEntry]:
    after = 0
    while True:
        page = await app.backend.logs.query(
            execution_id,
            task_run_id=where.task_run_id,
            min_level=where.level,
            after_seq=after,
            limit=_PAGE,
        )
        for entry in page:
            after = entry.seq
            if where.keeps(entry):
                yield entry
        if len(page) < _PAGE:
            return


#: bytes of JSON gathered before one write of a streamed list
_CHUNK = 64 * 1024


async def find(request: Request) -> Response:
    """The entries as one JSON array, streamed a page at a time: an execution's log has
    no bound, so it is never held whole in memory."""
    app = state(request)
    execution_id = request.path_params["executionId"]
    await load_execution(app, execution_id)
    where = _Filters(request)

    async def array() -> AsyncIterator[bytes]:
        chunk, separator = bytearray(b"["), b""
        async for entry in _entries(app, execution_id, where):
            chunk += separator + encode(log_json(entry))
            separator = b","
            if len(chunk) >= _CHUNK:
                yield bytes(chunk)
                chunk.clear()
        yield bytes(chunk + b"]")

    return StreamingResponse(array(), media_type=JSON)


async def download(request: Request) -> Response:
    from services.cli_output import format_log

    app = state(request)
    execution_id = request.path_params["executionId"]
    await load_execution(app, execution_id)
    where = _Filters(request)

    async def lines() -> AsyncIterator[bytes]:
        async for entry in _entries(app, execution_id, where):
            yield (format_log(entry) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="text/plain; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{execution_id}.log"'},
    )


#: the largest log index a database column holds (a signed 64-bit integer)
_MAX_INDEX = 2**63 - 1


def _last_event_id(request: Request) -> int:
    """Where a reconnecting EventSource stopped: the ``index`` of the last entry it got
    (0, from the start, without the header)."""
    raw = request.headers.get("last-event-id", "").strip()
    if not raw:
        return 0
    # ASCII only: str.isdigit() also takes '²', which int() refuses
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= _MAX_INDEX):
        raise ApiError(400, f"header `Last-Event-ID`: {raw[:40]!r} is not the index of a log entry")
    return int(raw)


async def follow(request: Request) -> Response:
    app = state(request)
    execution_id = request.path_params["executionId"]
    await load_execution(app, execution_id)
    where = _Filters(request)
    after = _last_event_id(request)
    return EventStream(
        follow_logs(app, execution_id, where.level, where.task_run_id, where.keeps, after)
    )


routes = [
    Route("/api/v1/logs/{executionId}", find, methods=["GET"]),
    Route("/api/v1/logs/{executionId}/download", download, methods=["GET"]),
    Route("/api/v1/logs/{executionId}/follow", follow, methods=["GET"]),
]
