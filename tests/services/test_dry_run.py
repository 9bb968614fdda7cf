"""services.dry_run: the real executor on the memory backend, workers and clock played."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.flow.engine import EngineError
from runtime.flow.events import Restart, RunTask, WakeAt
from runtime.flow.states import StateType
from services.dry_run import EPOCH, DryRun, RecordingExecutor
from services.executor import Executor
from tests.unit.engine_helpers import HEADER, LOG, flow_of, outcomes

S = StateType

RETRYING = (
    HEADER
    + f"""tasks:
  - id: flaky
    type: {LOG}
    message: m
    retry: {{type: constant, interval: PT1H, maxAttempt: 3}}
"""
)


def test_it_is_the_server_s_executor_that_handles_the_events() -> None:
    dry = DryRun(flow_of(RETRYING), outcome=outcomes({"flaky": [S.FAILED, S.SUCCESS]}))
    assert isinstance(dry.executor, RecordingExecutor)
    assert type(dry.executor).step is Executor.step
    end = dry.run()
    assert end.state.current is S.SUCCESS
    # the hour-long retry delay went through the queue and came due on the played clock
    assert [c.when - c.at for c in dry.commands if isinstance(c, WakeAt)] == [timedelta(hours=1)]
    assert dry.now == EPOCH + timedelta(hours=1)
    assert [c.attempt for c in dry.commands if isinstance(c, RunTask)] == [1, 2]
    assert dry.events > 0


def test_an_event_the_engine_refuses_is_raised_not_retried_quietly() -> None:
    dry = DryRun(flow_of(HEADER + f"tasks:\n  - id: a\n    type: {LOG}\n    message: m\n"))
    dry.hold_jobs()  # still running when the restart comes
    dry.run()
    dry.send("exec", Restart(at=EPOCH))
    with pytest.raises(EngineError, match="only a terminated or paused execution"):
        dry.run()
