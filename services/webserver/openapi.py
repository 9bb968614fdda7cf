"""The OpenAPI 3 document of the API, served at ``/api/v1/openapi.json``.

Written as a table rather than generated from the routes, so that it says what a
client may rely on (field names, codes) and nothing of how the handlers are built;
``tests/webserver/test_openapi.py`` fuzzes the app from it, which keeps the two in
step.
"""

from __future__ import annotations

from typing import Any

from services.webserver.metrics_api import SCHEMAS as METRIC_SCHEMAS
from services.webserver.metrics_api import metric_paths
from services.webserver.openapi_logs import log_paths
from services.webserver.openapi_more import SCHEMAS as MORE_SCHEMAS
from services.webserver.openapi_more import more_paths, sdk_actions, with_tenants
from services.webserver.openapi_schemas import SCHEMAS, STATES, ref


def _paged(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["results", "total"],
        "properties": {
            "results": {"type": "array", "items": ref(item)},
            "total": {"type": "integer"},
        },
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(ref("Error"), "an error, with a message saying what to fix")


def _op(
    summary: str,
    tag: str,
    ok: dict[str, Any] | None,
    *,
    status: str = "200",
    path: tuple[str, ...] = (),
    query: tuple[tuple[str, dict[str, Any]], ...] = (),
    body: dict[str, Any] | None = None,
    errors: tuple[str, ...] = ("400",),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path
        ]
        + [{"name": name, "in": "query", "required": False, "schema": s} for name, s in query],
        "responses": {
            status: ok if ok is not None else {"description": "done"},
            # any request: 400 for a NUL character in the URL, 401, 413
            **dict.fromkeys((*errors, "400", "401", "413"), _ERROR),
            **(extra or {}),
        },
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def _body(media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema}}}


_YAML = _body("application/x-yaml", {"type": "string"})
_FORM = {
    "required": False,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "additionalProperties": {"type": "string"},
            }
        }
    },
}
_PAGE = (
    ("page", {"type": "integer", "minimum": 1}),
    ("size", {"type": "integer", "minimum": 1, "maximum": 1000}),
)
_LABELS = ("labels", {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:.*$"}})
_STATE = ("state", {"type": "array", "items": {"type": "string", "enum": STATES}})
_DATE = {"type": "string", "format": "date-time"}
_NS_ID = ("namespace", "id")
_LOG_FILTERS = (
    ("minLevel", {"type": "string", "enum": ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]}),
    ("taskRunId", {"type": "string"}),
    ("taskId", {"type": "string"}),
    ("attempt", {"type": "integer", "minimum": 0}),
)
_EXEC = ("executionId",)


def _paths() -> dict[str, dict[str, Any]]:
    execution = _json(ref("Execution"))
    flow = _json(ref("Flow"))
    return {
        "/health": {"get": _op("Liveness: the process answers", "Health", _json(ref("Health")))},
        "/metrics": {
            "get": _op(
                "Prometheus metrics of this process (text exposition format)",
                "Health",
                {
                    "description": "OK",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            )
        },
        "/health/ready": {
            "get": _op(
                "Readiness: the backend answers (503 while it does not)",
                "Health",
                _json(ref("Health")),
                errors=("503",),
            )
        },
        "/api/v1/flows": {
            "post": _op(
                "Create a flow from its YAML",
                "Flows",
                flow,
                body=_YAML,
                errors=("400", "409", "422"),
            )
        },
        "/api/v1/flows/search": {
            "get": _op(
                "Search flows",
                "Flows",
                _json(_paged("Flow")),
                query=(
                    ("q", {"type": "string"}),
                    ("namespace", {"type": "string"}),
                    _LABELS,
                    (
                        "sort",
                        {
                            "type": "string",
                            "enum": ["id:asc", "id:desc", "namespace:asc", "namespace:desc"],
                        },
                    ),
                    *_PAGE,
                ),
            )
        },
        "/api/v1/flows/distinct-namespaces": {
            "get": _op(
                "Namespaces that hold flows",
                "Flows",
                _json({"type": "array", "items": {"type": "string"}}),
            )
        },
        "/api/v1/flows/validate": {
            "post": _op(
                "Validate flows (YAML documents separated by ---): every problem with its "
                "line and column",
                "Flows",
                _json({"type": "array", "items": ref("Validation")}),
                body=_YAML,
            )
        },
        "/api/v1/flows/enable/by-ids": {
            "post": _op(
                "Enable flows (a new revision each)",
                "Flows",
                _json(ref("Count")),
                body=_body("application/json", {"type": "array", "items": ref("FlowRef")}),
                errors=("400", "404", "422"),
            )
        },
        "/api/v1/flows/disable/by-ids": {
            "post": _op(
                "Disable flows (a new revision each)",
                "Flows",
                _json(ref("Count")),
                body=_body("application/json", {"type": "array", "items": ref("FlowRef")}),
                errors=("400", "404", "422"),
            )
        },
        "/api/v1/flows/{namespace}": {
            "get": _op(
                "The flows of a namespace",
                "Flows",
                _json({"type": "array", "items": ref("Flow")}),
                path=("namespace",),
            )
        },
        "/api/v1/flows/{namespace}/{id}": {
            "get": _op(
                "A flow (latest revision unless `revision`); `source=true` adds its YAML, "
                "and `Accept: application/x-yaml` returns the YAML alone",
                "Flows",
                {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": ref("Flow")},
                        "application/x-yaml": {"schema": {"type": "string"}},
                    },
                },
                path=_NS_ID,
                query=(
                    ("revision", {"type": "integer", "minimum": 1}),
                    ("source", {"type": "boolean"}),
                ),
                errors=("400", "404"),
            ),
            "put": _op(
                "Update a flow from its YAML (a new revision)",
                "Flows",
                flow,
                path=_NS_ID,
                body=_YAML,
                errors=("400", "404", "422"),
            ),
            "delete": _op(
                "Delete a flow", "Flows", None, status="204", path=_NS_ID, errors=("404",)
            ),
        },
        "/api/v1/flows/{namespace}/{id}/revisions": {
            "get": _op(
                "Every revision of a flow",
                "Flows",
                _json({"type": "array", "items": ref("Flow")}),
                path=_NS_ID,
                errors=("404",),
            )
        },
        "/api/v1/executions/{namespace}/{id}": {
            "post": _op(
                "Start an execution; inputs as form fields, FILE inputs as file parts; "
                "`wait=true` answers once it has ended (or paused)",
                "Executions",
                execution,
                path=_NS_ID,
                query=(
                    _LABELS,
                    ("wait", {"type": "boolean"}),
                    ("revision", {"type": "integer", "minimum": 1}),
                    ("scheduleDate", _DATE),
                ),
                body=_FORM,
                errors=("400", "404", "409", "415", "422", "503"),
            )
        },
        "/api/v1/executions/search": {
            "get": _op(
                "Search executions",
                "Executions",
                _json(_paged("Execution")),
                query=(
                    ("q", {"type": "string"}),
                    ("namespace", {"type": "string"}),
                    ("flowId", {"type": "string"}),
                    _STATE,
                    ("startDate", _DATE),
                    ("endDate", _DATE),
                    ("timeRange", {"type": "string", "example": "P1D"}),
                    _LABELS,
                    (
                        "sort",
                        {
                            "type": "string",
                            "pattern": "^(state\\.startDate|state\\.endDate|id|namespace"
                            "|flowId|state\\.current)(:(asc|desc))?$",
                        },
                    ),
                    *_PAGE,
                ),
            )
        },
        "/api/v1/executions/{executionId}": {
            "get": _op("An execution", "Executions", execution, path=_EXEC, errors=("404",)),
            "delete": _op(
                "Delete an ended execution (and its files and logs, unless "
                "deleteStorage=false / deleteLogs=false)",
                "Executions",
                None,
                status="204",
                path=_EXEC,
                query=(("deleteStorage", {"type": "boolean"}), ("deleteLogs", {"type": "boolean"})),
                errors=("404", "409"),
            ),
        },
        "/api/v1/executions/{executionId}/kill": {
            "delete": _op(
                "Kill an execution and its subflow executions",
                "Executions",
                _json(ref("Execution"), "the kill is under way"),
                status="202",
                path=_EXEC,
                query=(("isOnKillCascade", {"type": "boolean"}),),
                errors=("404", "409"),
            )
        },
        "/api/v1/executions/{executionId}/restart": {
            "post": _op(
                "Run the failed task runs of an ended execution again",
                "Executions",
                _json(ref("Execution"), "the restart is under way"),
                status="202",
                path=_EXEC,
                errors=("404", "409"),
            )
        },
        "/api/v1/executions/{executionId}/replay": {
            "post": _op(
                "A new execution replaying this one (from `taskRunId`, else from the start)",
                "Executions",
                _json(ref("ReplayResult"), "the new execution is being created"),
                status="202",
                path=_EXEC,
                query=(("taskRunId", {"type": "string"}), ("revision", {"type": "integer"})),
                errors=("404", "409", "422"),
            )
        },
        "/api/v1/executions/{executionId}/resume": {
            "post": _op(
                "Resume a paused execution; the Pause task's onResume inputs as form fields",
                "Executions",
                None,
                status="204",
                path=_EXEC,
                body=_FORM,
                errors=("400", "404", "409", "415", "422"),
            )
        },
        "/api/v1/executions/{executionId}/labels": {
            "post": _op(
                "Replace an execution's labels",
                "Executions",
                execution,
                path=_EXEC,
                body=_body("application/json", {"type": "array", "items": ref("Label")}),
                errors=("400", "404", "422"),
            )
        },
        "/api/v1/executions/{executionId}/file": {
            "get": _op(
                "Download a file of the execution (its kestra:/// URI as `path`)",
                "Executions",
                {
                    "description": "the file",
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                path=_EXEC,
                query=(("path", {"type": "string"}),),
                errors=("400", "404", "422"),
                extra={
                    "206": {
                        "description": "the bytes of a `Range: bytes=a-b` header",
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "416": {"description": "the range is outside the file"},
                },
            )
        },
        "/api/v1/executions/{executionId}/file/metas": {
            "get": _op(
                "The size and metadata of a file of the execution",
                "Executions",
                _json(
                    {
                        "type": "object",
                        "required": ["size", "metadata"],
                        "properties": {
                            "size": {"type": "integer"},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                    "the file's size in bytes",
                ),
                path=_EXEC,
                query=(("path", {"type": "string"}),),
                errors=("400", "404", "422"),
            )
        },
        "/api/v1/executions/{executionId}/file/preview": {
            "get": _op(
                "The first lines of a text file of the execution (at most 1 MiB read)",
                "Executions",
                _json(
                    {
                        "type": "object",
                        "required": ["extension", "content", "truncated"],
                        "properties": {
                            "extension": {"type": "string"},
                            "content": {"type": "string"},
                            "truncated": {"type": "boolean"},
                        },
                    },
                    "the first `maxRows` lines, decoded with `encoding`",
                ),
                path=_EXEC,
                query=(
                    ("path", {"type": "string"}),
                    ("maxRows", {"type": "integer", "minimum": 1, "maximum": 10000}),
                    ("encoding", {"type": "string"}),
                ),
                errors=("400", "404", "422"),
            )
        },
        "/api/v1/executions/{executionId}/follow": {
            "get": _op(
                "Follow an execution live (Server-Sent Events: `progress` events with the "
                "execution, one at least per state change, then `end`)",
                "Executions",
                {
                    "description": "an event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                path=_EXEC,
                errors=("404",),
            )
        },
        "/api/v1/executions/webhook/{namespace}/{id}/{key}": {
            method: _op(
                "Start an execution through a flow's Webhook trigger; the body, headers "
                "and query parameters become `trigger.body`, `.headers`, `.parameters`",
                "Executions",
                execution,
                path=(*_NS_ID, "key"),
                errors=("404", "422"),
                extra={"204": {"description": "a condition of the trigger does not hold"}},
            )
            for method in ("get", "post", "put")
        },
        "/api/v1/logs/{executionId}": {
            "get": _op(
                "An execution's logs",
                "Logs",
                _json({"type": "array", "items": ref("LogEntry")}),
                path=_EXEC,
                query=_LOG_FILTERS,
                errors=("400", "404"),
            )
        },
        "/api/v1/logs/{executionId}/download": {
            "get": _op(
                "An execution's logs as text",
                "Logs",
                {
                    "description": "the log",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                path=_EXEC,
                query=_LOG_FILTERS,
                errors=("400", "404"),
            )
        },
        "/api/v1/logs/{executionId}/follow": {
            "get": _op(
                "Follow an execution's logs live (Server-Sent Events, until it ends)",
                "Logs",
                {
                    "description": "an event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                path=_EXEC,
                query=_LOG_FILTERS,
                errors=("400", "404"),
            )
        },
        "/api/v1/triggers/search": {
            "get": _op(
                "Every trigger of the deployed flows, with its next fire date",
                "Triggers",
                _json(_paged("Trigger")),
                query=(
                    ("q", {"type": "string"}),
                    ("namespace", {"type": "string"}),
                    ("flowId", {"type": "string"}),
                    *_PAGE,
                ),
            )
        },
        "/api/v1/triggers": {
            "put": _op(
                "Enable or disable a trigger, or backfill a Schedule over past dates",
                "Triggers",
                _json(ref("Trigger")),
                body=_body("application/json", ref("TriggerUpdate")),
                errors=("400", "404", "422"),
            )
        },
        "/api/v1/triggers/set-disabled/by-triggers": {
            "post": _op(
                "Enable or disable several triggers",
                "Triggers",
                _json(ref("Count")),
                body=_body("application/json", ref("SetDisabled")),
                errors=("400", "404"),
            )
        },
        "/api/v1/namespaces/search": {
            "get": _op(
                "Namespaces (those of the flows, and their parents)",
                "Namespaces",
                _json(_paged("Namespace")),
                query=(("q", {"type": "string"}), *_PAGE),
            )
        },
        "/api/v1/namespaces/{namespace}": {
            "get": _op(
                "A namespace (one of the flows', or a parent of one)",
                "Namespaces",
                _json(ref("Namespace")),
                path=("namespace",),
                errors=("404",),
            )
        },
        "/api/v1/namespaces/{namespace}/kv": {
            "get": _op(
                "The keys of a namespace's KV store",
                "KV",
                _json({"type": "array", "items": ref("KVEntry")}),
                path=("namespace",),
            )
        },
        "/api/v1/namespaces/{namespace}/kv/{key}": {
            "get": _op(
                "A value and its type",
                "KV",
                _json(ref("KVValue")),
                path=("namespace", "key"),
                errors=("404",),
            ),
            "put": _op(
                "Set a value: the body, as JSON if it parses, else as text; header `ttl` "
                "(ISO-8601 duration) expires it",
                "KV",
                None,
                status="204",
                path=("namespace", "key"),
                body=_body("text/plain", {"type": "string"}),
                errors=("400",),
            ),
            "delete": _op(
                "Delete a key",
                "KV",
                None,
                status="204",
                path=("namespace", "key"),
                errors=("404",),
            ),
        },
        "/api/v1/stats/executions/daily": {
            "post": _op(
                "Execution counts per state for each day of a range (default: the last 30 days)",
                "Stats",
                _json({"type": "array", "items": ref("DailyStatistics")}),
                body={
                    "required": False,
                    "content": {"application/json": {"schema": ref("StatisticRequest")}},
                },
                errors=("400", "422"),
            )
        },
        "/api/v1/instance": {
            "get": _op(
                "The live components (as their heartbeats describe them) and queue depths",
                "Misc",
                _json(
                    {
                        "type": "object",
                        "required": ["date", "services", "queues"],
                        "properties": {
                            "date": {"type": "string", "format": "date-time"},
                            "services": {"type": "array", "items": {"type": "object"}},
                            "queues": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                ),
            )
        },
        "/api/v1/openapi.json": {
            "get": _op("This document", "Misc", _json({"type": "object"})),
        },
    }


def _all_paths() -> dict[str, dict[str, Any]]:
    """Every path, and each again under ``/api/v1/{tenant}`` (Kestra 1.x's form)."""
    paths = _paths()
    # merged, not replaced: /api/v1/namespaces/{namespace}/kv has a GET here already
    added = {**more_paths(_op), **log_paths(_op), **metric_paths(_op)}
    for path, operations in added.items():
        paths.setdefault(path, {}).update(operations)
    paths.update(sdk_actions(paths))
    return with_tenants(paths)


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "runtime",
            "version": "1",
            "description": "Kestra-compatible REST API of runtime, under /api/v1/... and, as "
            "Kestra 1.x, under /api/v1/{tenant}/... (tenant `main`). Errors are JSON "
            "`{message, status, errors?}`; with users configured, every path but "
            "/health and the webhooks (unless webserver.webhook_auth) requires HTTP "
            "basic authentication.",
        },
        "components": {
            "schemas": {**SCHEMAS, **MORE_SCHEMAS, **METRIC_SCHEMAS},
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"basic": []}, {}],
        "paths": _all_paths(),
    }
