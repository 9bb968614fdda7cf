"""The webserver's backend in the high-availability size: the primary backend
(Kafka) for writes and reads by id, the search store for lists, searches and stats.

Reads by id go to the primary first (read your writes: an execution the API just
created or killed is there before the indexer has indexed it), then to the search
store (on Kafka, an ended execution leaves the executor's state). Everything that
lists, searches or counts goes to the search store and is as fresh as the
indexer's lag. An unreachable search store is ``Transient`` (the API's 503) on
those calls only.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from backends.elasticsearch.store import SearchStore
from backends.protocols import (
    Backend,
    Clock,
    DailyCount,
    ExecutionFilter,
    ExecutionSortField,
    ExecutionStore,
    FlowRecord,
    FlowStore,
    Inbox,
    KillStore,
    KVStore,
    LeaderLock,
    LogFilter,
    LogStore,
    Queues,
    ServiceRegistry,
    Stores,
    TriggerState,
    TriggerStore,
)
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry


class _Executions:
    def __init__(self, primary: ExecutionStore, search: SearchStore) -> None:
        self._primary, self._search = primary, search

    async def get(self, execution_id: str) -> Execution | None:
        found = await self._primary.get(execution_id)
        if found is None:
            found = await self._search.executions.get(execution_id)
        return found

    async def get_for_update(self, execution_id: str) -> Execution | None:
        return await self._primary.get_for_update(execution_id)

    async def save(self, execution: Execution) -> None:
        await self._primary.save(execution)

    async def delete(self, execution_id: str) -> bool:
        deleted = await self._primary.delete(execution_id)
        # unreachable store: Transient (503) after the primary's deletion; asked
        # again, the primary has nothing left and the document goes
        indexed = await self._search.delete_execution(execution_id)
        return deleted or indexed

    async def search(
        self,
        *,
        namespace: str | None = None,
        flow_id: str | None = None,
        states: Sequence[StateType] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Execution]:
        return await self._search.executions.search(
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
        return await self._search.executions.find(
            where, sort=sort, descending=descending, limit=limit, offset=offset
        )

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        return await self._search.executions.daily_counts(where)

    async def count_running(self, namespace: str, flow_id: str) -> int:
        return await self._primary.count_running(namespace, flow_id)

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        return await self._primary.oldest_queued(namespace, flow_id)


class _Flows:
    def __init__(self, primary: FlowStore, search: SearchStore) -> None:
        self._primary, self._search = primary, search

    async def deploy(self, namespace: str, flow_id: str, source: str) -> FlowRecord:
        return await self._primary.deploy(namespace, flow_id, source)

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        return await self._primary.get(namespace, flow_id, revision)

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        return await self._search.flows.list(namespace)

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]:
        return await self._search.flows.revisions(namespace, flow_id)

    async def delete(self, namespace: str, flow_id: str) -> bool:
        return await self._primary.delete(namespace, flow_id)


class _Triggers:
    def __init__(self, primary: TriggerStore, search: SearchStore) -> None:
        self._primary, self._search = primary, search

    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None:
        return await self._primary.get(namespace, flow_id, trigger_id)

    async def save(self, state: TriggerState) -> None:
        await self._primary.save(state)

    async def list(self, namespace: str | None = None) -> builtins.list[TriggerState]:
        return await self._search.triggers.list(namespace)

    async def delete(self, namespace: str, flow_id: str, trigger_id: str) -> bool:
        return await self._primary.delete(namespace, flow_id, trigger_id)


class _Logs:
    def __init__(self, primary: LogStore, search: SearchStore) -> None:
        self._primary, self._search = primary, search

    async def append(self, entries: Sequence[LogEntry]) -> None:
        await self._primary.append(entries)

    async def query(
        self,
        execution_id: str,
        *,
        task_run_id: str | None = None,
        min_level: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LogEntry]:
        # one execution's lines: the primary has them at once (read your writes) where
        # it can read them (Kafka reads the execution's partition)
        with contextlib.suppress(NotImplementedError):
            return await self._primary.query(
                execution_id,
                task_run_id=task_run_id,
                min_level=min_level,
                after_seq=after_seq,
                limit=limit,
            )
        return await self._search.logs.query(
            execution_id,
            task_run_id=task_run_id,
            min_level=min_level,
            after_seq=after_seq,
            limit=limit,
        )

    async def find(
        self, where: LogFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[LogEntry], int]:
        return await self._search.logs.find(where, limit=limit, offset=offset)

    async def delete(self, where: LogFilter) -> int:
        # the primary may keep no readable logs (Kafka: a topic); the index is what
        # the API shows
        with contextlib.suppress(NotImplementedError):
            await self._primary.delete(where)
        return await self._search.logs.delete(where)


class SearchBackend:
    """``primary`` with the search store in front of its reads that list or count."""

    def __init__(self, primary: Backend, search: SearchStore) -> None:
        self.primary = primary
        self.search = search
        self.name = primary.name
        self.executions = _Executions(primary.executions, search)
        self.flows = _Flows(primary.flows, search)
        self.triggers = _Triggers(primary.triggers, search)
        self.logs = _Logs(primary.logs, search)

    async def start(self) -> None:
        await self.primary.start()

    async def stop(self) -> None:
        try:
            await self.search.close()
        finally:
            await self.primary.stop()

    @property
    def queues(self) -> Queues:
        return self.primary.queues

    @property
    def kv(self) -> KVStore:
        return self.primary.kv

    @property
    def kills(self) -> KillStore:
        return self.primary.kills

    @property
    def services(self) -> ServiceRegistry:
        return self.primary.services

    @property
    def leader(self) -> LeaderLock:
        return self.primary.leader

    @property
    def clock(self) -> Clock:
        return self.primary.clock

    def transaction(self) -> AbstractAsyncContextManager[Stores]:
        return self.primary.transaction()

    def inbox(
        self,
        queue: str,
        consumer: str,
        *,
        lease_seconds: float,
        prefetch_executions: bool = False,
    ) -> Inbox:
        return self.primary.inbox(
            queue, consumer, lease_seconds=lease_seconds, prefetch_executions=prefetch_executions
        )

    def __getattr__(self, name: str) -> Any:
        # what a particular backend adds (statistics and the like) stays reachable
        return getattr(self.primary, name)
