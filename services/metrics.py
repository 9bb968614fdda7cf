"""Prometheus metrics of this process (``GET /metrics``), with prometheus-client.

Every family lives in the process's default registry, so one scrape of a process
shows all its components (and prometheus-client's own ``process_*`` families).
Labels are bounded: namespaces, flow ids, states, task types, queue names, route
templates and status codes; never an execution, task run or instance id.

Counters and histograms are updated in place by the components (a dict lookup
and an add). What needs a read of the database (queue depths, the oldest waiting
message) is read when scraped, never per message.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.flow.engine import task_index
from runtime.log import get_logger
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE

if TYPE_CHECKING:
    from backends.protocols import Backend
    from runtime.flow.execution import Execution, TaskRun
    from runtime.flow.model import Flow

log = get_logger(__name__)

#: the durations of short things: engine passes, HTTP requests, no-op tasks
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: task runs last from milliseconds to hours
_TASKS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

EXECUTIONS_CREATED = Counter(
    "runtime_executions_created",
    "Executions the executor started handling (their first event), by flow.",
    ["namespace", "flow"],
)
EXECUTIONS_ENDED = Counter(
    "runtime_executions_ended",
    "Executions that reached a terminal state, by flow and state.",
    ["namespace", "flow", "state"],
)
TASK_RUN_DURATION = Histogram(
    "runtime_task_run_duration_seconds",
    "Task runs from their first state to their terminal one, by task type and state.",
    ["task_type", "state"],
    buckets=_TASKS,
)
EXECUTOR_BATCH_SIZE = Histogram(
    "runtime_executor_batch_size",
    "Events in each batch the executor handled in one transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
EXECUTOR_PASS = Histogram(
    "runtime_executor_pass_seconds",
    "The executor's time per batch, claim to commit.",
    buckets=_FAST,
)
SCHEDULER_LAG = Histogram(
    "runtime_scheduler_lag_seconds",
    "How long after its due date a schedule fired.",
    buckets=(0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
HTTP_REQUEST = Histogram(
    "runtime_http_request_duration_seconds",
    "Webserver requests, by method, route template and status.",
    ["method", "route", "status"],
    buckets=_FAST,
)
LIVENESS_EVENTS = Counter(
    "runtime_liveness_events",
    "Liveness decisions: instances declared dead, jobs re-queued, expired leases released.",
    ["event"],
)
QUEUE_DEPTH = Gauge(
    "runtime_queue_depth", "Messages in the queue, leased or not (read on scrape).", ["queue"]
)
QUEUE_OLDEST_AGE = Gauge(
    "runtime_queue_oldest_message_age_seconds",
    "How long the earliest claimable message has been waiting (0: none; read on scrape).",
    ["queue"],
)
INDEXER_DOCUMENTS = Counter(
    "runtime_indexer_documents",
    "Documents the indexer sent to the search store, by outcome (written; stale: not"
    " newer than the one indexed; rejected).",
    ["outcome"],
)
INDEXER_LAG = Gauge(
    "runtime_indexer_lag_records",
    "Records of the topic not indexed yet, over this indexer's partitions.",
    ["topic"],
)
INDEXER_RETRIES = Counter(
    "runtime_indexer_bulk_retries", "Bulk requests tried again (the search store was down)."
)
for _event in ("instance_dead", "jobs_requeued", "leases_expired"):
    LIVENESS_EVENTS.labels(_event)  # present at 0 before anything happens

QUEUES = (EXECUTOR_QUEUE, WORKER_QUEUE)
#: a scrape never waits on the database longer than this for the queue gauges
SCRAPE_TIMEOUT = 2.0


# -- the executor ---------------------------------------------------------------
def observe_pass(before: Execution | None, after: Execution, flow: Flow) -> None:
    """Count what one engine pass changed: a start, an end, task runs ended."""
    state = after.state.current
    if before is None or before.state.current is state:
        started = False
    else:
        started = len(before.state.histories) <= 1
    if started:
        EXECUTIONS_CREATED.labels(after.namespace, after.flow_id).inc()
    if state.terminated and (before is None or not before.state.current.terminated):
        EXECUTIONS_ENDED.labels(after.namespace, after.flow_id, state.value).inc()
    old_runs = before.task_run_list if before is not None else ()
    index = None
    old: dict[str, TaskRun] | None = None
    for position, run in enumerate(after.task_run_list):
        # The engine keeps a task run's place and shares the ones a pass did not
        # touch: an identity check skips those without a lookup.
        previous = old_runs[position] if position < len(old_runs) else None
        if previous is run:
            continue
        current = run.state.current
        if not current.terminated:
            continue
        if previous is not None and previous.id != run.id:
            if old is None:
                old = {r.id: r for r in old_runs}
            previous = old.get(run.id)
        if previous is not None and previous.state.current.terminated:
            continue
        if index is None:
            index = task_index(flow)
        task = index.get(run.task_id)
        kind = str(getattr(task, "type", "unknown"))
        histories = run.state.histories
        seconds = (histories[-1].date - histories[0].date).total_seconds() if histories else 0.0
        TASK_RUN_DURATION.labels(kind, current.value).observe(max(0.0, seconds))


# -- workers' slots, read on scrape ------------------------------------------------
class _HasSlots(Protocol):
    def slots(self) -> tuple[int, int]: ...


_WORKERS: weakref.WeakSet[_HasSlots] = weakref.WeakSet()


def watch_worker(worker: _HasSlots) -> None:
    """Count ``worker``'s slots in ``runtime_worker_slots`` for as long as it lives."""
    _WORKERS.add(worker)


def forget_worker(worker: _HasSlots) -> None:
    _WORKERS.discard(worker)


class _WorkerSlots(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "runtime_worker_slots",
            "Task slots of this process's workers, busy or free.",
            labels=["state"],
        )
        busy = free = 0
        for worker in list(_WORKERS):
            b, f = worker.slots()
            busy, free = busy + b, free + f
        family.add_metric(["busy"], busy)
        family.add_metric(["free"], free)
        yield family


REGISTRY.register(_WorkerSlots())


# -- the scrape ----------------------------------------------------------------------
async def refresh_queue_gauges(backend: Backend, queues: Iterable[str] = QUEUES) -> None:
    """Read the queues' depths and oldest waiting message from the backend."""
    now = backend.clock()
    for queue in queues:
        depth = await backend.queues.depth(queue)
        due: datetime | None = await backend.queues.next_available(queue)
        QUEUE_DEPTH.labels(queue).set(depth)
        age = 0.0 if due is None else max(0.0, (now - due).total_seconds())
        QUEUE_OLDEST_AGE.labels(queue).set(age)


async def scrape(backend: Backend | None) -> Response:
    """The text exposition, queue gauges refreshed first (kept stale, with a warning,
    when the backend does not answer in time: a scrape still shows the rest)."""
    if backend is not None:
        try:
            await asyncio.wait_for(refresh_queue_gauges(backend), SCRAPE_TIMEOUT)
        except Exception as exc:
            log.warning("metrics.queue_gauges_unavailable", error=str(exc))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Times every HTTP request by its route template (``/api/v1/executions/{executionId}``,
    never the raw path) and status. A request no route matched counts as ``unmatched``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUEST.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )


async def metrics_endpoint(request: Request) -> Response:
    backend: Backend | None = getattr(request.app.state, "metrics_backend", None)
    return await scrape(backend)
