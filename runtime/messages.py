"""Wire messages between components (msgspec Structs; unknown fields are ignored so
components of different versions can talk during a rolling upgrade)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from runtime.flow.events import Event

#: the queue the executor consumes (engine events, keyed by execution id)
EXECUTOR_QUEUE = "executor"
#: the queue workers consume (jobs, competing consumers)
WORKER_QUEUE = "worker"


class WorkerJob(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of one task run, for a worker."""

    execution_id: str
    task_run_id: str
    task_id: str
    attempt: int
    namespace: str
    flow_id: str
    flow_revision: int
    #: what the task's templates see (runtime.flow.context.variables), snapshot at dispatch
    variables: dict[str, Any]


class LogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One log line of an execution (or of one of its task runs)."""

    execution_id: str
    namespace: str
    flow_id: str
    timestamp: datetime
    level: str
    message: str
    task_run_id: str | None = None
    task_id: str | None = None
    attempt: int | None = None
    #: position in the execution's log, assigned by the log store
    seq: int = 0


_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(Event)
_job_encoder = msgspec.msgpack.Encoder()
_job_decoder = msgspec.msgpack.Decoder(WorkerJob)


def encode_event(event: Event) -> bytes:
    return _event_encoder.encode(event)


def decode_event(data: bytes) -> Event:
    return _event_decoder.decode(data)


def encode_job(job: WorkerJob) -> bytes:
    return _job_encoder.encode(job)


def decode_job(data: bytes) -> WorkerJob:
    return _job_decoder.decode(data)
