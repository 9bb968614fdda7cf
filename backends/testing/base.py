"""The fixtures every conformance test uses, and small builders for test data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest
import pytest_asyncio

from backends.protocols import Backend, Clock, QueueMessage
from backends.testing.clock import ManualClock
from runtime.flow.execution import Execution, new_execution
from runtime.flow.states import State, StateType
from runtime.messages import LogEntry

NAMESPACE = "io.conformance"
FLOW = "flow"


class ConformanceBase:
    """Fixtures of the conformance suite. Subclass ``BackendConformance``, not this."""

    #: test name -> why this backend fails it; such tests run as xfail(strict=True),
    #: so the entry must go once the gap is closed
    known_gaps: ClassVar[Mapping[str, str]] = {}

    async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
        """A new, empty, not yet started backend reading time from ``clock``."""
        raise NotImplementedError(
            f"{type(self).__name__} must override make_backend(clock, tmp_path) "
            "to return the backend under test"
        )

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The backend's clock; tests move it with ``advance``."""
        return ManualClock()

    @pytest_asyncio.fixture
    async def backend(
        self, request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path
    ) -> AsyncIterator[Backend]:
        """A started backend built by ``make_backend``, stopped after the test."""
        self._apply_known_gap(request)
        backend = await self.make_backend(clock, tmp_path)
        await backend.start()
        try:
            yield backend
        finally:
            await backend.stop()

    def _apply_known_gap(self, request: pytest.FixtureRequest) -> None:
        stale = sorted(name for name in self.known_gaps if not hasattr(self, name))
        if stale:
            pytest.fail(
                f"{type(self).__name__}.known_gaps names tests that do not exist: "
                f"{', '.join(stale)}; remove or rename them"
            )
        reason = self.known_gaps.get(request.function.__name__)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# -- builders ------------------------------------------------------------------------
def make_execution(
    execution_id: str,
    at: datetime,
    state: StateType = StateType.CREATED,
    *,
    namespace: str = NAMESPACE,
    flow_id: str = FLOW,
    inputs: dict[str, Any] | None = None,
) -> Execution:
    """An execution created at ``at`` and moved to ``state`` at the same time."""
    execution = new_execution(
        id=execution_id,
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=1,
        at=at,
        inputs=inputs,
    )
    return with_state(execution, state, at)


def with_state(execution: Execution, state: StateType, at: datetime) -> Execution:
    """The execution moved to ``state`` at ``at`` (its history grows)."""
    return msgspec.structs.replace(execution, state=execution.state.to(state, at))


def make_log(
    execution_id: str,
    message: str,
    at: datetime,
    *,
    level: str = "INFO",
    task_run_id: str | None = None,
) -> LogEntry:
    return LogEntry(
        execution_id=execution_id,
        namespace=NAMESPACE,
        flow_id=FLOW,
        timestamp=at,
        level=level,
        message=message,
        task_run_id=task_run_id,
        task_id=None if task_run_id is None else f"task-of-{task_run_id}",
        attempt=None if task_run_id is None else 1,
    )


def running_state(at: datetime) -> State:
    return State.new(StateType.CREATED, at).to(StateType.RUNNING, at)


def payloads(messages: Iterable[QueueMessage]) -> list[bytes]:
    return [m.payload for m in messages]


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task a failed test left behind, and wait for it to end."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
