"""Rows <-> the protocol's records, the same for every SQL dialect.

Conventions of the SQL schemas:

- instants are BIGINT microseconds since the Unix epoch, UTC: portable, indexable,
  and free of MySQL's session time zone games;
- structured values (executions, trigger data, KV values, service info) are JSON
  text encoded with msgspec, with the fields the queries filter on copied into
  indexed columns beside the JSON;
- each function documents the column order it expects; the dialect's queries
  select columns in that order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from backends.protocols import FlowRecord, KVEntry, ServiceInstance, TriggerState
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


# -- instants ------------------------------------------------------------------------
def to_micros(moment: datetime) -> int:
    """Epoch microseconds of an aware ``moment``."""
    return (moment - _EPOCH) // _MICRO


def require_aware(moment: datetime, what: str) -> datetime:
    """Refuse naive datetimes where a caller passes one (the clock's are aware)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment


def from_micros(micros: int) -> datetime:
    """The UTC datetime of epoch microseconds."""
    return _EPOCH + timedelta(microseconds=micros)


def opt_micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def opt_datetime(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


# -- JSON values -----------------------------------------------------------------------
_json_encoder = msgspec.json.Encoder()
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_dict_decoder = msgspec.json.Decoder(dict[str, Any])


def encode_json(value: Any) -> str:
    """JSON text of any msgspec-encodable value (TEXT columns stay readable)."""
    return _json_encoder.encode(value).decode()


def encode_json_value(value: Any, what: str) -> str:
    """Like :func:`encode_json`, with a TypeError naming ``what`` for a value JSON
    cannot hold."""
    try:
        return _json_encoder.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from exc


def decode_json(text: str | bytes) -> Any:
    return _any_decoder.decode(text)


def decode_json_dict(text: str | bytes) -> dict[str, Any]:
    return _dict_decoder.decode(text)


# -- executions ----------------------------------------------------------------------
_execution_decoder = msgspec.json.Decoder(Execution)

#: states in which an execution holds one of its flow's concurrency slots: it was
#: started and has not ended (CREATED/QUEUED wait for a slot; terminal ones gave it back)
SLOT_STATES: tuple[StateType, ...] = tuple(
    state
    for state in StateType
    if not state.terminated and state not in (StateType.CREATED, StateType.QUEUED)
)

#: separates a label's key from its value in the ``labels`` column's items
LABEL_SEPARATOR = "\x1f"


def label_item(key: str, value: str) -> str:
    """One label as the ``labels`` column stores it: ``key`` U+001F ``value`` (a control
    character no label contains, so the pair reads back unambiguously)."""
    return f"{key}{LABEL_SEPARATOR}{value}"


def label_items(execution: Execution) -> list[str]:
    """The execution's labels as ``labels`` column items, without duplicates."""
    return list(
        dict.fromkeys(
            label_item(str(label.get("key", "")), str(label.get("value", "")))
            for label in execution.labels
        )
    )


ExecutionRow = tuple[str, str, str, str, int | None, int | None, str, str]


def execution_row(execution: Execution) -> ExecutionRow:
    """Columns (id, namespace, flow_id, state, start_date, end_date, data, labels), the
    labels as a JSON array of :func:`label_item` strings."""
    state = execution.state
    return (
        execution.id,
        execution.namespace,
        execution.flow_id,
        state.current.value,
        opt_micros(state.start_date),
        opt_micros(state.end_date),
        _json_encoder.encode(execution).decode(),
        _json_encoder.encode(label_items(execution)).decode() if execution.labels else "[]",
    )


ExecutionBinaryRow = tuple[str, str, str, str, int | None, int | None, bytes, list[str]]


def execution_row_binary(execution: Execution) -> ExecutionBinaryRow:
    """Like :func:`execution_row`, with the JSON as bytes (for BYTEA / BLOB columns: no
    text round trip on the hot path) and the labels as a list (an array column)."""
    state = execution.state
    return (
        execution.id,
        execution.namespace,
        execution.flow_id,
        state.current.value,
        opt_micros(state.start_date),
        opt_micros(state.end_date),
        _json_encoder.encode(execution),
        label_items(execution) if execution.labels else [],
    )


def decode_execution(data: str | bytes) -> Execution:
    """The execution stored in a ``data`` column."""
    return _execution_decoder.decode(data)


# -- flows, triggers, KV, services, logs ---------------------------------------------
def flow_record(row: Sequence[Any]) -> FlowRecord:
    """Columns (namespace, flow_id, revision, source, updated, deleted)."""
    return FlowRecord(
        namespace=row[0],
        id=row[1],
        revision=row[2],
        source=row[3],
        updated=from_micros(row[4]),
        deleted=bool(row[5]),
    )


def trigger_row(state: TriggerState) -> tuple[Any, ...]:
    """Columns (namespace, flow_id, trigger_id, next_date, last_date, disabled,
    flow_revision, data)."""
    return (
        state.namespace,
        state.flow_id,
        state.trigger_id,
        opt_micros(state.next_date),
        opt_micros(state.last_date),
        state.disabled,
        state.flow_revision,
        encode_json(state.data),
    )


def trigger_state(row: Sequence[Any]) -> TriggerState:
    """The inverse of :func:`trigger_row`."""
    return TriggerState(
        namespace=row[0],
        flow_id=row[1],
        trigger_id=row[2],
        next_date=opt_datetime(row[3]),
        last_date=opt_datetime(row[4]),
        disabled=bool(row[5]),
        flow_revision=row[6],
        data=decode_json_dict(row[7]),
    )


def kv_entry(row: Sequence[Any]) -> KVEntry:
    """Columns (namespace, key, value, updated, expires_at)."""
    return KVEntry(
        namespace=row[0],
        key=row[1],
        value=decode_json(row[2]),
        updated=from_micros(row[3]),
        expires_at=opt_datetime(row[4]),
    )


_service_decoder = msgspec.json.Decoder(ServiceInstance)


def service_row(instance: ServiceInstance) -> tuple[str, str, int, str]:
    """Columns (id, kind, heartbeat, data)."""
    return (
        instance.id,
        instance.kind,
        to_micros(instance.heartbeat),
        _json_encoder.encode(instance).decode(),
    )


def service_instance(data: str | bytes) -> ServiceInstance:
    return _service_decoder.decode(data)


#: log levels by severity; ``min_level`` filters keep this level and above
LOG_LEVELS: dict[str, int] = {
    "TRACE": 0,
    "DEBUG": 10,
    "INFO": 20,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
}


def log_level_number(level: str) -> int:
    """The severity of a stored entry's ``level`` (unknown names count as INFO)."""
    return LOG_LEVELS.get(level.upper(), LOG_LEVELS["INFO"])


def min_level_number(level: str | None) -> int:
    """The severity a ``min_level`` filter asks for (None: every entry)."""
    if level is None:
        return -1
    try:
        return LOG_LEVELS[level.upper()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}: use one of {', '.join(sorted(LOG_LEVELS))}"
        ) from None


def log_row(entry: LogEntry, seq: int) -> tuple[Any, ...]:
    """Columns (execution_id, seq, namespace, flow_id, timestamp, level, level_number,
    message, task_run_id, task_id, attempt)."""
    return (
        entry.execution_id,
        seq,
        entry.namespace,
        entry.flow_id,
        to_micros(entry.timestamp),
        entry.level,
        log_level_number(entry.level),
        entry.message,
        entry.task_run_id,
        entry.task_id,
        entry.attempt,
    )


def log_entry(row: Sequence[Any]) -> LogEntry:
    """Columns (execution_id, seq, namespace, flow_id, timestamp, level, message,
    task_run_id, task_id, attempt)."""
    return LogEntry(
        execution_id=row[0],
        seq=row[1],
        namespace=row[2],
        flow_id=row[3],
        timestamp=from_micros(row[4]),
        level=row[5],
        message=row[6],
        task_run_id=row[7],
        task_id=row[8],
        attempt=row[9],
    )


# -- queues --------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^a-z0-9_]")


def queue_table(queue: str) -> str:
    """The table holding ``queue``'s messages: ``queue_<name>``, readable when the name
    is a plain identifier, suffixed by a short hash when it had to be altered (so two
    names never share a table)."""
    if not queue:
        raise ValueError("a queue name cannot be empty")
    cleaned = _UNSAFE.sub("_", queue.lower())[:40]
    if cleaned == queue:
        return f"queue_{cleaned}"
    digest = hashlib.sha1(queue.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"queue_{cleaned}_{digest}"
