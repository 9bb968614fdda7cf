"""The lifecycle every long-lived service goes through, with its legal transitions."""

from __future__ import annotations

import enum
from collections.abc import Callable


class ServiceState(enum.Enum):
    """States of a service (Kestra's ServiceState, plus ERROR)."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    TERMINATING = "TERMINATING"
    TERMINATED_GRACEFULLY = "TERMINATED_GRACEFULLY"
    TERMINATED_FORCED = "TERMINATED_FORCED"
    ERROR = "ERROR"

    @property
    def is_terminal(self) -> bool:
        return not LEGAL_TRANSITIONS[self]


LEGAL_TRANSITIONS: dict[ServiceState, frozenset[ServiceState]] = {
    ServiceState.CREATED: frozenset(
        {ServiceState.RUNNING, ServiceState.TERMINATING, ServiceState.ERROR}
    ),
    ServiceState.RUNNING: frozenset({ServiceState.TERMINATING, ServiceState.ERROR}),
    ServiceState.TERMINATING: frozenset(
        {
            ServiceState.TERMINATED_GRACEFULLY,
            ServiceState.TERMINATED_FORCED,
            ServiceState.ERROR,
        }
    ),
    # A service that failed still has to be torn down; the end state says how.
    ServiceState.ERROR: frozenset({ServiceState.TERMINATING}),
    ServiceState.TERMINATED_GRACEFULLY: frozenset(),
    ServiceState.TERMINATED_FORCED: frozenset(),
}


class IllegalTransitionError(RuntimeError):
    """Raised when a service is asked to move to a state it cannot reach from its current one."""


class Lifecycle:
    """Holds one service's state and refuses illegal transitions.

    Listeners are called synchronously with ``(old, new)`` after each transition.
    """

    __slots__ = ("_listeners", "_state", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = ServiceState.CREATED
        self._listeners: list[Callable[[ServiceState, ServiceState], None]] = []

    @property
    def state(self) -> ServiceState:
        return self._state

    def can_transition(self, new: ServiceState) -> bool:
        return new in LEGAL_TRANSITIONS[self._state]

    def transition(self, new: ServiceState) -> None:
        old = self._state
        if new not in LEGAL_TRANSITIONS[old]:
            allowed = ", ".join(sorted(s.value for s in LEGAL_TRANSITIONS[old])) or "none"
            raise IllegalTransitionError(
                f"service {self.name!r} cannot go from {old.value} to {new.value} "
                f"(allowed from {old.value}: {allowed})"
            )
        self._state = new
        for listener in list(self._listeners):
            listener(old, new)

    def add_listener(self, listener: Callable[[ServiceState, ServiceState], None]) -> None:
        self._listeners.append(listener)
