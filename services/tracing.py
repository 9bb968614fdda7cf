"""Optional OpenTelemetry traces: an execution as a trace, its task runs as spans.

Only with the ``opentelemetry`` extra installed and ``tracing.endpoint`` set (an
OTLP/HTTP traces URL, e.g. ``http://127.0.0.1:4318/v1/traces``); otherwise nothing
is imported and nothing happens. The executor hands over each execution once it
has ended and its batch committed; the spans are built then, with the dates of the
state histories, and exported by the SDK's batch processor on its own thread, so
nothing of it sits on an execution's way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from runtime.config import TracingConfig
from runtime.flow.execution import Execution
from runtime.log import get_logger

log = get_logger(__name__)

#: called with each ended execution and its task types by task id
ExecutionTracer = Callable[[Execution, dict[str, str]], None]


def _ns(date: datetime) -> int:
    return int(date.timestamp() * 1_000_000_000)


class OtelTracer:
    """Exports ended executions through an SDK tracer provider."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("runtime")

    def __call__(self, execution: Execution, task_types: dict[str, str]) -> None:
        from opentelemetry import trace

        histories = execution.state.histories
        if not histories:
            return
        root = self.tracer.start_span(
            f"{execution.namespace}.{execution.flow_id}",
            start_time=_ns(histories[0].date),
            attributes={
                "runtime.execution.id": execution.id,
                "runtime.namespace": execution.namespace,
                "runtime.flow.id": execution.flow_id,
                "runtime.flow.revision": execution.flow_revision or 1,
                "runtime.state": execution.state.current.value,
            },
        )
        if execution.state.current.value == "FAILED":
            root.set_status(trace.Status(trace.StatusCode.ERROR))
        spans: dict[str, Any] = {}
        # parents start no later than their children: created first
        runs = sorted(execution.task_run_list, key=lambda r: r.state.histories[0].date)
        for run in runs:
            parent = spans.get(run.parent_task_run_id or "", root)
            span = self.tracer.start_span(
                run.task_id,
                context=trace.set_span_in_context(parent),
                start_time=_ns(run.state.histories[0].date),
                attributes={
                    "runtime.task_run.id": run.id,
                    "runtime.task.id": run.task_id,
                    "runtime.task.type": task_types.get(run.task_id, "unknown"),
                    "runtime.state": run.state.current.value,
                    "runtime.attempts": run.attempt_count,
                    **({"runtime.value": run.value} if run.value is not None else {}),
                },
            )
            if run.state.current.value == "FAILED":
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            spans[run.id] = span
        for run in runs:
            spans[run.id].end(end_time=_ns(run.state.histories[-1].date))
        root.end(end_time=_ns(histories[-1].date))

    def shutdown(self) -> None:
        """Export what is pending and stop (blocks: call it off the loop)."""
        self.provider.shutdown()


def make_tracer(config: TracingConfig) -> OtelTracer | None:
    """The tracer ``config`` asks for, or None: no endpoint, or the extra missing
    (then a warning says how to install it)."""
    if not config.endpoint:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning(
            "tracing.unavailable",
            endpoint=config.endpoint,
            error=str(exc),
            fix="pip install 'runtime[opentelemetry]', or unset tracing.endpoint",
        )
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    log.info("tracing.enabled", endpoint=config.endpoint)
    return OtelTracer(provider)
