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

    @property
    def terminated(self) -> bool:
        return self in _TERMINATED

    @property
    def created(self) -> bool:
        return self is StateType.CREATED or self is StateType.RESTARTED

    @property
    def running(self) -> bool:
        return self is StateType.RUNNING or self is StateType.KILLING

    @property
    def failed(self) -> bool:
        return self is StateType.FAILED

    @property
    def retrying(self) -> bool:
        return self is StateType.RETRYING or self is StateType.RETRIED


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
