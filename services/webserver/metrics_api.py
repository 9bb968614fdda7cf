"""Task metrics, at Kestra's ``/api/v1/metrics`` paths: the counters and timers the
task runs of an execution reported, and their names and aggregates per flow or task.

They are stored on the task runs themselves (``TaskRun.metrics``), so an execution's
metrics are one read. The per-flow answers read the flow's executions started in the
asked period, newest first, at most ``SCAN_LIMIT`` of them (docs/architecture.md,
"Metrics": no separate metrics table yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.protocols import ExecutionFilter
from runtime.flow.execution import Execution, TaskMetric, TaskRun
from services.webserver.http import (
    ApiError,
    json_response,
    not_found,
    paged,
    paging,
    q_datetime,
    q_str,
    state,
)
from services.webserver.openapi_schemas import ref
from services.webserver.tenants import API, DEFAULT_TENANT

#: the most executions one per-flow answer reads
SCAN_LIMIT = 10_000
_PAGE = 500
AGGREGATIONS = ("sum", "avg", "min", "max")
_REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "min": min,
    "max": max,
    "avg": lambda values: sum(values) / len(values),
}
_SORTABLE = ("name", "timestamp", "value", "taskId", "type")


def _entry(execution: Execution, run: TaskRun, metric: TaskMetric) -> dict[str, Any]:
    return {
        "tenantId": DEFAULT_TENANT,
        "namespace": execution.namespace,
        "flowId": execution.flow_id,
        "taskId": run.task_id,
        "executionId": execution.id,
        "taskRunId": run.id,
        "type": metric.type,
        "name": metric.name,
        "value": metric.value,
        "timestamp": metric.timestamp or run.state.histories[-1].date,
        "tags": metric.tags,
        "deleted": False,
    }


def _sorted(entries: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    for spec in reversed(request.query_params.getlist("sort")):
        field, _, direction = spec.partition(":")
        if field not in _SORTABLE or direction not in ("", "asc", "desc"):
            raise ApiError(
                400,
                f"query parameter `sort`: {spec!r} is not FIELD[:asc|desc] with FIELD one of "
                f"{', '.join(_SORTABLE)}",
            )
        entries.sort(key=itemgetter(field), reverse=direction == "desc")
    return entries


async def by_execution(request: Request) -> Response:
    execution_id = request.path_params["executionId"]
    execution = await state(request).backend.executions.get(execution_id)
    if execution is None:
        raise not_found(f"execution {execution_id!r}")
    task_run_id, task_id = q_str(request, "taskRunId"), q_str(request, "taskId")
    entries = [
        _entry(execution, run, metric)
        for run in execution.task_run_list
        if (task_run_id is None or run.id == task_run_id)
        and (task_id is None or run.task_id == task_id)
        for metric in run.metrics
    ]
    limit, offset = paging(request)
    entries = _sorted(entries, request)
    return json_response(paged(entries[offset : offset + limit], len(entries)))


async def _executions(
    request: Request, start: datetime | None = None, end: datetime | None = None
) -> Iterator[Execution]:
    """The flow's executions started in [start, end), newest first, at most SCAN_LIMIT."""
    namespace, flow_id = request.path_params["namespace"], request.path_params["flowId"]
    where = ExecutionFilter(
        namespace=namespace, flow_id=flow_id, started_after=start, started_before=end
    )
    found: list[Execution] = []
    store = state(request).backend.executions
    while len(found) < SCAN_LIMIT:
        page, _ = await store.find(where, limit=_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < _PAGE:
            break
    # the filter takes the namespaces below too; these paths mean this one
    return (e for e in found if e.namespace == namespace)


def _metrics(
    executions: Iterator[Execution], task_id: str | None = None
) -> Iterator[tuple[TaskRun, TaskMetric]]:
    for execution in executions:
        for run in execution.task_run_list:
            if task_id is None or run.task_id == task_id:
                for metric in run.metrics:
                    yield run, metric


async def flow_names(request: Request) -> Response:
    names = {m.name for _, m in _metrics(await _executions(request))}
    return json_response(sorted(names))


async def task_names(request: Request) -> Response:
    task_id = request.path_params["taskId"]
    names = {m.name for _, m in _metrics(await _executions(request), task_id)}
    return json_response(sorted(names))


async def tasks_with_metrics(request: Request) -> Response:
    tasks = {run.task_id for run, _ in _metrics(await _executions(request))}
    return json_response(sorted(tasks))


async def aggregates(request: Request) -> Response:
    """One value per hour (a period of a day or less) or per day, of one metric."""
    aggregation = (q_str(request, "aggregation") or "sum").lower()
    if aggregation not in AGGREGATIONS:
        raise ApiError(
            400,
            f"query parameter `aggregation`: {aggregation!r} is none of {', '.join(AGGREGATIONS)}",
        )
    end = q_datetime(request, "endDate") or datetime.now(UTC)
    start = q_datetime(request, "startDate") or end - timedelta(days=30)
    if start >= end:
        raise ApiError(
            400, "query parameters `startDate`, `endDate`: the start is not before the end"
        )
    hourly = end - start <= timedelta(days=1)
    name = request.path_params["metric"]
    task_id = request.path_params.get("taskId")
    buckets: dict[datetime, list[float]] = {}
    for run, metric in _metrics(await _executions(request, start, end), task_id):
        if metric.name != name:
            continue
        at = (metric.timestamp or run.state.histories[-1].date).astimezone(UTC)
        bucket = at.replace(minute=0, second=0, microsecond=0)
        if not hourly:
            bucket = bucket.replace(hour=0)
        buckets.setdefault(bucket, []).append(metric.value)
    reduce = _REDUCERS[aggregation]
    return json_response(
        {
            "groupBy": "hour" if hourly else "day",
            "aggregations": [
                {"name": name, "value": reduce(values), "date": date}
                for date, values in sorted(buckets.items())
            ],
        }
    )


routes = [
    Route(f"{API}metrics/names/{{namespace}}/{{flowId}}", flow_names, methods=["GET"]),
    Route(f"{API}metrics/names/{{namespace}}/{{flowId}}/{{taskId}}", task_names, methods=["GET"]),
    Route(f"{API}metrics/tasks/{{namespace}}/{{flowId}}", tasks_with_metrics, methods=["GET"]),
    Route(
        f"{API}metrics/aggregates/{{namespace}}/{{flowId}}/{{metric}}", aggregates, methods=["GET"]
    ),
    Route(
        f"{API}metrics/aggregates/{{namespace}}/{{flowId}}/{{taskId}}/{{metric}}",
        aggregates,
        methods=["GET"],
    ),
    Route(f"{API}metrics/{{executionId}}", by_execution, methods=["GET"]),
]

# -- the OpenAPI entries ---------------------------------------------------------------
SCHEMAS: dict[str, Any] = {
    "MetricEntry": {
        "type": "object",
        "required": ["namespace", "flowId", "executionId", "taskRunId", "type", "name", "value"],
        "properties": {
            "tenantId": {"type": "string"},
            "namespace": {"type": "string"},
            "flowId": {"type": "string"},
            "taskId": {"type": "string"},
            "executionId": {"type": "string"},
            "taskRunId": {"type": "string"},
            "type": {"type": "string", "enum": ["counter", "timer"]},
            "name": {"type": "string"},
            "value": {"type": "number"},
            "timestamp": {"type": "string", "format": "date-time"},
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "deleted": {"type": "boolean"},
        },
    },
    "MetricAggregations": {
        "type": "object",
        "required": ["groupBy", "aggregations"],
        "properties": {
            "groupBy": {"type": "string", "enum": ["hour", "day"]},
            "aggregations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "date"],
                    "properties": {
                        "name": {"type": "string"},
                        "value": {"type": "number"},
                        "date": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def metric_paths(op: Any) -> dict[str, dict[str, Any]]:
    """The metrics paths (without a tenant), built with ``openapi._op``."""
    names = _json({"type": "array", "items": {"type": "string"}})
    page = _json(
        {
            "type": "object",
            "required": ["results", "total"],
            "properties": {
                "results": {"type": "array", "items": ref("MetricEntry")},
                "total": {"type": "integer"},
            },
        }
    )
    date = {"type": "string", "format": "date-time"}
    period = (
        ("startDate", date),
        ("endDate", date),
        ("aggregation", {"type": "string", "enum": list(AGGREGATIONS)}),
    )
    aggregate = _json(ref("MetricAggregations"))
    flow = ("namespace", "flowId")
    return {
        f"{API}metrics/{{executionId}}": {
            "get": op(
                "The metrics the task runs of an execution reported, one page and the total",
                "Metrics",
                page,
                path=("executionId",),
                query=(
                    ("page", {"type": "integer", "minimum": 1}),
                    ("size", {"type": "integer", "minimum": 1}),
                    ("sort", {"type": "string"}),
                    ("taskRunId", {"type": "string"}),
                    ("taskId", {"type": "string"}),
                ),
                errors=("400", "404"),
            )
        },
        f"{API}metrics/names/{{namespace}}/{{flowId}}": {
            "get": op(
                "The names of the metrics a flow's tasks reported", "Metrics", names, path=flow
            )
        },
        f"{API}metrics/names/{{namespace}}/{{flowId}}/{{taskId}}": {
            "get": op(
                "The names of the metrics one task of a flow reported",
                "Metrics",
                names,
                path=(*flow, "taskId"),
            )
        },
        f"{API}metrics/tasks/{{namespace}}/{{flowId}}": {
            "get": op(
                "The ids of a flow's tasks that reported metrics", "Metrics", names, path=flow
            )
        },
        f"{API}metrics/aggregates/{{namespace}}/{{flowId}}/{{metric}}": {
            "get": op(
                "One metric of a flow aggregated per hour (a period of a day or less) or day; "
                "the period defaults to the last 30 days",
                "Metrics",
                aggregate,
                path=(*flow, "metric"),
                query=period,
            )
        },
        f"{API}metrics/aggregates/{{namespace}}/{{flowId}}/{{taskId}}/{{metric}}": {
            "get": op(
                "One metric of one task of a flow aggregated per hour or day",
                "Metrics",
                aggregate,
                path=(*flow, "taskId", "metric"),
                query=period,
            )
        },
    }
