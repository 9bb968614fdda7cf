"""The SQLite stores: the shared SQL stores (``backends/sql/stores.py``) with what
SQLite does its own way: log lines and kill requests inserted as one op on the
database thread (numbered under the write lock), and the leader lock as a plain
lease row (one process: no session to die with)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta

from backends.sql.mapping import encode_json, log_row, to_micros
from backends.sql.stores import SqlExecutions, SqlFlows, SqlKills, SqlKV, SqlLogs, SqlTriggers
from backends.sqlite.connection import fetch
from backends.sqlite.queues import SqliteQueues
from backends.sqlite.session import Session
from runtime.messages import LogEntry


class SqliteLogs(SqlLogs):
    _s: Session

    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order."""
        if not entries:
            return
        entries = list(entries)
        execution_ids = encode_json(list(dict.fromkeys(entry.execution_id for entry in entries)))
        last_sql, insert_sql = self._q["log_last_seqs"], self._q["log_insert"]

        def op(connection: sqlite3.Connection) -> None:
            # Numbered on the database thread, under the write lock: no gaps, no twins.
            found = connection.execute(last_sql, (execution_ids,)).fetchall()
            last: dict[str, int] = {row[0]: int(row[1]) for row in found}
            rows = []
            for entry in entries:
                seq = last.get(entry.execution_id, 0) + 1
                last[entry.execution_id] = seq
                rows.append(log_row(entry, seq))
            connection.executemany(insert_sql, rows)

        await self._s.write_later(op)


class SqliteKills(SqlKills):
    _s: Session

    async def request(self, task_run_ids: Sequence[str]) -> None:
        if not task_run_ids:
            return
        now = to_micros(self._s.now())
        rows = [(task_run_id, now) for task_run_id in task_run_ids]
        sql = self._q["kill_request"]

        def op(connection: sqlite3.Connection) -> None:
            connection.executemany(sql, rows)

        await self._s.write_later(op)


class SqliteLeader:
    """A named lease: taken when free or expired, renewed by its holder."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lock; False while another holder's lease is alive."""
        now = self._s.now()
        expires = now + timedelta(seconds=ttl_seconds)
        params = (name, holder, to_micros(expires), to_micros(now))
        return bool(await self._s.write(fetch(self._q["leader_acquire"], params)))

    async def release(self, name: str, holder: str) -> None:
        await self._s.change_later(self._q["leader_release"], name, holder)


class SqliteStores:
    """The transactional stores, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.executions = SqlExecutions(session)
        self.queues = SqliteQueues(session)
        self.flows = SqlFlows(session)
        self.triggers = SqlTriggers(session)
        self.kv = SqlKV(session)
        self.logs = SqliteLogs(session)
        self.kills = SqliteKills(session)
