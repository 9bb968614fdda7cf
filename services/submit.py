"""The one way into the executor: starting executions and sending them events.

The CLI, the webserver (executions API, webhooks, backfills), the scheduler and
`flow test` all come through here, so an execution is always stored together with
its start event (one transaction) and an outside event always reaches the executor
the same way. Whether an event applies (restart, kill, resume, replay) is the
engine's rule (:mod:`runtime.flow.engine`), checked by callers that answer people.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from backends.protocols import Backend, Storage, Stores
from runtime.flow.events import Event, ExecutionCreated
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.inputs import resolve_inputs
from runtime.flow.model import Flow
from runtime.messages import EXECUTOR_QUEUE, encode_event


async def submit(
    backend: Backend, execution: Execution, *, start_at: datetime | None = None
) -> None:
    """Store a new execution and ask an executor to start it (at ``start_at`` if that
    is later than now), in one transaction."""
    async with backend.transaction() as tx:
        await submit_in(tx, execution, now=backend.clock(), start_at=start_at)


async def submit_in(
    tx: Stores, execution: Execution, *, now: datetime, start_at: datetime | None = None
) -> None:
    """:func:`submit` inside the caller's transaction (the scheduler moves its trigger
    on in the same one, so a date fires once)."""
    later = start_at if start_at is not None and start_at > now else None
    # until a later start, the start event stays hidden in the queue
    started = encode_event(ExecutionCreated(at=later or now))
    await tx.executions.save(execution)
    await tx.queues.publish(EXECUTOR_QUEUE, [(execution.id, started)], available_at=later)


async def send_event(backend: Backend, execution_id: str, event: Event) -> None:
    """Queue an outside event (kill, resume, restart, replay...) for an execution."""
    await backend.queues.publish(EXECUTOR_QUEUE, [(execution_id, encode_event(event))])


async def start_execution(
    backend: Backend,
    storage: Storage,
    flow: Flow,
    revision: int,
    given: Mapping[str, str],
    execution_id: str | None = None,
) -> Execution:
    """Upload ``@path`` FILE inputs, type the inputs, store and queue a new execution
    (what `runtime execute` and `flow test` do)."""
    execution_id = execution_id or new_id()
    uploaded = await upload_file_inputs(flow, given, storage, execution_id)
    now = backend.clock()
    execution = new_execution(
        id=execution_id,
        namespace=flow.namespace,
        flow_id=flow.id,
        flow_revision=revision,
        at=now,
        inputs=resolve_inputs(flow, uploaded, now=now),
        labels=flow.label_map(),
    )
    await submit(backend, execution)
    return execution


async def upload_file_inputs(
    flow: Flow, given: Mapping[str, str], storage: Storage, execution_id: str
) -> dict[str, str]:
    """FILE inputs given as ``@path`` are uploaded; the input becomes the stored URI."""
    out = dict(given)
    for spec in flow.inputs:
        value = given.get(spec.id)
        if spec.type.upper() == "FILE" and isinstance(value, str) and value.startswith("@"):
            path = await asyncio.to_thread(Path(value[1:]).expanduser)
            data = await asyncio.to_thread(path.read_bytes)
            out[spec.id] = await storage.put(
                flow.namespace, f"executions/{execution_id}/inputs/{spec.id}/{path.name}", data
            )
    return out


__all__ = ["send_event", "start_execution", "submit", "submit_in", "upload_file_inputs"]
