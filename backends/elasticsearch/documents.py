"""Entities as search documents and back. A document holds the fields searched,
sorted and counted on, and the entity itself (``raw``, JSON) that reads return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from backends.memory.data import FlowEntry
from backends.memory.stores import level_rank
from backends.protocols import FlowRecord, TriggerState
from backends.sql.mapping import label_items
from runtime.flow.execution import Execution
from runtime.messages import LogEntry

_encoder = msgspec.json.Encoder()
_execution = msgspec.json.Decoder(Execution)
_flow = msgspec.json.Decoder(FlowRecord)
_log = msgspec.json.Decoder(LogEntry)
_trigger = msgspec.json.Decoder(TriggerState)


def _date(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def execution_doc(execution: Execution) -> dict[str, Any]:
    e = execution
    return {
        "id": e.id,
        "namespace": e.namespace,
        "flow_id": e.flow_id,
        "state": e.state.current.value,
        "start_date": _date(e.state.start_date),
        "end_date": _date(e.state.end_date),
        "labels": label_items(e),
        "text": [e.id.lower(), e.namespace.lower(), e.flow_id.lower()],
        "raw": _encoder.encode(e).decode(),
    }


def execution_of(source: dict[str, Any]) -> Execution:
    return _execution.decode(source["raw"])


def flow_id(namespace: str, flow_id: str, revision: int) -> str:
    return f"{namespace}/{flow_id}/{revision}"


def flow_docs(entry: FlowEntry) -> list[tuple[str, dict[str, Any]]]:
    """One document per revision; the flow's deleted mark is on every one, and the
    last revision is the latest."""
    docs = []
    last = len(entry.revisions) - 1
    for n, record in enumerate(entry.revisions):
        docs.append(
            (
                flow_id(record.namespace, record.id, record.revision),
                {
                    "namespace": record.namespace,
                    "flow_id": record.id,
                    "revision": record.revision,
                    "latest": n == last,
                    "deleted": entry.deleted,
                    "raw": _encoder.encode(record).decode(),
                },
            )
        )
    return docs


def flow_of(source: dict[str, Any]) -> FlowRecord:
    record = _flow.decode(source["raw"])
    if bool(source.get("deleted")) != record.deleted:
        record = msgspec.structs.replace(record, deleted=bool(source.get("deleted")))
    return record


def log_doc(entry: LogEntry, offset: int = 0) -> dict[str, Any]:
    return {
        "offset": offset,
        "deleted": False,
        "execution_id": entry.execution_id,
        "namespace": entry.namespace,
        "flow_id": entry.flow_id,
        "task_id": entry.task_id,
        "task_run_id": entry.task_run_id,
        "attempt": entry.attempt,
        "level": entry.level.upper(),
        "rank": level_rank(entry.level),
        "timestamp": entry.timestamp.isoformat(),
        "seq": entry.seq,
        "message": entry.message.lower(),
        "raw": _encoder.encode(entry).decode(),
    }


def log_of(source: dict[str, Any]) -> LogEntry:
    return _log.decode(source["raw"])


def trigger_id(namespace: str, flow: str, trigger: str) -> str:
    return f"{namespace}/{flow}/{trigger}"


def trigger_doc(state: TriggerState) -> dict[str, Any]:
    return {
        "namespace": state.namespace,
        "flow_id": state.flow_id,
        "trigger_id": state.trigger_id,
        "raw": _encoder.encode(state).decode(),
    }


def trigger_of(source: dict[str, Any]) -> TriggerState:
    return _trigger.decode(source["raw"])
