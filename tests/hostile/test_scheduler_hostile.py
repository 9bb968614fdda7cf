"""A Schedule trigger whose inputs are a hostile expression: the scheduler fails
that date's execution (logged) within its budget and fires the others."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backends.testing.clock import ManualClock
from runtime.flow import budget
from services.flows import deploy_source
from tests.services.test_scheduler import T0, Bench, at, flow

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_a_hostile_schedule_input_fails_alone(
    tmp_path: Path, small_budget: budget.Limits
) -> None:
    bench = Bench("memory", ManualClock(T0), tmp_path)
    await bench.backend.start()
    try:
        head = "inputs:\n  - id: data\n    type: STRING"
        trigger = "    inputs:\n      data: \"{{ '{}' | jq('def f: f; f') }}\""
        await deploy_source(bench.backend.flows, flow("hostile", head=head, trigger=trigger))
        await deploy_source(bench.backend.flows, flow("fine", trigger_id="ok"))
        scheduler = bench.scheduler()
        await bench.tick(scheduler)
        began = time.monotonic()
        assert await bench.tick(scheduler, at(12, 5)) == 1  # "fine" only
        assert time.monotonic() - began < small_budget.cpu_seconds + 3.0
        assert await bench.executions("hostile") == []
        assert len(await bench.executions("fine")) == 1
    finally:
        await bench.backend.stop()
