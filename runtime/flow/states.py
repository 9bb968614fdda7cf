"""Kestra's states for executions and task runs, and their history."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec


class StateType(enum.Enum):
    """The states an execution or a task run goes through (Kestra's names)."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    RESTARTED = "RESTARTED"
    KILLING = "KILLING"
    SUCCESS = "SUCCESS"
    WARNING = "WARNING"
    FAILED = "FAILED"
    KILLED = "KILLED"
    CANCELLED = "CANCELLED"
    RETRYING = "RETRYING"
    RETRIED = "RETRIED"
    SKIPPED = "SKIPPED"

    # Set on each member below: plain attributes, not properties, because the
    # engine asks these questions hundreds of times per event.
    terminated: bool
    created: bool
    running: bool
    failed: bool
    retrying: bool


_TERMINATED = frozenset(
    {
        StateType.SUCCESS,
        StateType.WARNING,
        StateType.FAILED,
        StateType.KILLED,
        StateType.CANCELLED,
        StateType.RETRIED,
        StateType.SKIPPED,
    }
)


for _member in StateType:
    _member.terminated = _member in _TERMINATED
    _member.created = _member in (StateType.CREATED, StateType.RESTARTED)
    _member.running = _member in (StateType.RUNNING, StateType.KILLING)
    _member.failed = _member is StateType.FAILED
    _member.retrying = _member in (StateType.RETRYING, StateType.RETRIED)


class History(msgspec.Struct, frozen=True):
    state: StateType
    date: datetime


class State(msgspec.Struct, frozen=True):
    """The current state and every (state, date) it went through, oldest first."""

    current: StateType
    histories: tuple[History, ...] = ()

    @classmethod
    def new(cls, state: StateType, at: datetime) -> State:
        return cls(state, (History(state, at),))

    def to(self, state: StateType, at: datetime) -> State:
        """This state moved to ``state`` at ``at``; unchanged when already there."""
        if state is self.current:
            return self
        return State(state, (*self.histories, History(state, at)))

    @property
    def start_date(self) -> datetime | None:
        return self.histories[0].date if self.histories else None

    @property
    def end_date(self) -> datetime | None:
        if self.current.terminated and self.histories:
            return self.histories[-1].date
        return None

    @property
    def terminated(self) -> bool:
        return self.current.terminated
