"""The PostgreSQL stores: the shared SQL stores (``backends/sql/stores.py``) with what
PostgreSQL does its own way: an advisory lock serialising deploys of one flow, log
lines numbered by one array statement, kill requests inserted from an array."""

from __future__ import annotations

from collections.abc import Sequence

from backends.postgres.connection import lock_key32
from backends.postgres.queues import PostgresQueues
from backends.postgres.session import Session
from backends.sql.mapping import log_row, to_micros
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
from runtime.messages import LogEntry

#: first half of the advisory lock a deploy takes on its flow
_FLOW_LOCK_CLASS = lock_key32("runtime.flows")


class PostgresFlows(SqlFlows):
    async def lock_flow(self, tx: SqlSession, namespace: str, flow_id: str) -> None:
        # A new flow has no row to lock yet; the next statement's snapshot sees the
        # revision a deploy that held the lock before us committed.
        await tx.select(self._q["flow_lock"], _FLOW_LOCK_CLASS, namespace, flow_id)


class PostgresLogs(SqlLogs):
    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order (one
        statement: see ``log_append``)."""
        if not entries:
            return
        rows = [log_row(entry, 0) for entry in entries]
        # one array per column, without the seq the statement computes
        columns = [list(column) for column in zip(*rows, strict=True)]
        del columns[1]
        await self._s.change_later(self._q["log_append"], *columns)


class PostgresKills(SqlKills):
    async def request(self, task_run_ids: Sequence[str]) -> None:
        if task_run_ids:
            now = to_micros(self._s.now())
            await self._s.change_later(self._q["kill_request"], list(task_run_ids), now)


class PostgresStores:
    """The transactional stores, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.executions = SqlExecutions(session)
        self.queues = PostgresQueues(session)
        self.flows = PostgresFlows(session)
        self.triggers = SqlTriggers(session)
        self.kv = SqlKV(session)
        self.logs = PostgresLogs(session)
        self.kills = PostgresKills(session)


__all__ = ["PostgresFlows", "PostgresKills", "PostgresLogs", "PostgresStores", "SqlServices"]
