"""The OpenAPI entries of the log search and the log deletions (``logs_api.py``);
``openapi.py`` merges them into the document before the tenant copies are made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.webserver.openapi_more import FILTERS_NOTE
from services.webserver.openapi_schemas import ref
from services.webserver.tenants import API

Op = Callable[..., dict[str, Any]]

_LEVEL = {"type": "string", "enum": ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]}
_DATE = {"type": "string", "format": "date-time"}

#: a page of log entries, as Kestra 1.x's CursorOrOffsetPagedResults (offset paging)
LOG_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["results", "total", "type"],
    "properties": {
        "results": {"type": "array", "items": ref("LogEntry")},
        "total": {"type": "integer"},
        "type": {"type": "string", "enum": ["OFFSET"]},
    },
}


def log_paths(op: Op) -> dict[str, dict[str, Any]]:
    """The added log paths (without a tenant), built with ``openapi._op``."""
    done = {"description": "deleted (also when nothing matched)"}
    return {
        f"{API}logs/search": {
            "get": op(
                "The logs of every execution, newest first, one page and the total; "
                "`namespace` takes the namespaces below it too; `minLevel` keeps that "
                "level and above; `q` is a case-insensitive part of the message; "
                "startDate at or after, endDate strictly before." + FILTERS_NOTE,
                "Logs",
                {"description": "OK", "content": {"application/json": {"schema": LOG_PAGE}}},
                query=(
                    ("q", {"type": "string"}),
                    ("page", {"type": "integer", "minimum": 1}),
                    ("size", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    ("sort", {"type": "string", "enum": ["timestamp:desc", "timestamp"]}),
                    ("namespace", {"type": "string"}),
                    ("flowId", {"type": "string"}),
                    ("executionId", {"type": "string"}),
                    ("taskId", {"type": "string"}),
                    ("taskRunId", {"type": "string"}),
                    ("triggerId", {"type": "string"}),
                    ("minLevel", _LEVEL),
                    ("startDate", _DATE),
                    ("endDate", _DATE),
                    ("timeRange", {"type": "string"}),
                ),
            )
        },
        f"{API}logs/{{executionId}}": {
            "delete": op(
                "Delete an execution's logs (those the filters keep); the execution "
                "need not exist any more",
                "Logs",
                done,
                status="204",
                path=("executionId",),
                query=(
                    ("minLevel", _LEVEL),
                    ("taskRunId", {"type": "string"}),
                    ("taskId", {"type": "string"}),
                    ("attempt", {"type": "integer", "minimum": 0}),
                ),
            )
        },
        f"{API}logs/{{namespace}}/{{flowId}}": {
            "delete": op(
                "Delete a flow's logs (of that namespace only). With `triggerId`, only "
                "that trigger's own logs, which this server does not store: nothing goes",
                "Logs",
                done,
                status="204",
                path=("namespace", "flowId"),
                query=(("triggerId", {"type": "string"}),),
            )
        },
    }
