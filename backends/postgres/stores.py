"""The PostgreSQL stores other than queues and the leader lock: executions, flows, logs,
triggers, KV, kill requests and services. Each sends its statements through a
:class:`Session`, so the same code serves autocommit calls and ``transaction()``."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from backends.postgres.connection import lock_key32
from backends.postgres.queues import PostgresQueues
from backends.postgres.session import Conn, Record, Session
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
    encode_json_value,
    execution_row_binary,
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
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

_SLOT_STATES = [state.value for state in SLOT_STATES]
#: first half of the advisory lock a deploy takes on its flow
_FLOW_LOCK_CLASS = lock_key32("runtime.flows")


class PostgresSearch(search.SearchSyntax):
    """Execution searches in PostgreSQL's spelling: ``$n`` parameters, arrays for
    states and labels (``@>`` on the labels' GIN index), explicit NULLS FIRST/LAST."""

    nulls_sort_low = False

    def placeholder(self, n: int) -> str:
        return f"${n}"

    def state_in(self, states: Sequence[str], params: search.Params) -> str:
        return f"state = ANY({params.add(list(states))}::text[])"

    def has_labels(self, items: Sequence[str], params: search.Params) -> str:
        return f"labels @> {params.add(list(items))}::text[]"


_SEARCH = PostgresSearch()


class PostgresExecutions:
    """Executions as msgspec JSON, with the searched fields in indexed columns."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, execution_id: str) -> Execution | None:
        rows = await self._s.fetch(self._q["execution_get"], execution_id)
        return decode_execution(rows[0][0]) if rows else None

    async def get_for_update(self, execution_id: str) -> Execution | None:
        """In a transaction: the execution, its row locked (``FOR UPDATE``) until the
        transaction ends; another transaction asking for it waits until then."""
        rows = await self._s.write(self._q["execution_get_for_update"], execution_id)
        return decode_execution(rows[0][0]) if rows else None

    async def save(self, execution: Execution) -> None:
        """Insert or replace."""
        await self._s.write(self._q["execution_save"], *execution_row_binary(execution))

    async def delete(self, execution_id: str) -> bool:
        return bool(await self._s.write(self._q["execution_delete"], execution_id))

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
        wanted = None if states is None else [state.value for state in states]
        params: tuple[Any, ...] = (wanted, limit, max(offset, 0))
        if namespace is not None and flow_id is not None:
            query, params = "execution_search_flow", (*params, namespace, flow_id)
        elif namespace is not None:
            query, params = "execution_search_namespace", (*params, namespace)
        elif flow_id is not None:
            query, params = "execution_search_flow_only", (*params, flow_id)
        else:
            query = "execution_search"
        rows = await self._s.fetch(self._q[query], *params)
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

        async def op(connection: Conn) -> tuple[list[Record], int]:
            rows = await connection.fetch(page_sql, *page_params) if limit > 0 else []
            total = await connection.fetchval(count_sql, *count_params)
            return rows, int(total)

        rows, total = await self._s.on_connection(op)
        return [decode_execution(row[0]) for row in rows], total

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        """Executions matching ``where`` per UTC start day and current state."""
        sql, params = search.daily_counts_statement(where, _SEARCH)
        return search.daily_counts(await self._s.fetch(sql, *params))

    async def count_running(self, namespace: str, flow_id: str) -> int:
        """Executions of the flow that hold a concurrency slot (started, not ended)."""
        sql = self._q["execution_count_in_states"]
        rows = await self._s.fetch(sql, namespace, flow_id, _SLOT_STATES)
        return int(rows[0][0]) if rows else 0

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        """The id of the flow's oldest QUEUED execution."""
        sql = self._q["execution_oldest_in_state"]
        rows = await self._s.fetch(sql, namespace, flow_id, StateType.QUEUED.value)
        return str(rows[0][0]) if rows else None


class PostgresFlows:
    """Flow sources by revision; the latest revision is the highest number. Deletion
    is a flag of the flow: its revisions stay readable for the executions using them."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def deploy(self, namespace: str, flow_id: str, source: str) -> FlowRecord:
        """Store ``source`` as the next revision, unless it is the latest one already."""
        q = self._q
        updated = to_micros(self._s.now())

        async def op(connection: Conn) -> tuple[Any, ...]:
            # Serialise deploys of this flow; the next statement's snapshot sees the
            # revision a deploy that held the lock before us committed.
            await connection.execute(q["flow_lock"], _FLOW_LOCK_CLASS, namespace, flow_id)
            latest = await connection.fetchrow(q["flow_latest"], namespace, flow_id)
            if latest is not None and not latest[5] and latest[3] == source:
                return tuple(latest)
            if latest is not None and latest[5]:
                # Deploying a deleted flow brings it back, with every revision.
                await connection.execute(q["flow_set_deleted"], namespace, flow_id, False)
            revision = 1 if latest is None else int(latest[2]) + 1
            row = (namespace, flow_id, revision, source, updated, False)
            await connection.execute(q["flow_insert"], *row)
            return row

        return flow_record(await self._s.atomically(op))

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        """A revision, or the latest one; deleted flows only by explicit revision."""
        if revision is None:
            rows = await self._s.fetch(self._q["flow_latest"], namespace, flow_id)
            if rows and rows[0][5]:
                return None
        else:
            rows = await self._s.fetch(self._q["flow_revision"], namespace, flow_id, revision)
        return flow_record(rows[0]) if rows else None

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        """The latest revision of every flow not deleted, by namespace then id."""
        rows = await self._s.fetch(self._q["flow_list"], namespace)
        return [flow_record(row) for row in rows]

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]:
        rows = await self._s.fetch(self._q["flow_revisions"], namespace, flow_id)
        return [flow_record(row) for row in rows]

    async def delete(self, namespace: str, flow_id: str) -> bool:
        """Flag the flow deleted; False if it is missing or deleted already."""
        return bool(await self._s.write(self._q["flow_delete"], namespace, flow_id))


class PostgresLogs:
    """Log lines, numbered per execution in arrival order (see ``log_append``)."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order."""
        if not entries:
            return
        rows = [log_row(entry, 0) for entry in entries]
        # one array per column, without the seq the statement computes
        columns = [list(column) for column in zip(*rows, strict=True)]
        del columns[1]
        await self._s.write(self._q["log_append"], *columns)

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
        rows = await self._s.fetch(self._q["log_query"], *params)
        return [log_entry(row) for row in rows]


def _trigger_params(state: TriggerState) -> tuple[Any, ...]:
    row = trigger_row(state)
    return (*row[:5], bool(row[5]), *row[6:])  # ``disabled`` is a BOOLEAN here


class PostgresTriggers:
    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None:
        rows = await self._s.fetch(self._q["trigger_get"], namespace, flow_id, trigger_id)
        return trigger_state(rows[0]) if rows else None

    async def save(self, state: TriggerState) -> None:
        await self._s.write(self._q["trigger_save"], *_trigger_params(state))

    async def list(self, namespace: str | None = None) -> builtins.list[TriggerState]:
        rows = await self._s.fetch(self._q["trigger_list"], namespace)
        return [trigger_state(row) for row in rows]

    async def delete(self, namespace: str, flow_id: str, trigger_id: str) -> bool:
        sql = self._q["trigger_delete"]
        return bool(await self._s.write(sql, namespace, flow_id, trigger_id))


class PostgresKV:
    """Namespace key/values, JSON-encoded; an expired entry reads as missing."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def get(self, namespace: str, key: str) -> KVEntry | None:
        now = to_micros(self._s.now())
        rows = await self._s.fetch(self._q["kv_get"], namespace, key, now)
        return kv_entry(rows[0]) if rows else None

    async def set(
        self, namespace: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> KVEntry:
        now = self._s.now()
        expires = None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds)
        value_json = encode_json_value(value, f"KV value for {namespace}/{key}")
        row = (namespace, key, value_json, to_micros(now), opt_micros(expires))
        await self._s.write(self._q["kv_set"], *row)
        return kv_entry(row)

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the entry; True if it was there and alive."""
        now = to_micros(self._s.now())
        rows = await self._s.write(self._q["kv_delete"], namespace, key, now)
        return bool(rows and rows[0][0])

    async def list(self, namespace: str) -> builtins.list[KVEntry]:
        """Entries not expired, by key."""
        now = to_micros(self._s.now())
        rows = await self._s.fetch(self._q["kv_list"], namespace, now)
        return [kv_entry(row) for row in rows]


class PostgresKills:
    """Kill requests for task runs, read by every worker."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def request(self, task_run_ids: Sequence[str]) -> None:
        if task_run_ids:
            now = to_micros(self._s.now())
            await self._s.write(self._q["kill_request"], list(task_run_ids), now)

    async def requested(self, task_run_ids: Sequence[str]) -> set[str]:
        """Which of ``task_run_ids`` have a kill request."""
        if not task_run_ids:
            return set()
        rows = await self._s.fetch(self._q["kill_requested"], list(task_run_ids))
        return {row[0] for row in rows}

    async def clear(self, task_run_ids: Sequence[str]) -> None:
        if task_run_ids:
            await self._s.write(self._q["kill_clear"], list(task_run_ids))


class PostgresServices:
    """The service registry: one row per running component, refreshed by heartbeats."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._q = session.queries

    async def heartbeat(self, instance: ServiceInstance) -> None:
        """Insert or refresh."""
        await self._s.write(self._q["service_heartbeat"], *service_row(instance))

    async def list(self) -> list[ServiceInstance]:
        rows: list[Record] = await self._s.fetch(self._q["service_list"])
        return [service_instance(row[0]) for row in rows]

    async def remove(self, instance_id: str) -> None:
        await self._s.write(self._q["service_remove"], instance_id)


class PostgresStores:
    """The transactional stores, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.executions = PostgresExecutions(session)
        self.queues = PostgresQueues(session)
        self.flows = PostgresFlows(session)
        self.triggers = PostgresTriggers(session)
        self.kv = PostgresKV(session)
        self.logs = PostgresLogs(session)
        self.kills = PostgresKills(session)
