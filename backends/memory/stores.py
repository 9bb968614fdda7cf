"""Executions, flows, triggers, KV entries, logs and kill requests, in memory.

Each store is a thin class over a Session; the operations are plain functions over a
View, so the same code runs autocommit and inside a transaction.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from backends.memory.data import FlowEntry, View
from backends.memory.session import Session
from backends.protocols import (
    DailyCount,
    ExecutionFilter,
    ExecutionSortField,
    FlowRecord,
    KVEntry,
    LogFilter,
    TriggerState,
)
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

#: states that hold one of the flow's concurrency slots: started and not ended
SLOT_STATES = frozenset(
    s for s in StateType if not s.terminated and s not in (StateType.CREATED, StateType.QUEUED)
)

#: log levels by severity; WARN and WARNING are the same level
LEVELS = {"TRACE": 0, "DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40}

#: sorts before every real start date (an execution without history has none)
_NEVER = datetime.min.replace(tzinfo=UTC)


def matches(execution: Execution, where: ExecutionFilter) -> bool:
    """Whether ``execution`` passes every condition of ``where``."""
    e = execution
    if where.namespace is not None and not (
        e.namespace == where.namespace or e.namespace.startswith(where.namespace + ".")
    ):
        return False
    if where.flow_id is not None and e.flow_id != where.flow_id:
        return False
    if where.states is not None and e.state.current not in where.states:
        return False
    start = e.state.start_date
    if where.started_after is not None and (start is None or start < where.started_after):
        return False
    if where.started_before is not None and (start is None or start >= where.started_before):
        return False
    if where.labels:
        have = {(label.get("key"), label.get("value")) for label in e.labels}
        if not all(pair in have for pair in where.labels):
            return False
    if where.query:
        needle = where.query.lower()
        if not any(needle in text.lower() for text in (e.id, e.namespace, e.flow_id)):
            return False
    return True


def sort_key(execution: Execution, field: ExecutionSortField) -> Any:
    """The value ``field`` sorts ``execution`` by (no date sorts as the earliest)."""
    if field == "start_date":
        return execution.state.start_date or _NEVER
    if field == "end_date":
        return execution.state.end_date or _NEVER
    if field == "state":
        return execution.state.current.name
    value: str = getattr(execution, field)
    return value


class MemoryExecutions:
    """The ExecutionStore protocol in memory."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(self, execution_id: str) -> Execution | None:
        return await self._session.read(lambda v: v.executions.get(execution_id))

    async def get_for_update(self, execution_id: str) -> Execution | None:
        """The execution; transactions run one at a time here, so it is locked already."""
        return await self._session.write(lambda v: v.executions.get(execution_id))

    async def save(self, execution: Execution) -> None:
        await self._session.write(lambda v: v.executions.set(execution.id, execution))

    async def delete(self, execution_id: str) -> bool:
        return await self._session.write(lambda v: v.executions.delete(execution_id))

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
        wanted = None if states is None else frozenset(states)

        def op(view: View) -> list[Execution]:
            found = [
                e
                for e in view.executions.values()
                if (namespace is None or e.namespace == namespace)
                and (flow_id is None or e.flow_id == flow_id)
                and (wanted is None or e.state.current in wanted)
            ]
            found.sort(key=lambda e: (e.state.start_date or _NEVER, e.id), reverse=True)
            return found[max(offset, 0) : max(offset, 0) + max(limit, 0)]

        return await self._session.read(op)

    async def find(
        self,
        where: ExecutionFilter,
        *,
        sort: ExecutionSortField = "start_date",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Execution], int]:
        def op(view: View) -> tuple[list[Execution], int]:
            found = [e for e in view.executions.values() if matches(e, where)]
            found.sort(key=lambda e: (sort_key(e, sort), e.id), reverse=descending)
            start = max(offset, 0)
            return found[start : start + max(limit, 0)], len(found)

        return await self._session.read(op)

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        def op(view: View) -> list[DailyCount]:
            counts: dict[tuple[Any, StateType], int] = {}
            for e in view.executions.values():
                if e.state.start_date is None or not matches(e, where):
                    continue
                day = e.state.start_date.astimezone(UTC).date()
                counts[day, e.state.current] = counts.get((day, e.state.current), 0) + 1
            return [
                DailyCount(day=day, state=state, count=n)
                for (day, state), n in sorted(counts.items(), key=lambda i: (i[0][0], i[0][1].name))
            ]

        return await self._session.read(op)

    async def count_running(self, namespace: str, flow_id: str) -> int:
        def op(view: View) -> int:
            return sum(
                1
                for e in view.executions.values()
                if e.namespace == namespace
                and e.flow_id == flow_id
                and e.state.current in SLOT_STATES
            )

        return await self._session.read(op)

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        def op(view: View) -> str | None:
            queued = [
                e
                for e in view.executions.values()
                if e.namespace == namespace
                and e.flow_id == flow_id
                and e.state.current is StateType.QUEUED
            ]
            if not queued:
                return None
            return min(queued, key=lambda e: (e.state.start_date or _NEVER, e.id)).id

        return await self._session.read(op)


def _seen(record: FlowRecord, entry: FlowEntry) -> FlowRecord:
    """A revision as callers see it: marked deleted when its flow is."""
    return msgspec.structs.replace(record, deleted=True) if entry.deleted else record


class MemoryFlows:
    """The FlowStore protocol in memory: every revision kept, deletion is a flag."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def deploy(self, namespace: str, flow_id: str, source: str) -> FlowRecord:
        def op(view: View) -> FlowRecord:
            entry = view.flows.get((namespace, flow_id)) or FlowEntry()
            latest = entry.revisions[-1] if entry.revisions else None
            if latest is not None and not entry.deleted and latest.source == source:
                return latest
            record = FlowRecord(
                namespace=namespace,
                id=flow_id,
                revision=1 if latest is None else latest.revision + 1,
                source=source,
                updated=view.clock(),
            )
            view.flows.set((namespace, flow_id), FlowEntry(revisions=(*entry.revisions, record)))
            return record

        return await self._session.write(op)

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        def op(view: View) -> FlowRecord | None:
            entry = view.flows.get((namespace, flow_id))
            if entry is None or not entry.revisions:
                return None
            if revision is None:
                return None if entry.deleted else entry.revisions[-1]
            for record in entry.revisions:
                if record.revision == revision:
                    return _seen(record, entry)
            return None

        return await self._session.read(op)

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        def op(view: View) -> builtins.list[FlowRecord]:
            latest = [
                entry.revisions[-1]
                for (ns, _), entry in view.flows.items()
                if entry.revisions and not entry.deleted and (namespace is None or ns == namespace)
            ]
            latest.sort(key=lambda r: (r.namespace, r.id))
            return latest

        return await self._session.read(op)

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]:
        def op(view: View) -> builtins.list[FlowRecord]:
            entry = view.flows.get((namespace, flow_id))
            return [] if entry is None else [_seen(r, entry) for r in entry.revisions]

        return await self._session.read(op)

    async def delete(self, namespace: str, flow_id: str) -> bool:
        def op(view: View) -> bool:
            entry = view.flows.get((namespace, flow_id))
            if entry is None or entry.deleted:
                return False
            view.flows.set((namespace, flow_id), msgspec.structs.replace(entry, deleted=True))
            return True

        return await self._session.write(op)


_trigger_encoder = msgspec.json.Encoder()
_trigger_decoder = msgspec.json.Decoder(TriggerState)


class MemoryTriggers:
    """The TriggerStore protocol in memory (states kept encoded, as a database would)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None:
        def op(view: View) -> TriggerState | None:
            raw = view.triggers.get((namespace, flow_id, trigger_id))
            return None if raw is None else _trigger_decoder.decode(raw)

        return await self._session.read(op)

    async def save(self, state: TriggerState) -> None:
        raw = _trigger_encoder.encode(state)
        key = (state.namespace, state.flow_id, state.trigger_id)
        await self._session.write(lambda v: v.triggers.set(key, raw))

    async def list(self, namespace: str | None = None) -> builtins.list[TriggerState]:
        def op(view: View) -> builtins.list[TriggerState]:
            return [
                _trigger_decoder.decode(raw)
                for key, raw in sorted(view.triggers.items())
                if namespace is None or key[0] == namespace
            ]

        return await self._session.read(op)

    async def delete(self, namespace: str, flow_id: str, trigger_id: str) -> bool:
        key = (namespace, flow_id, trigger_id)
        return await self._session.write(lambda v: v.triggers.delete(key))


_kv_encoder = msgspec.json.Encoder()
_kv_decoder = msgspec.json.Decoder(KVEntry)


def _live_kv(raw: bytes | None, now: datetime) -> KVEntry | None:
    if raw is None:
        return None
    entry = _kv_decoder.decode(raw)
    return None if entry.expires_at is not None and entry.expires_at <= now else entry


class MemoryKV:
    """The KVStore protocol in memory. Values are JSON (stored encoded, so a caller's dict
    is never shared); an expired entry is invisible, and dropped when next written."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(self, namespace: str, key: str) -> KVEntry | None:
        return await self._session.read(lambda v: _live_kv(v.kv.get((namespace, key)), v.clock()))

    async def set(
        self, namespace: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> KVEntry:
        def op(view: View) -> KVEntry:
            now = view.clock()
            entry = KVEntry(
                namespace=namespace,
                key=key,
                value=value,
                updated=now,
                expires_at=None if ttl_seconds is None else now + timedelta(seconds=ttl_seconds),
            )
            try:
                raw = _kv_encoder.encode(entry)
            except (TypeError, msgspec.EncodeError) as exc:
                raise TypeError(
                    f"KV value for {namespace}/{key} is not JSON-serialisable: {exc}"
                ) from exc
            view.kv.set((namespace, key), raw)
            return _kv_decoder.decode(raw)

        return await self._session.write(op)

    async def delete(self, namespace: str, key: str) -> bool:
        def op(view: View) -> bool:
            alive = _live_kv(view.kv.get((namespace, key)), view.clock()) is not None
            view.kv.delete((namespace, key))
            return alive

        return await self._session.write(op)

    async def list(self, namespace: str) -> builtins.list[KVEntry]:
        def op(view: View) -> builtins.list[KVEntry]:
            now = view.clock()
            entries = (_live_kv(raw, now) for (ns, _), raw in view.kv.items() if ns == namespace)
            return sorted((e for e in entries if e is not None), key=lambda e: e.key)

        return await self._session.read(op)


def level_rank(level: str) -> int:
    """Severity of a log level name; unknown levels of stored entries count as INFO."""
    return LEVELS.get(level.upper(), LEVELS["INFO"])


def level_floor(level: str | None) -> int | None:
    """The severity a ``min_level`` filter asks for (None: every entry); an unknown
    level is a ValueError naming the known ones."""
    if level is None:
        return None
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(sorted(LEVELS))}")
    return LEVELS[level.upper()]


class MemoryLogs:
    """The LogStore protocol in memory: one append-only list per execution."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def append(self, entries: Sequence[LogEntry]) -> None:
        def op(view: View) -> None:
            for entry in entries:
                seq = view.log_count(entry.execution_id) + 1
                view.stage_log(msgspec.structs.replace(entry, seq=seq))

        await self._session.write(op)

    async def query(
        self,
        execution_id: str,
        *,
        task_run_id: str | None = None,
        min_level: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LogEntry]:
        floor = level_floor(min_level)

        def op(view: View) -> list[LogEntry]:
            found: list[LogEntry] = []
            if limit <= 0:
                return found
            # seq n sits at index n - 1: entries are only ever appended
            for entry in view.log_entries(execution_id, start=max(after_seq, 0)):
                if task_run_id is not None and entry.task_run_id != task_run_id:
                    continue
                if floor is not None and level_rank(entry.level) < floor:
                    continue
                found.append(entry)
                if len(found) >= limit:
                    break
            return found

        return await self._session.read(op)

    async def find(
        self, where: LogFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[LogEntry], int]:
        keeps = log_matcher(where)

        def op(view: View) -> tuple[list[LogEntry], int]:
            found = _matching_logs(view, where, keeps)
            found.sort(key=lambda e: (e.timestamp, e.execution_id, e.seq), reverse=True)
            start = max(offset, 0)
            return found[start : start + max(limit, 0)], len(found)

        return await self._session.read(op)

    async def delete(self, where: LogFilter) -> int:
        keeps = log_matcher(where)

        def op(view: View) -> int:
            found = _matching_logs(view, where, keeps)
            for entry in found:
                view.delete_log(entry)
            return len(found)

        return await self._session.write(op)


def log_matcher(where: LogFilter) -> Callable[[LogEntry], bool]:
    """Whether an entry passes every condition of ``where`` (ValueError: unknown level)."""
    if where.min_level is not None and where.min_level.upper() not in LEVELS:
        raise ValueError(
            f"unknown log level {where.min_level!r}: use one of {', '.join(sorted(LEVELS))}"
        )
    floor = None if where.min_level is None else LEVELS[where.min_level.upper()]
    ranks = None
    if where.levels is not None:
        unknown = [name for name in where.levels if name.upper() not in LEVELS]
        if unknown:
            raise ValueError(
                f"unknown log level {unknown[0]!r}: use one of {', '.join(sorted(LEVELS))}"
            )
        ranks = {LEVELS[name.upper()] for name in where.levels}
    text = None if where.query is None else where.query.lower()
    ns = where.namespace

    def keeps(e: LogEntry) -> bool:
        return (
            (ns is None or e.namespace == ns or (where.below and e.namespace.startswith(ns + ".")))
            and (where.flow_id is None or e.flow_id == where.flow_id)
            and (where.task_id is None or e.task_id == where.task_id)
            and (where.task_run_id is None or e.task_run_id == where.task_run_id)
            and (where.attempt is None or e.attempt == where.attempt)
            and (floor is None or level_rank(e.level) >= floor)
            and (ranks is None or level_rank(e.level) in ranks)
            and (where.after is None or e.timestamp >= where.after)
            and (where.before is None or e.timestamp < where.before)
            and (text is None or text in e.message.lower())
        )

    return keeps


def _matching_logs(
    view: View, where: LogFilter, keeps: Callable[[LogEntry], bool]
) -> list[LogEntry]:
    ids = view.log_execution_ids() if where.execution_id is None else {where.execution_id}
    return [e for execution_id in ids for e in view.log_entries(execution_id) if keeps(e)]


class MemoryKills:
    """The KillStore protocol in memory: a set of task run ids."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def request(self, task_run_ids: Sequence[str]) -> None:
        def op(view: View) -> None:
            for task_run_id in task_run_ids:
                view.stage_kill(task_run_id, True)

        await self._session.write(op)

    async def requested(self, task_run_ids: Sequence[str]) -> set[str]:
        return await self._session.read(lambda v: {t for t in task_run_ids if v.kill_requested(t)})

    async def clear(self, task_run_ids: Sequence[str]) -> None:
        def op(view: View) -> None:
            for task_run_id in task_run_ids:
                view.stage_kill(task_run_id, False)

        await self._session.write(op)
