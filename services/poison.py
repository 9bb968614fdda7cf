"""No poison execution: what keeps failing is ended, not retried forever.

Two rules, each a small function its component calls:

* the executor: an event it failed to apply :data:`MAX_EVENT_ATTEMPTS` times ends
  its execution FAILED, with the reason in the execution's logs (before, it was
  dropped and the execution stayed RUNNING for good); an event the engine refused
  (``EventRefused``) is only dropped: the execution is sound;
* the worker: a job handed back ``worker.max_requeues`` times (its worker died,
  hung past its lease, or was stopped while running it) fails instead of running
  again, so a job that kills its worker cannot take the next one down too.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from runtime.flow.events import Command, ExecutionEnded, Log
from runtime.flow.execution import Execution
from runtime.flow.states import StateType

__all__ = ["MAX_EVENT_ATTEMPTS", "quarantined", "requeued_too_often"]

#: an event the executor fails to apply this many times quarantines its execution
MAX_EVENT_ATTEMPTS = 5


def quarantined(
    execution: Execution, reason: str, at: datetime
) -> tuple[Execution, list[Command]] | None:
    """``execution`` ended FAILED because of ``reason``, with the log line and the end
    to carry out; None when it has already ended (nothing to do)."""
    if execution.state.terminated:
        return None
    failed = StateType.FAILED
    runs = tuple(
        run if run.state.terminated else run.with_state(failed, at)
        for run in execution.task_run_list
    )
    ended = msgspec.structs.replace(
        execution, state=execution.state.to(failed, at), task_run_list=runs
    )
    message = (
        f"execution quarantined: the executor failed {MAX_EVENT_ATTEMPTS} times on one of "
        f"its events ({reason}); it ends FAILED instead of blocking its queue. Fix the "
        "cause, then restart or replay it"
    )
    commands: list[Command] = [
        Log(at=at, level="ERROR", message=message),
        ExecutionEnded(
            at=at,
            execution_id=execution.id,
            state=failed,
            parent_id=execution.parent_id,
            parent_task_run_id=execution.parent_task_run_id,
        ),
    ]
    return ended, commands


def requeued_too_often(attempts: int, limit: int) -> str | None:
    """Why a job delivered with ``attempts`` earlier hand-backs must not run again,
    or None when it may."""
    if attempts < limit:
        return None
    return (
        f"this task was handed back {attempts} times without finishing (the worker running "
        "it died, hung or was stopped, each time): it fails instead of taking another "
        f"worker down; setting `worker.max_requeues` ({limit})"
    )
