"""The PostgreSQL stores: the shared SQL stores (``backends/sql/stores.py``) with what
PostgreSQL does its own way: an advisory lock serialising deploys of one flow, log
lines numbered by one array statement, kill requests inserted from an array."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from backends.postgres.connection import lock_key32
from backends.postgres.queues import PostgresQueues
from backends.postgres.session import Session
from backends.protocols import FlowRecord
from backends.sql.mapping import decode_execution, flow_record, log_row, to_micros
from backends.sql.stores import (
    SqlExecutions,
    SqlFlows,
    SqlKills,
    SqlKV,
    SqlLogs,
    SqlServices,
    SqlSession,
    SqlTriggers,
)
from runtime.flow.execution import Execution
from runtime.messages import LogEntry

#: first half of the advisory lock a deploy takes on its flow
_FLOW_LOCK_CLASS = lock_key32("runtime.flows")


class PostgresExecutions(SqlExecutions):
    """Saves wait for the transaction's next statement or its commit (one statement
    with its other deferred writes); an execution its claim locked is not read again."""

    _s: Session

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._s = session

    async def get_for_update(self, execution_id: str) -> Execution | None:
        cache = self._s.prefetched
        if cache is not None and execution_id in cache:
            data = cache.pop(execution_id)  # locked by this transaction's claim
            return None if data is None else decode_execution(data)
        return await super().get_for_update(execution_id)

    async def save(self, execution: Execution) -> None:
        row = tuple(self._d.execution_params(execution))
        if self._s.prefetched is not None:
            self._s.prefetched.pop(execution.id, None)  # no longer what is stored
        await self._s.defer(lambda deferred: deferred.save(execution.id, row))

    async def delete(self, execution_id: str) -> bool:
        if self._s.prefetched is not None:
            self._s.prefetched.pop(execution_id, None)
        return await super().delete(execution_id)


class PostgresFlows(SqlFlows):
    _s: Session

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        """As the shared one; in a transaction, without first sending its deferred
        writes (they never touch flows): an executor's batch in which an execution
        ends lists the flows with Flow triggers."""
        if namespace is None:
            rows = await self._s.select_unwritten(self._q["flow_list"])
        else:
            rows = await self._s.select_unwritten(self._q["flow_list_namespace"], namespace)
        return [flow_record(row) for row in rows]

    async def lock_flow(self, tx: SqlSession, namespace: str, flow_id: str) -> None:
        # A new flow has no row to lock yet; the next statement's snapshot sees the
        # revision a deploy that held the lock before us committed.
        await tx.select(self._q["flow_lock"], _FLOW_LOCK_CLASS, namespace, flow_id)


class PostgresLogs(SqlLogs):
    _s: Session

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._s = session

    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order
        (with the transaction's other deferred writes: see ``deferred.LOG_CTES``)."""
        if not entries:
            return
        rows = [log_row(entry, 0) for entry in entries]
        # one array per column, without the seq the statement computes
        columns = [list(column) for column in zip(*rows, strict=True)]
        del columns[1]
        await self._s.defer(lambda deferred: deferred.log(columns))


class PostgresKills(SqlKills):
    async def request(self, task_run_ids: Sequence[str]) -> None:
        if task_run_ids:
            now = to_micros(self._s.now())
            await self._s.change_later(self._q["kill_request"], list(task_run_ids), now)


class PostgresStores:
    """The transactional stores, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.executions = PostgresExecutions(session)
        self.queues = PostgresQueues(session)
        self.flows = PostgresFlows(session)
        self.triggers = SqlTriggers(session)
        self.kv = SqlKV(session)
        self.logs = PostgresLogs(session)
        self.kills = PostgresKills(session)


__all__ = [
    "PostgresExecutions",
    "PostgresFlows",
    "PostgresKills",
    "PostgresLogs",
    "PostgresStores",
    "SqlServices",
]
