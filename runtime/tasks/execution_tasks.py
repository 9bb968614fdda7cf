"""Core tasks that act on executions, logs, the KV store and triggers:
``execution.Labels``, ``execution.Count``, ``execution.PurgeExecutions``,
``log.Fetch``, ``log.PurgeLogs``, ``kv.GetKeys`` and ``trigger.Toggle``.

They reach the backend through ``ctx.backend_services`` (:class:`ExecutionServices`,
which the worker provides), so the kernel imports no backend.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol, cast

import msgspec

from runtime.flow.context import is_truthy
from runtime.flow.model import RunnableTask
from runtime.flow.states import StateType
from runtime.tasks.context import RunContext, TaskFailure

Outputs = dict[str, Any] | None

_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR")


class ExecutionServices(Protocol):
    """What these tasks need of the backend; the worker provides it as
    ``ctx.backend_services`` (services/task_services.py), so the kernel never imports
    a backend."""

    async def count_executions(
        self,
        namespace: str | None,
        flow_id: str | None,
        states: tuple[StateType, ...] | None,
        after: datetime | None,
        before: datetime | None,
    ) -> int: ...

    async def ended_executions(
        self,
        namespace: str | None,
        flow_id: str | None,
        states: tuple[StateType, ...] | None,
        after: datetime | None,
        before: datetime | None,
        limit: int,
    ) -> list[tuple[str, str, str]]:
        """(namespace, flow id, execution id) of ended executions, oldest first."""
        ...

    async def delete_execution(self, execution_id: str) -> bool: ...

    async def delete_logs(
        self,
        *,
        namespace: str | None,
        flow_id: str | None,
        execution_id: str | None,
        levels: tuple[str, ...] | None,
        after: datetime | None,
        before: datetime | None,
    ) -> int:
        """Delete the log lines matching every condition given; how many went."""
        ...

    async def logs(self, execution_id: str, min_level: str) -> list[Any]: ...

    async def flow_trigger_ids(self, namespace: str, flow_id: str) -> set[str] | None:
        """The trigger ids of the flow's latest revision, None when there is no flow."""
        ...

    async def set_trigger_disabled(
        self, namespace: str, flow_id: str, trigger_id: str, disabled: bool
    ) -> None: ...


def _services(ctx: RunContext, what: str) -> ExecutionServices:
    services = getattr(ctx, "backend_services", None)
    if services is None:
        raise TaskFailure(f"{what} needs the worker's backend, which this context lacks")
    return cast(ExecutionServices, services)


def _instant(value: Any, what: str, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise TaskFailure(
            f"{what}: `{name}` must be an ISO-8601 date-time such as 2024-01-31T10:00:00Z, "
            f"got {value!r}"
        ) from None


def _states(values: Sequence[str] | None, what: str) -> tuple[StateType, ...] | None:
    if not values:
        return None
    try:
        return tuple(StateType(str(v).upper()) for v in values)
    except ValueError as exc:
        raise TaskFailure(f"{what}: {exc}; states are Kestra's (SUCCESS, FAILED, ...)") from None


# -- execution.Labels --------------------------------------------------------------
class Labels(RunnableTask, kw_only=True, frozen=True):
    """Adds labels to the running execution, or changes their value; the engine
    applies them when the task succeeds (its outputs carry them as ``labels``)."""

    labels: dict[str, Any] | list[dict[str, Any]] | str

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.Labels"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.executions.Labels",)
    sets_execution_labels: ClassVar[bool] = True

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Labels {self.id!r}"
        rendered = await ctx.render(self.labels)
        if isinstance(rendered, str):
            try:
                rendered = json.loads(rendered)
            except ValueError:
                raise TaskFailure(
                    f"{where}: labels must be a map, a list of {{key, value}} or a JSON object, "
                    f"got {rendered[:200]!r}"
                ) from None
        if isinstance(rendered, list):
            pairs = {}
            for item in rendered:
                if not isinstance(item, dict) or "key" not in item or "value" not in item:
                    raise TaskFailure(f"{where}: each label of the list needs `key` and `value`")
                pairs[str(item["key"])] = item["value"]
            rendered = pairs
        if not isinstance(rendered, dict):
            raise TaskFailure(f"{where}: labels must be a map of key to value")
        labels = {str(k): _label_text(v) for k, v in rendered.items()}
        if any(not key for key in labels):
            raise TaskFailure(f"{where}: a label needs a non-empty key")
        return {"labels": labels}


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# -- execution.Count ---------------------------------------------------------------
class FlowRef(
    msgspec.Struct, kw_only=True, frozen=True, rename="camel", forbid_unknown_fields=True
):
    namespace: str
    flow_id: str


class Count(RunnableTask, kw_only=True, frozen=True):
    """Counts the executions of some flows; ``expression`` (``{{ count > 0 }}``)
    keeps the flows whose count it holds for."""

    flows: list[FlowRef] | None = None
    namespaces: list[str] | None = None
    states: list[str] | None = None
    start_date: str
    end_date: str | None = None
    expression: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.Count"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.executions.Counts",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Count {self.id!r}"
        services = _services(ctx, where)
        from_date = _instant(await ctx.render(self.start_date), where, "startDate")
        to_date = _instant(await ctx.render(self.end_date), where, "endDate")
        states = _states(self.states, where)
        targets: list[tuple[str | None, str | None]] = [
            (f.namespace, f.flow_id) for f in self.flows or []
        ] + [(str(await ctx.render(ns)), None) for ns in self.namespaces or []]
        if not targets:
            raise TaskFailure(f"{where}: set `flows` or `namespaces` to count")
        results = []
        for namespace, flow_id in targets:
            count = await services.count_executions(namespace, flow_id, states, from_date, to_date)
            keep = await ctx.render(self.expression, {"count": count})
            if is_truthy(keep):
                results.append({"namespace": namespace, "flowId": flow_id, "count": count})
        return {"results": results, "total": sum(r["count"] for r in results)}


# -- execution.PurgeExecutions -----------------------------------------------------
class PurgeExecutions(RunnableTask, kw_only=True, frozen=True):
    """Deletes ended executions started in a date range (with their files)."""

    namespace: str | None = None
    flow_id: str | None = None
    start_date: str | None = None
    end_date: str
    states: list[str] | None = None
    purge_execution: bool = True
    purge_log: bool = True
    purge_metric: bool = True
    purge_storage: bool = True

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.PurgeExecutions"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.core.storage.Purge",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"PurgeExecutions {self.id!r}"
        services = _services(ctx, where)
        namespace = str(await ctx.render(self.namespace)) if self.namespace else None
        flow_id = str(await ctx.render(self.flow_id)) if self.flow_id else None
        after = _instant(await ctx.render(self.start_date), where, "startDate")
        before = _instant(await ctx.render(self.end_date), where, "endDate")
        states = _states(self.states, where)
        executions = files = logs = 0
        seen: set[str] = set()
        while True:
            page = await services.ended_executions(namespace, flow_id, states, after, before, 200)
            page = [item for item in page if item[2] not in seen and item[2] != ctx.execution_id]
            if not page:
                break
            for space, flow, execution_id in page:
                seen.add(execution_id)
                if self.purge_storage:
                    files += await _purge_files(ctx, space, flow, execution_id)
                if self.purge_log:
                    logs += await services.delete_logs(
                        namespace=None,
                        flow_id=None,
                        execution_id=execution_id,
                        levels=None,
                        after=None,
                        before=None,
                    )
                if self.purge_execution and await services.delete_execution(execution_id):
                    executions += 1
        return {
            "executionsCount": executions,
            "logsCount": logs,
            "storagesCount": files,
            "metricsCount": 0,
        }


async def _purge_files(ctx: RunContext, namespace: str, flow_id: str, execution_id: str) -> int:
    storage = cast(Any, ctx.storage)
    if not hasattr(storage, "list"):
        return 0
    uris = await storage.list(namespace, f"{flow_id}/executions/{execution_id}/")
    for uri in uris:
        await storage.delete(uri)
    return len(uris)


# -- log.Fetch ---------------------------------------------------------------------
class Fetch(RunnableTask, kw_only=True, frozen=True):
    """Writes the log lines of an execution (this one by default) to a file of
    internal storage, one JSON object per line."""

    execution_id: str | None = None
    tasks_id: list[str] | None = None
    level: str = "INFO"
    namespace: str | None = None
    flow_id: str | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.log.Fetch"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.log.Fetch",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Fetch {self.id!r}"
        services = _services(ctx, where)
        execution_id = (
            str(await ctx.render(self.execution_id)) if self.execution_id else ctx.execution_id
        )
        level = str(await ctx.render(self.level)).upper()
        if level not in _LEVELS:
            raise TaskFailure(f"{where}: level must be one of {', '.join(_LEVELS)}, got {level!r}")
        wanted = set(await ctx.render(list(self.tasks_id))) if self.tasks_id else None
        found = await services.logs(execution_id, "WARNING" if level == "WARN" else level)
        entries = [e for e in found if wanted is None or e.task_id in wanted]
        lines = "".join(
            json.dumps(
                {
                    "namespace": e.namespace,
                    "flowId": e.flow_id,
                    "taskId": e.task_id,
                    "executionId": e.execution_id,
                    "taskRunId": e.task_run_id,
                    "attemptNumber": e.attempt,
                    "timestamp": e.timestamp.isoformat().replace("+00:00", "Z"),
                    "level": e.level,
                    "message": e.message,
                },
                separators=(",", ":"),
            )
            + "\n"
            for e in entries
        )
        prefix = (
            f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"
        )
        uri = await ctx.storage.put(ctx.namespace, f"{prefix}/logs.ion", lines.encode())
        return {"uri": uri, "size": len(entries)}


# -- log.PurgeLogs -----------------------------------------------------------------
class PurgeLogs(RunnableTask, kw_only=True, frozen=True):
    """Deletes the log lines of a namespace (and those below it), a flow or an
    execution, written before ``endDate`` (and from ``startDate``), of some levels."""

    namespace: str | None = None
    flow_id: str | None = None
    execution_id: str | None = None
    log_levels: list[str] | None = None
    start_date: str | None = None
    end_date: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.log.PurgeLogs"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.log.PurgeLogs",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"PurgeLogs {self.id!r}"
        services = _services(ctx, where)
        levels = None
        if self.log_levels:
            levels = tuple(str(v).upper() for v in await ctx.render(list(self.log_levels)))
            unknown = [v for v in levels if v not in _LEVELS]
            if unknown:
                raise TaskFailure(
                    f"{where}: `logLevels` must be among {', '.join(_LEVELS)}, got {unknown[0]!r}"
                )
        count = await services.delete_logs(
            namespace=str(await ctx.render(self.namespace)) if self.namespace else None,
            flow_id=str(await ctx.render(self.flow_id)) if self.flow_id else None,
            execution_id=(str(await ctx.render(self.execution_id)) if self.execution_id else None),
            levels=levels,
            after=_instant(await ctx.render(self.start_date), where, "startDate"),
            before=_instant(await ctx.render(self.end_date), where, "endDate"),
        )
        return {"count": count}


# -- kv.GetKeys --------------------------------------------------------------------
class KvGetKeys(RunnableTask, kw_only=True, frozen=True):
    """The keys of a namespace's KV store, optionally those starting with ``prefix``."""

    prefix: str | None = None
    namespace: str | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.GetKeys"

    async def run(self, ctx: RunContext) -> Outputs:
        namespace = str(await ctx.render(self.namespace)) if self.namespace else ctx.namespace
        prefix = str(await ctx.render(self.prefix)) if self.prefix else ""
        store = cast(Any, ctx.kv)
        if not hasattr(store, "list"):
            raise TaskFailure(f"GetKeys {self.id!r}: this worker's KV store cannot list keys")
        entries = await store.list(namespace)
        keys = [e.key for e in entries if str(e.key).startswith(prefix)]
        return {"keys": keys}


# -- trigger.Toggle ----------------------------------------------------------------
class Toggle(RunnableTask, kw_only=True, frozen=True):
    """Enables or disables a trigger of a flow (this flow by default)."""

    namespace: str | None = None
    flow_id: str | None = None
    trigger: str
    enabled: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.trigger.Toggle"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.trigger.Toggle",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Toggle {self.id!r}"
        services = _services(ctx, where)
        namespace = str(await ctx.render(self.namespace)) if self.namespace else ctx.namespace
        flow_id = str(await ctx.render(self.flow_id)) if self.flow_id else ctx.flow_id
        trigger_id = str(await ctx.render(self.trigger))
        ids = await services.flow_trigger_ids(namespace, flow_id)
        if ids is None:
            raise TaskFailure(f"{where}: no flow {namespace}.{flow_id}")
        if trigger_id not in ids:
            known = ", ".join(sorted(ids)) or "none"
            raise TaskFailure(
                f"{where}: flow {namespace}.{flow_id} has no trigger {trigger_id!r} "
                f"(it has: {known})"
            )
        await services.set_trigger_disabled(namespace, flow_id, trigger_id, not self.enabled)
        return None


EXECUTION_TASKS: tuple[type[RunnableTask], ...] = (
    Labels,
    Count,
    PurgeExecutions,
    Fetch,
    PurgeLogs,
    KvGetKeys,
    Toggle,
)
