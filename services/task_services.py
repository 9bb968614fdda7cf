"""The backend operations the core tasks acting on executions, logs and triggers
need (runtime.tasks.execution_tasks.ExecutionServices), over a worker's backend."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import yaml

from backends.protocols import Backend, ExecutionFilter, LogFilter, TriggerState
from runtime.flow.states import StateType


class BackendTaskServices:
    """ExecutionServices over a Backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def count_executions(
        self,
        namespace: str | None,
        flow_id: str | None,
        states: tuple[StateType, ...] | None,
        after: datetime | None,
        before: datetime | None,
    ) -> int:
        where = ExecutionFilter(
            namespace=namespace,
            flow_id=flow_id,
            states=states,
            started_after=after,
            started_before=before,
        )
        _, total = await self._backend.executions.find(where, limit=1)
        return total

    async def ended_executions(
        self,
        namespace: str | None,
        flow_id: str | None,
        states: tuple[StateType, ...] | None,
        after: datetime | None,
        before: datetime | None,
        limit: int,
    ) -> list[tuple[str, str, str]]:
        where = ExecutionFilter(
            namespace=namespace,
            flow_id=flow_id,
            states=states,
            started_after=after,
            started_before=before,
        )
        page, _ = await self._backend.executions.find(where, descending=False, limit=limit)
        return [(e.namespace, e.flow_id, e.id) for e in page if e.state.terminated]

    async def delete_execution(self, execution_id: str) -> bool:
        return await self._backend.executions.delete(execution_id)

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
        where = LogFilter(
            namespace=namespace,
            flow_id=flow_id,
            execution_id=execution_id,
            levels=levels,
            after=after,
            before=before,
        )
        return await self._backend.logs.delete(where)

    async def logs(self, execution_id: str, min_level: str) -> list[Any]:
        entries: list[Any] = []
        after = 0
        while True:
            page = await self._backend.logs.query(
                execution_id, min_level=min_level, after_seq=after, limit=1000
            )
            entries += page
            if len(page) < 1000:
                return entries
            after = max(entry.seq or 0 for entry in page)

    async def flow_trigger_ids(self, namespace: str, flow_id: str) -> set[str] | None:
        record = await self._backend.flows.get(namespace, flow_id)
        if record is None:
            return None
        try:
            document = yaml.safe_load(record.source) or {}
        except yaml.YAMLError:
            return set()
        triggers = document.get("triggers") if isinstance(document, dict) else None
        return {str(t.get("id")) for t in triggers or [] if isinstance(t, dict)}

    async def resume_execution(self, execution_id: str, inputs: dict[str, Any]) -> None:
        from runtime.flow.events import Resume
        from services.executor import send_event

        execution = await self._backend.executions.get(execution_id)
        if execution is None:
            raise LookupError(f"no execution {execution_id!r}")
        if execution.state.current is not StateType.PAUSED:
            raise LookupError(
                f"execution {execution_id} is {execution.state.current.value}: only a paused "
                "execution can be resumed"
            )
        await send_event(
            self._backend, execution_id, Resume(at=self._backend.clock(), inputs=inputs)
        )

    async def set_trigger_disabled(
        self, namespace: str, flow_id: str, trigger_id: str, disabled: bool
    ) -> None:
        triggers = self._backend.triggers
        current = await triggers.get(namespace, flow_id, trigger_id)
        if current is None:
            current = TriggerState(namespace=namespace, flow_id=flow_id, trigger_id=trigger_id)
        await triggers.save(msgspec.structs.replace(current, disabled=disabled))
