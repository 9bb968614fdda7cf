"""The stores every SQL dialect shares: executions, flows, logs, triggers, KV, kill
requests and services, over a :class:`SqlSession`.

A session is where statements go: into an open transaction, or into short
transactions of their own (a backend's autocommit attributes). The stores never see a
driver: they pick a named statement, bind values the dialect typed, and read rows back
as tuples. A dialect subclasses a store only where its SQL cannot say the same thing
the same way (how a deploy serialises, how log lines get numbered, how a batch of kill
requests goes in).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from backends.protocols import (
    DailyCount,
    ExecutionFilter,
    ExecutionSortField,
    FlowRecord,
    KVEntry,
    LogFilter,
    ServiceInstance,
    TriggerState,
)
from backends.sql import log_search, search
from backends.sql.dialect import Dialect
from backends.sql.mapping import (
    SLOT_STATES,
    decode_execution,
    encode_json_value,
    flow_record,
    kv_entry,
    log_entry,
    min_level_number,
    opt_micros,
    service_instance,
    service_row,
    to_micros,
    trigger_row,
    trigger_state,
)
from backends.sql.queries import Queries
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

T = TypeVar("T")
Row = Sequence[Any]


class SqlSession(Protocol):
    """What the shared stores need from a dialect's session."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def queries(self) -> Queries: ...

    def now(self) -> datetime: ...

    async def select(self, sql: str, *args: Any) -> list[Any]:
        """The rows of a read (in the transaction, or on a committed snapshot)."""
        ...

    async def change(self, sql: str, *args: Any) -> int:
        """Run a write now; how many rows it changed."""
        ...

    async def change_later(self, sql: str, *args: Any) -> None:
        """Run a blind write: now, or (SQLite) with the transaction's next statement. Its
        error surfaces there at the latest, and rolls the transaction back."""
        ...

    async def atomically(self, op: Callable[[SqlSession], Awaitable[T]]) -> T:
        """Run ``op`` on a session bound to one transaction (this one, if it is)."""
        ...


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


class SqlExecutions:
    """Executions as msgspec JSON, with the searched fields in indexed columns."""

    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries
        self._d = session.dialect
        self._slot_states = self._d.list_param([state.value for state in SLOT_STATES])

    async def get(self, execution_id: str) -> Execution | None:
        rows = await self._s.select(self._q["execution_get"], execution_id)
        return decode_execution(rows[0][0]) if rows else None

    async def get_for_update(self, execution_id: str) -> Execution | None:
        """In a transaction: the execution, locked until the transaction ends (a row
        lock; on SQLite the transaction holds the database's write lock already)."""
        rows = await self._s.select(self._q["execution_get_for_update"], execution_id)
        return decode_execution(rows[0][0]) if rows else None

    async def save(self, execution: Execution) -> None:
        """Insert or replace."""
        params = self._d.execution_params(execution)
        await self._s.change_later(self._q["execution_save"], *params)

    async def delete(self, execution_id: str) -> bool:
        return await self._s.change(self._q["execution_delete"], execution_id) > 0

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
        sql, params = search.search_statement(
            self._d, namespace=namespace, flow_id=flow_id, states=states, limit=limit, offset=offset
        )
        return [decode_execution(row[0]) for row in await self._s.select(sql, *params)]

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
            where, self._d, sort=sort, descending=descending, limit=limit, offset=offset
        )

        # two reads, not one transaction: an autocommit search must not take SQLite's
        # write lock, and a page a moment older than its total is harmless
        rows = await self._s.select(page_sql, *page_params) if limit > 0 else []
        total = await self._s.select(count_sql, *count_params)
        return [decode_execution(row[0]) for row in rows], int(total[0][0])

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        """Executions matching ``where`` per UTC start day and current state."""
        sql, params = search.daily_counts_statement(where, self._d)
        return search.daily_counts(await self._s.select(sql, *params))

    async def count_running(self, namespace: str, flow_id: str) -> int:
        """Executions of the flow that hold a concurrency slot (started, not ended)."""
        sql = self._q["execution_count_in_states"]
        rows = await self._s.select(sql, namespace, flow_id, self._slot_states)
        return int(rows[0][0]) if rows else 0

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        """The id of the flow's oldest QUEUED execution."""
        sql = self._q["execution_oldest_in_state"]
        rows = await self._s.select(sql, namespace, flow_id, StateType.QUEUED.value)
        return str(rows[0][0]) if rows else None


class SqlFlows:
    """Flow sources by revision; the latest revision is the highest number. Deletion
    is a flag of the flow: its revisions stay readable for the executions using them."""

    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries

    async def lock_flow(self, tx: SqlSession, namespace: str, flow_id: str) -> None:
        """Serialise deploys of one flow inside ``tx`` (nothing to do where the
        transaction holds the database's write lock)."""

    async def deploy(self, namespace: str, flow_id: str, source: str) -> FlowRecord:
        """Store ``source`` as the next revision, unless it is the latest one already."""
        q = self._q
        updated = to_micros(self._s.now())

        async def op(tx: SqlSession) -> Row:
            await self.lock_flow(tx, namespace, flow_id)
            latest = _first(await tx.select(q["flow_latest"], namespace, flow_id))
            if latest is not None and not latest[5] and latest[3] == source:
                return tuple(latest)
            if latest is not None and latest[5]:
                # Deploying a deleted flow brings it back, with every revision.
                await tx.change(q["flow_set_deleted"], False, namespace, flow_id, False)
            revision = 1 if latest is None else int(latest[2]) + 1
            row = (namespace, flow_id, revision, source, updated, False)
            await tx.change(q["flow_insert"], *row)
            return row

        return flow_record(await self._s.atomically(op))

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        """A revision, or the latest one; deleted flows only by explicit revision."""
        if revision is None:
            row = _first(await self._s.select(self._q["flow_latest"], namespace, flow_id))
            if row is not None and row[5]:
                return None
        else:
            sql = self._q["flow_revision"]
            row = _first(await self._s.select(sql, namespace, flow_id, revision))
        return None if row is None else flow_record(row)

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        """The latest revision of every flow not deleted, by namespace then id."""
        if namespace is None:
            rows = await self._s.select(self._q["flow_list"])
        else:
            rows = await self._s.select(self._q["flow_list_namespace"], namespace)
        return [flow_record(row) for row in rows]

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]:
        rows = await self._s.select(self._q["flow_revisions"], namespace, flow_id)
        return [flow_record(row) for row in rows]

    async def delete(self, namespace: str, flow_id: str) -> bool:
        """Flag the flow deleted; False if it is missing or deleted already."""
        sql = self._q["flow_set_deleted"]
        return await self._s.change(sql, True, namespace, flow_id, True) > 0


class SqlLogs:
    """Log lines, numbered per execution in arrival order; each dialect numbers them
    its own way (``append``)."""

    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries

    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order."""
        raise NotImplementedError

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
        after = max(after_seq, 0)
        if task_run_id is None:
            rows = await self._s.select(self._q["log_query"], execution_id, after, level, limit)
        else:
            sql = self._q["log_query_task"]
            rows = await self._s.select(sql, execution_id, after, task_run_id, level, limit)
        return [log_entry(row) for row in rows]

    async def find(
        self, where: LogFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[LogEntry], int]:
        """One page of the matching entries over every execution, newest first, and
        how many match in all."""
        (page_sql, page_params), (count_sql, count_params) = log_search.find_statements(
            where, self._s.dialect, limit=limit, offset=offset
        )
        # two reads, as an execution search: a total a moment newer than its page is
        # harmless, and an autocommit read must not take SQLite's write lock
        rows = await self._s.select(page_sql, *page_params) if limit > 0 else []
        total = await self._s.select(count_sql, *count_params)
        return [log_entry(row) for row in rows], int(total[0][0])

    async def delete(self, where: LogFilter) -> int:
        """Remove the matching entries. Their numbers are not given out again on
        PostgreSQL and MySQL (``log_seqs`` keeps counting); SQLite numbers from the
        highest ``seq`` left, so deleting an execution's latest entries while it
        still logs reuses their numbers."""
        sql, params = log_search.delete_statement(where, self._s.dialect)
        return await self._s.change(sql, *params)


class SqlTriggers:
    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None:
        sql = self._q["trigger_get"]
        row = _first(await self._s.select(sql, namespace, flow_id, trigger_id))
        return None if row is None else trigger_state(row)

    async def save(self, state: TriggerState) -> None:
        await self._s.change_later(self._q["trigger_save"], *trigger_row(state))

    async def list(self, namespace: str | None = None) -> builtins.list[TriggerState]:
        if namespace is None:
            rows = await self._s.select(self._q["trigger_list"])
        else:
            rows = await self._s.select(self._q["trigger_list_namespace"], namespace)
        return [trigger_state(row) for row in rows]

    async def delete(self, namespace: str, flow_id: str, trigger_id: str) -> bool:
        sql = self._q["trigger_delete"]
        return await self._s.change(sql, namespace, flow_id, trigger_id) > 0


class SqlKV:
    """Namespace key/values, JSON-encoded; an expired entry reads as missing."""

    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, namespace: str, key: str) -> KVEntry | None:
        now = to_micros(self._s.now())
        row = _first(await self._s.select(self._q["kv_get"], namespace, key, now))
        return None if row is None else kv_entry(row)

    async def set(
        self, namespace: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> KVEntry:
        now = self._s.now()
        expires = None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)
        value_json = encode_json_value(value, f"KV value for {namespace}/{key}")
        row = (namespace, key, value_json, to_micros(now), opt_micros(expires))
        await self._s.change_later(self._q["kv_set"], *row)
        return kv_entry(row)

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the entry; True if it was there and alive."""
        now = to_micros(self._s.now())
        alive = await self._s.change(self._q["kv_delete_alive"], namespace, key, now)
        # an expired entry, if any, goes too (whether it did changes nothing reported)
        await self._s.change_later(self._q["kv_delete"], namespace, key)
        return alive > 0

    async def list(self, namespace: str) -> builtins.list[KVEntry]:
        """Entries not expired, by key."""
        now = to_micros(self._s.now())
        rows = await self._s.select(self._q["kv_list"], namespace, now)
        return [kv_entry(row) for row in rows]


class SqlKills:
    """Kill requests for task runs, read by every worker; a dialect inserts a batch of
    requests its own way (``request``)."""

    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries
        self._d = session.dialect

    async def request(self, task_run_ids: Sequence[str]) -> None:
        raise NotImplementedError

    async def requested(self, task_run_ids: Sequence[str]) -> set[str]:
        """Which of ``task_run_ids`` have a kill request."""
        if not task_run_ids:
            return set()
        ids = self._d.list_param(task_run_ids)
        return {row[0] for row in await self._s.select(self._q["kill_requested"], ids)}

    async def clear(self, task_run_ids: Sequence[str]) -> None:
        if task_run_ids:
            await self._s.change_later(self._q["kill_clear"], self._d.list_param(task_run_ids))


class SqlServices:
    """The service registry: one row per running component, refreshed by heartbeats."""

    def __init__(self, session: SqlSession) -> None:
        self._s = session
        self._q = session.queries

    async def heartbeat(self, instance: ServiceInstance) -> None:
        """Insert or refresh."""
        await self._s.change_later(self._q["service_heartbeat"], *service_row(instance))

    async def list(self) -> list[ServiceInstance]:
        rows = await self._s.select(self._q["service_list"])
        return [service_instance(row[0]) for row in rows]

    async def remove(self, instance_id: str) -> None:
        await self._s.change_later(self._q["service_remove"], instance_id)
