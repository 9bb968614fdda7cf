"""The SQLite stores other than queues: executions, flows, logs, triggers, KV, kill
requests, services and the leader lock. Each hands ops to a :class:`Session`, so the
same code serves autocommit calls and ``transaction()``."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from backends.protocols import (
    DailyCount,
    ExecutionFilter,
    ExecutionSortField,
    FlowRecord,
    KVEntry,
    ServiceInstance,
    TriggerState,
)
from backends.sql import search
from backends.sql.mapping import (
    SLOT_STATES,
    decode_execution,
    encode_json,
    encode_json_value,
    execution_row,
    flow_record,
    kv_entry,
    log_entry,
    log_row,
    min_level_number,
    opt_micros,
    service_instance,
    service_row,
    to_micros,
    trigger_row,
    trigger_state,
)
from backends.sqlite.connection import Row, execute, fetch
from backends.sqlite.queues import SqliteQueues
from backends.sqlite.session import Session
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

_SLOT_STATES_JSON = encode_json([state.value for state in SLOT_STATES])


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


class SqliteSearch(search.SearchSyntax):
    """Execution searches in SQLite's spelling: numbered ``?NNN`` parameters, labels
    as a JSON array read with json_each."""

    def placeholder(self, n: int) -> str:
        return f"?{n}"

    def has_labels(self, items: Sequence[str], params: search.Params) -> str:
        return " AND ".join(
            f"EXISTS (SELECT 1 FROM json_each(labels) WHERE value = {params.add(item)})"
            for item in items
        )


_SEARCH = SqliteSearch()


class SqliteExecutions:
    """Executions as msgspec JSON, with the searched fields in indexed columns."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, execution_id: str) -> Execution | None:
        rows = await self._s.read(fetch(self._q["execution_get"], (execution_id,)))
        return decode_execution(rows[0][0]) if rows else None

    async def get_for_update(self, execution_id: str) -> Execution | None:
        """In a transaction: the execution; ``BEGIN IMMEDIATE`` already holds the
        database's write lock, so nobody can change it before the commit."""
        return await self.get(execution_id)

    async def save(self, execution: Execution) -> None:
        """Insert or replace."""
        await self._s.write_later(execute(self._q["execution_save"], execution_row(execution)))

    async def delete(self, execution_id: str) -> bool:
        rows = await self._s.write(fetch(self._q["execution_delete"], (execution_id,)))
        return bool(rows)

    async def search(
        self,
        *,
        namespace: str | None = None,
        flow_id: str | None = None,
        states: Sequence[StateType] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Execution]:
        """Newest first (by start date, then id)."""
        if limit <= 0:
            return []
        wanted = None if states is None else encode_json([state.value for state in states])
        params = (namespace, flow_id, wanted, limit, max(offset, 0))
        if namespace is None:
            query = "execution_search"
        elif flow_id is None:
            query = "execution_search_namespace"
        else:
            query = "execution_search_flow"
        rows = await self._s.read(fetch(self._q[query], params))
        return [decode_execution(row[0]) for row in rows]

    async def find(
        self,
        where: ExecutionFilter,
        *,
        sort: ExecutionSortField = "start_date",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Execution], int]:
        """One page of the executions matching ``where``, and how many match in all."""
        (page_sql, page_params), (count_sql, count_params) = search.find_statements(
            where, _SEARCH, sort=sort, descending=descending, limit=limit, offset=offset
        )

        def op(connection: sqlite3.Connection) -> tuple[list[Row], int]:
            rows = connection.execute(page_sql, page_params).fetchall() if limit > 0 else []
            total = connection.execute(count_sql, count_params).fetchone()
            return rows, int(total[0])

        rows, total = await self._s.read(op)
        return [decode_execution(row[0]) for row in rows], total

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        """Executions matching ``where`` per UTC start day and current state."""
        sql, params = search.daily_counts_statement(where, _SEARCH)
        return search.daily_counts(await self._s.read(fetch(sql, params)))

    async def count_running(self, namespace: str, flow_id: str) -> int:
        """Executions of the flow that hold a concurrency slot (started, not ended)."""
        params = (namespace, flow_id, _SLOT_STATES_JSON)
        rows = await self._s.read(fetch(self._q["execution_count_in_states"], params))
        return int(rows[0][0]) if rows else 0

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        """The id of the flow's oldest QUEUED execution."""
        params = (namespace, flow_id, StateType.QUEUED.value)
        rows = await self._s.read(fetch(self._q["execution_oldest_in_state"], params))
        return str(rows[0][0]) if rows else None


class SqliteFlows:
    """Flow sources by revision; the latest revision is the highest number. Deletion
    is a flag of the flow: its revisions stay readable for the executions using them."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def deploy(self, namespace: str, flow_id: str, source: str) -> FlowRecord:
        """Store ``source`` as the next revision, unless it is the latest one already."""
        latest_sql, undelete_sql = self._q["flow_latest"], self._q["flow_set_deleted"]
        insert_sql, updated = self._q["flow_insert"], to_micros(self._s.now())

        def op(connection: sqlite3.Connection) -> Row:
            latest = connection.execute(latest_sql, (namespace, flow_id)).fetchone()
            if latest is not None and not latest[5] and latest[3] == source:
                return tuple(latest)
            if latest is not None and latest[5]:
                # Deploying a deleted flow brings it back, with every revision.
                connection.execute(undelete_sql, (namespace, flow_id, 0))
            revision = 1 if latest is None else int(latest[2]) + 1
            row = (namespace, flow_id, revision, source, updated, 0)
            connection.execute(insert_sql, row)
            return row

        return flow_record(await self._s.write(op))

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        """A revision, or the latest one; deleted flows only by explicit revision."""
        if revision is None:
            row = _first(await self._s.read(fetch(self._q["flow_latest"], (namespace, flow_id))))
            if row is not None and row[5]:
                return None
        else:
            params = (namespace, flow_id, revision)
            row = _first(await self._s.read(fetch(self._q["flow_revision"], params)))
        return None if row is None else flow_record(row)

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        """The latest revision of every flow not deleted, by namespace then id."""
        rows = await self._s.read(fetch(self._q["flow_list"], (namespace,)))
        return [flow_record(row) for row in rows]

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]:
        rows = await self._s.read(fetch(self._q["flow_revisions"], (namespace, flow_id)))
        return [flow_record(row) for row in rows]

    async def delete(self, namespace: str, flow_id: str) -> bool:
        """Flag the flow deleted; False if it is missing or deleted already."""
        params = (namespace, flow_id, 1)
        return await self._s.write(execute(self._q["flow_set_deleted"], params)) > 0


class SqliteLogs:
    """Log lines, numbered per execution in arrival order."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

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

    async def query(
        self,
        execution_id: str,
        *,
        task_run_id: str | None = None,
        min_level: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LogEntry]:
        """Entries with ``seq`` > ``after_seq``, in order."""
        level = min_level_number(min_level)
        if limit <= 0:
            return []
        params = (execution_id, max(after_seq, 0), task_run_id, level, limit)
        rows = await self._s.read(fetch(self._q["log_query"], params))
        return [log_entry(row) for row in rows]


class SqliteTriggers:
    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None:
        params = (namespace, flow_id, trigger_id)
        row = _first(await self._s.read(fetch(self._q["trigger_get"], params)))
        return None if row is None else trigger_state(row)

    async def save(self, state: TriggerState) -> None:
        await self._s.write_later(execute(self._q["trigger_save"], trigger_row(state)))

    async def list(self, namespace: str | None = None) -> builtins.list[TriggerState]:
        rows = await self._s.read(fetch(self._q["trigger_list"], (namespace,)))
        return [trigger_state(row) for row in rows]

    async def delete(self, namespace: str, flow_id: str, trigger_id: str) -> bool:
        params = (namespace, flow_id, trigger_id)
        return bool(await self._s.write(fetch(self._q["trigger_delete"], params)))


class SqliteKV:
    """Namespace key/values, JSON-encoded; an expired entry reads as missing."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, namespace: str, key: str) -> KVEntry | None:
        params = (namespace, key, to_micros(self._s.now()))
        row = _first(await self._s.read(fetch(self._q["kv_get"], params)))
        return None if row is None else kv_entry(row)

    async def set(
        self, namespace: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> KVEntry:
        now = self._s.now()
        expires = None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)
        value_json = encode_json_value(value, f"KV value for {namespace}/{key}")
        row = (namespace, key, value_json, to_micros(now), opt_micros(expires))
        await self._s.write_later(execute(self._q["kv_set"], row))
        return kv_entry(row)

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the entry; True if it was there and alive."""
        now = to_micros(self._s.now())
        rows = await self._s.write(fetch(self._q["kv_delete"], (namespace, key)))
        return bool(rows) and (rows[0][0] is None or rows[0][0] > now)

    async def list(self, namespace: str) -> builtins.list[KVEntry]:
        """Entries not expired, by key."""
        params = (namespace, to_micros(self._s.now()))
        rows = await self._s.read(fetch(self._q["kv_list"], params))
        return [kv_entry(row) for row in rows]


class SqliteKills:
    """Kill requests for task runs, read by every worker."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def request(self, task_run_ids: Sequence[str]) -> None:
        if not task_run_ids:
            return
        now = to_micros(self._s.now())
        rows = [(task_run_id, now) for task_run_id in task_run_ids]
        sql = self._q["kill_request"]

        def op(connection: sqlite3.Connection) -> None:
            connection.executemany(sql, rows)

        await self._s.write_later(op)

    async def requested(self, task_run_ids: Sequence[str]) -> set[str]:
        """Which of ``task_run_ids`` have a kill request."""
        if not task_run_ids:
            return set()
        params = (encode_json(list(task_run_ids)),)
        rows = await self._s.read(fetch(self._q["kill_requested"], params))
        return {row[0] for row in rows}

    async def clear(self, task_run_ids: Sequence[str]) -> None:
        if not task_run_ids:
            return
        params = (encode_json(list(task_run_ids)),)
        await self._s.write_later(execute(self._q["kill_clear"], params))


class SqliteServices:
    """The service registry: one row per running component, refreshed by heartbeats."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def heartbeat(self, instance: ServiceInstance) -> None:
        """Insert or refresh."""
        await self._s.write_later(execute(self._q["service_heartbeat"], service_row(instance)))

    async def list(self) -> list[ServiceInstance]:
        rows = await self._s.read(fetch(self._q["service_list"]))
        return [service_instance(row[0]) for row in rows]

    async def remove(self, instance_id: str) -> None:
        await self._s.write_later(execute(self._q["service_remove"], (instance_id,)))


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
        await self._s.write_later(execute(self._q["leader_release"], (name, holder)))


class SqliteStores:
    """The transactional stores, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.executions = SqliteExecutions(session)
        self.queues = SqliteQueues(session)
        self.flows = SqliteFlows(session)
        self.triggers = SqliteTriggers(session)
        self.kv = SqliteKV(session)
        self.logs = SqliteLogs(session)
        self.kills = SqliteKills(session)
