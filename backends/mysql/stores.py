"""The MySQL stores: the shared SQL stores (``backends/sql/stores.py``) with what MySQL
does its own way: a named lock serialising deploys of one flow, log lines numbered
through a counter row per execution, kill requests as one multi-row insert."""

from __future__ import annotations

from collections.abc import Sequence

from backends.errors import Transient
from backends.mysql.connection import lock_name, rows_placeholder
from backends.mysql.queues import MysqlQueues
from backends.mysql.session import Session, TxSession
from backends.sql.mapping import decode_execution, log_row, to_micros
from backends.sql.stores import (
    SqlExecutions,
    SqlFlows,
    SqlKills,
    SqlKV,
    SqlLogs,
    SqlSession,
    SqlTriggers,
)
from runtime.flow.execution import Execution
from runtime.messages import LogEntry


class MysqlExecutions(SqlExecutions):
    """get_for_update takes an execution the transaction's claim locked and read
    already (``claim(..., prefetch_executions=True)``) instead of reading it again."""

    async def get_for_update(self, execution_id: str) -> Execution | None:
        session = self._s
        if isinstance(session, TxSession) and execution_id in session.prefetched:
            data = session.prefetched.pop(execution_id)
            return None if data is None else decode_execution(data)
        return await super().get_for_update(execution_id)


class MysqlFlows(SqlFlows):
    async def lock_flow(self, tx: SqlSession, namespace: str, flow_id: str) -> None:
        # A new flow has no row to lock (and READ COMMITTED takes no gap locks): a named
        # lock, released when the transaction ends.
        assert isinstance(tx, TxSession)
        tx.holds_locks = True
        name = lock_name("flow", tx.core.database, namespace, flow_id)
        wait = tx.core.lock_wait_seconds
        [(got,)] = await tx.select(self._q["flow_lock"], name, wait)
        if got != 1:
            # deploying without it could race another deploy to the same revision
            raise Transient(
                f"MySQL at {tx.core.where}: another deploy of flow {namespace}.{flow_id} held"
                f" its lock for {wait:g} s; try again"
            )


class MysqlLogs(SqlLogs):
    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order: bump
        each execution's counter by its count (the row lock orders concurrent appends),
        read the counters back, insert the lines."""
        if not entries:
            return
        entries = list(entries)
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.execution_id] = counts.get(entry.execution_id, 0) + 1
        bumps = sorted(counts.items())
        q = self._q

        async def op(tx: SqlSession) -> None:
            bump = q["log_bump_seqs"].replace("{rows}", rows_placeholder(2, len(bumps)))
            await tx.change(bump, *(value for pair in bumps for value in pair))
            last_rows = await tx.select(q["log_last_seqs"], tuple(counts))
            # the first seq of this batch per execution
            next_seq = {str(row[0]): int(row[1]) - counts[str(row[0])] + 1 for row in last_rows}
            rows = []
            for entry in entries:
                seq = next_seq[entry.execution_id]
                next_seq[entry.execution_id] = seq + 1
                rows.append(log_row(entry, seq))
            insert = q["log_insert"].replace("{rows}", rows_placeholder(11, len(rows)))
            await tx.change_later(insert, *(value for row in rows for value in row))

        await self._s.atomically(op)


class MysqlKills(SqlKills):
    async def request(self, task_run_ids: Sequence[str]) -> None:
        if not task_run_ids:
            return
        now = to_micros(self._s.now())
        ids = list(dict.fromkeys(task_run_ids))
        sql = self._q["kill_request"].replace("{rows}", rows_placeholder(2, len(ids)))
        await self._s.change_later(
            sql, *(value for task_run_id in ids for value in (task_run_id, now))
        )


class MysqlStores:
    """The transactional stores, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.executions = MysqlExecutions(session)
        self.queues = MysqlQueues(session)
        self.flows = MysqlFlows(session)
        self.triggers = SqlTriggers(session)
        self.kv = SqlKV(session)
        self.logs = MysqlLogs(session)
        self.kills = MysqlKills(session)
