"""The ExecutionStore protocol on Kafka: the executor's partitions from its state store,
everything else from a global reader of the changelog.

A read of one execution looks, in order, at what the unit of work staged, at the
state store when this process owns the execution's partition (the executor's hot
path: ``get_for_update``), and then at the global reader (``backends.kafka.tables``),
which catches up with the changelog first. The global reader starts on first use,
so an executor that only handles its own partitions never reads the whole topic;
lists, searches and counts (the webserver, concurrency limits) use it, with the
memory backend's rules (``MemoryExecutions``) over its dict. Writes are staged in
the unit of work's view and produced at its commit (``KafkaBackend._commit_unit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from backends.memory.data import View
from backends.memory.stores import MemoryExecutions
from backends.protocols import DailyCount, ExecutionFilter, ExecutionSortField
from runtime.flow.execution import Execution
from runtime.flow.states import StateType

if TYPE_CHECKING:
    from backends.kafka.backend import KafkaBackend, _TableSession


class KafkaExecutions:
    """The ExecutionStore protocol of one unit of work (or autocommit)."""

    def __init__(self, backend: KafkaBackend, session: _TableSession) -> None:
        self._backend = backend
        self._session = session
        self._memory = MemoryExecutions(session)

    async def get(self, execution_id: str) -> Execution | None:
        staged = self._session.staged_view()
        if staged is not None:
            changes = staged.executions.staged()
            if execution_id in changes:
                return changes[execution_id]
        state = self._backend.state
        if state.owns(execution_id):
            found = await state.get(execution_id)
            if found is not None:
                return found
        # not ours, or not running here (ended, or not created): the global reader
        await self._backend._executions.catch_up()
        return await self._memory.get(execution_id)

    async def get_for_update(self, execution_id: str) -> Execution | None:
        """The execution; its partition's owner is its one writer across processes
        (units of work of one process run one at a time)."""
        return await self.get(execution_id)

    async def save(self, execution: Execution) -> None:
        await self._memory.save(execution)

    async def delete(self, execution_id: str) -> bool:
        if await self.get(execution_id) is None:
            return False

        def op(view: View) -> bool:
            view.executions.discard(execution_id)
            return True

        return await self._session.write(op)

    async def _global(self) -> MemoryExecutions:
        await self._backend._executions.catch_up()
        return self._memory

    async def search(
        self,
        *,
        namespace: str | None = None,
        flow_id: str | None = None,
        states: Sequence[StateType] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Execution]:
        memory = await self._global()
        return await memory.search(
            namespace=namespace, flow_id=flow_id, states=states, limit=limit, offset=offset
        )

    async def find(
        self,
        where: ExecutionFilter,
        *,
        sort: ExecutionSortField = "start_date",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Execution], int]:
        memory = await self._global()
        return await memory.find(
            where, sort=sort, descending=descending, limit=limit, offset=offset
        )

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        return await (await self._global()).daily_counts(where)

    async def count_running(self, namespace: str, flow_id: str) -> int:
        return await (await self._global()).count_running(namespace, flow_id)

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        return await (await self._global()).oldest_queued(namespace, flow_id)


__all__: list[Any] = ["KafkaExecutions"]
