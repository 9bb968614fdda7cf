"""Server-Sent Events: live follows of an execution and of its logs.

The webserver may be its own process (the medium deployment), so a follow polls the
backend every ``webserver.poll_seconds`` rather than listening to the executor. One
poll can miss states an execution went through between two reads: those are derived
from its state history (which keeps every change), so a follower still gets one event
per state change, in order.

Each follow is one coroutine writing to its own connection: a slow client only
slows its own stream (the next poll happens once the last event was sent, so nothing
piles up in memory), and a client that goes away ends its follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec
from starlette.responses import StreamingResponse

from runtime.flow.execution import Execution
from runtime.flow.states import State
from runtime.messages import LogEntry
from services.webserver.http import AppState, encode
from services.webserver.shapes import execution_json

#: a comment line sent when nothing happened for this long, so dead clients are noticed
PING_SECONDS = 15.0


def event(data: bytes, event_id: str | None = None, name: str | None = None) -> bytes:
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if name is not None:
        head += b"event: " + name.encode() + b"\n"
    # msgspec's JSON has no raw newline, so the data is one line
    return head + b"data: " + data + b"\n\n"


class EventStream(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(
            events,
            media_type=self.media_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )


async def pause(app: AppState, seconds: float) -> bool:
    """Sleep between polls; False when the server is stopping (end the stream)."""
    if app.stopping.is_set():
        return False
    try:
        await asyncio.wait_for(app.stopping.wait(), seconds)
    except TimeoutError:
        return True
    return False


def _fingerprint(execution: Execution) -> tuple[int, ...]:
    """Changes whenever the execution or one of its task runs changed state."""
    return (
        len(execution.state.histories),
        len(execution.task_run_list),
        *(len(r.state.histories) + len(r.attempts) for r in execution.task_run_list),
    )


async def follow_execution(app: AppState, first: Execution) -> AsyncIterator[bytes]:
    """``progress`` events as the execution changes, ``end`` with its final state."""
    execution: Execution | None = first
    sent_states = 0
    last: tuple[int, ...] | None = None
    idle = 0.0
    while execution is not None:
        histories = execution.state.histories
        # States passed between two polls: one event each, cut at that state.
        for i in range(sent_states, len(histories) - 1):
            cut = State(histories[i].state, histories[: i + 1])
            missed = msgspec.structs.replace(execution, state=cut)
            yield event(encode(execution_json(missed)), "progress")
        sent_states = len(histories)
        fingerprint = _fingerprint(execution)
        if fingerprint != last:
            ended = execution.state.terminated
            yield event(encode(execution_json(execution)), "end" if ended else "progress")
            last, idle = fingerprint, 0.0
            if ended:
                return
        elif idle >= PING_SECONDS:
            yield b": ping\n\n"
            idle = 0.0
        if not await pause(app, app.config.poll_seconds):
            return
        idle += app.config.poll_seconds
        execution = await app.backend.executions.get(first.id)


async def follow_logs(
    app: AppState,
    execution_id: str,
    min_level: str | None,
    task_run_id: str | None,
    keeps: Callable[[LogEntry], bool] = lambda entry: True,
    after: int = 0,
) -> AsyncIterator[bytes]:
    """Every log entry past ``after`` as it is written, until the execution has ended.
    Each event's id is the entry's place in the log: a client that reconnects with
    ``Last-Event-ID`` resumes where it stopped."""
    from services.webserver.logs_api import log_json

    idle = 0.0
    while True:
        execution = await app.backend.executions.get(execution_id)
        ended = execution is None or execution.state.terminated
        # Read after the state: entries written with the final result are included.
        while True:
            entries = await app.backend.logs.query(
                execution_id, task_run_id=task_run_id, min_level=min_level, after_seq=after
            )
            for entry in entries:
                after = entry.seq
                if keeps(entry):
                    yield event(encode(log_json(entry)), str(entry.seq))
            if len(entries) < 1000:
                break
        if entries:
            idle = 0.0
        elif idle >= PING_SECONDS:
            yield b": ping\n\n"
            idle = 0.0
        if ended or not await pause(app, app.config.poll_seconds):
            return
        idle += app.config.poll_seconds
