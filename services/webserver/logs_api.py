"""``/api/v1/logs/{executionId}``: an execution's logs (by task, by level), as a text
download, followed live over Server-Sent Events, and deleted; ``/api/v1/logs/search``:
the logs of every execution, newest first; ``DELETE /api/v1/logs/{namespace}/{flowId}``:
a flow's logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from backends.protocols import LogFilter
from runtime.messages import LogEntry
from services.webserver.executions_api import _time_range as time_range
from services.webserver.executions_api import load_execution
from services.webserver.http import (
    JSON,
    ApiError,
    AppState,
    Filters,
    encode,
    json_response,
    no_content,
    paged,
    paging,
    q_datetime,
    q_int,
    q_str,
    state,
)
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


#: the ``filters[...]`` a log search takes; a level filter means "this level and above"
#: (Kestra's minimum level), whichever of its operations is given
LOG_FILTERS = {
    "namespace": ("EQUALS", "PREFIX"),
    "flowId": ("EQUALS",),
    "executionId": ("EQUALS",),
    "taskId": ("EQUALS",),
    "taskRunId": ("EQUALS",),
    "triggerId": ("EQUALS",),
    "level": ("EQUALS", "GREATER_THAN_OR_EQUAL_TO"),
    "startDate": ("GREATER_THAN_OR_EQUAL_TO", "GREATER_THAN"),
    "endDate": ("LESS_THAN_OR_EQUAL_TO", "LESS_THAN"),
    "timeRange": ("EQUALS",),
    "q": ("EQUALS", "CONTAINS"),
}
_SORTS = ("timestamp:desc", "timestamp")


def _level(raw: str | None, what: str) -> str | None:
    if raw is None:
        return None
    level = "WARN" if raw.upper() == "WARNING" else raw.upper()
    if level not in LEVELS:
        raise ApiError(400, f"{what}: {raw!r} is not one of {', '.join(LEVELS)}")
    return level


def search_filter(request: Request) -> tuple[LogFilter, bool]:
    """What a log search selects (Kestra's query parameters and ``filters[...]``), and
    whether it names a trigger (no entry here has one: trigger logs are not stored)."""
    filters = Filters(request, LOG_FILTERS)
    after = q_datetime(request, "startDate") or filters.date("startDate")
    before = q_datetime(request, "endDate") or filters.date("endDate")
    span = q_str(request, "timeRange") or filters.value("timeRange")
    if span is not None:
        if after is not None:
            raise ApiError(400, "query parameters `startDate` and `timeRange`: give one, not both")
        after = time_range(state(request), span)
    exact = filters.value("namespace", "EQUALS")
    level = _level(q_str(request, "minLevel"), "query parameter `minLevel`") or _level(
        filters.value("level"), "filter on `level`"
    )
    where = LogFilter(
        namespace=q_str(request, "namespace") or exact or filters.value("namespace", "PREFIX"),
        below=exact is None or q_str(request, "namespace") is not None,
        flow_id=q_str(request, "flowId") or filters.value("flowId"),
        execution_id=q_str(request, "executionId") or filters.value("executionId"),
        task_id=q_str(request, "taskId") or filters.value("taskId"),
        task_run_id=q_str(request, "taskRunId") or filters.value("taskRunId"),
        min_level=level,
        after=after,
        before=before,
        query=q_str(request, "q") or filters.value("q"),
    )
    return where, (q_str(request, "triggerId") or filters.value("triggerId")) is not None


async def search(request: Request) -> Response:
    """One page of the logs of every execution, newest first, with the total."""
    app = state(request)
    limit, offset = paging(request)
    for sort in request.query_params.getlist("sort"):
        if sort not in _SORTS:
            raise ApiError(
                400,
                f"query parameter `sort`: {sort!r}: logs sort newest first only (timestamp:desc)",
            )
    where, by_trigger = search_filter(request)
    found, total = (
        ([], 0) if by_trigger else await app.backend.logs.find(where, limit=limit, offset=offset)
    )
    return json_response({**paged([log_json(e) for e in found], total), "type": "OFFSET"})


async def delete_of_execution(request: Request) -> Response:
    """Kestra's ``DELETE /logs/{executionId}``: the execution's entries that the filters
    keep. The execution need not exist any more (its logs outlive it)."""
    app = state(request)
    where = _Filters(request)
    await app.backend.logs.delete(
        LogFilter(
            execution_id=request.path_params["executionId"],
            min_level=where.level,
            task_run_id=where.task_run_id,
            task_id=where.task_id,
            attempt=where.attempt,
        )
    )
    return no_content()


async def delete_of_flow(request: Request) -> Response:
    """Kestra's ``DELETE /logs/{namespace}/{flowId}``: the flow's entries (of that
    namespace exactly). With ``triggerId``, Kestra deletes that trigger's own logs;
    none are stored here, so nothing goes."""
    app = state(request)
    if q_str(request, "triggerId") is None:
        await app.backend.logs.delete(
            LogFilter(
                namespace=request.path_params["namespace"],
                below=False,
                flow_id=request.path_params["flowId"],
            )
        )
    return no_content()


routes = [
    # before /logs/{executionId}, which would take "search" for an execution id
    Route("/api/v1/logs/search", search, methods=["GET"]),
    Route("/api/v1/logs/{executionId}", find, methods=["GET"]),
    Route("/api/v1/logs/{executionId}", delete_of_execution, methods=["DELETE"]),
    Route("/api/v1/logs/{namespace}/{flowId}", delete_of_flow, methods=["DELETE"]),
    Route("/api/v1/logs/{executionId}/download", download, methods=["GET"]),
    Route("/api/v1/logs/{executionId}/follow", follow, methods=["GET"]),
]
