"""The standby-scheduler scenario every backend runs: two `runtime run scheduler`
processes on one backend, kill -9 of the leader; the standby fires the next ticks,
no date fires twice and none is skipped."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime

from backends.protocols import Backend
from runtime.messages import EXECUTOR_QUEUE
from services.flows import deploy_source
from tests.faults.test_postgres_faults import (
    TICK_FLOW,
    Processes,
    flow_executions,
    tick_flow,
    until,
)


async def standby_takes_over(group: Processes, backend: Backend) -> None:
    """Run the scenario on ``backend`` (whose settings ``group``'s processes share)."""
    await deploy_source(backend.flows, tick_flow())
    schedulers = {group.start(f"scheduler-{n}", "run", "scheduler").pid: n for n in (1, 2)}

    async def leaders() -> list[int]:
        return [
            s.pid
            for s in await backend.services.list()
            if s.kind == "scheduler" and s.info.get("leader") and s.pid in schedulers
        ]

    async def both_up_one_leads() -> bool:
        listed = [s for s in await backend.services.list() if s.kind == "scheduler"]
        return len(listed) == 2 and len(await leaders()) == 1

    await until(both_up_one_leads, 30, "two schedulers, one leading", group)

    def fired(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(await flow_executions(backend, TICK_FLOW)) >= count

        return check

    await until(fired(3), 15, "three ticks fired", group)
    (leader,) = await leaders()
    victim = next(p for _, p, _ in group.started if p.pid == leader)
    await asyncio.to_thread(group.kill, victim)
    before = len(await flow_executions(backend, TICK_FLOW))

    async def standby_leads() -> bool:
        return [p for p in await leaders() if p != leader] != []

    # at the latest once the killed leader's lease ran out (the TTL the caller set)
    await until(standby_leads, 15, "the standby took the lead", group)
    await until(fired(before + 5), 20, "five more ticks after the kill", group)
    (standby,) = [p for _, p, _ in group.started if p.pid != leader]
    assert standby.poll() is None, group.tails()
    await asyncio.to_thread(group.kill, standby)
    executions = await flow_executions(backend, TICK_FLOW)
    # No executor runs: one ExecutionCreated each, none published twice (a date fired
    # twice finds its execution stored and publishes nothing, but two leaders at once
    # could each publish one).
    published = await backend.queues.depth(EXECUTOR_QUEUE)

    assert published == len(executions), (published, len(executions))
    dates = sorted(str(e.trigger["date"]) for e in executions if e.trigger)
    assert len(dates) == len(executions), "an execution without a trigger"
    assert len(dates) == len(set(dates)), f"a date fired twice: {dates}"
    parsed = [datetime.fromisoformat(d) for d in dates]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(parsed)]
    assert all(gap == 1.0 for gap in gaps), f"dates skipped or not one second apart: {dates}"
