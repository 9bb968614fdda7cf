"""The scheduler fires Schedule triggers exactly once per date: driven tick by tick
with a hand-moved clock, on the memory backend (and SQLite where it matters)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from backends.memory import MemoryBackend
from backends.protocols import Backend
from backends.sqlite import SqliteBackend
from backends.testing.clock import ManualClock
from runtime.actors import ActorSystem, ChildSpec
from runtime.config import SchedulerConfig
from runtime.flow.context import iso
from runtime.flow.execution import Execution
from runtime.flow.ids import derived_id
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE
from services.flows import FlowCache, deploy_source
from services.scheduler import MAX_CATCH_UP, Scheduler

NS = "sched"
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def at(hour: int, minute: int, second: int = 0, day: int = 1) -> datetime:
    return datetime(2030, 1, day, hour, minute, second, tzinfo=UTC)


def flow(
    flow_id: str = "every5",
    *,
    trigger: str = "",
    cron: str = "*/5 * * * *",
    head: str = "",
    trigger_id: str = "five",
) -> str:
    return f"""
id: {flow_id}
namespace: {NS}
{head}
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.date }}}}"
triggers:
  - id: {trigger_id}
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "{cron}"
{trigger}
"""


class Bench:
    """A backend on a ManualClock, and a way to restart it (SQLite: a new backend on
    the same file, as a new process would open it)."""

    def __init__(self, kind: str, clock: ManualClock, tmp_path: Path) -> None:
        self.kind = kind
        self.clock = clock
        self.path = tmp_path / "runtime.db"
        self.backend: Backend = self._make()

    def _make(self) -> Backend:
        if self.kind == "sqlite":
            return SqliteBackend(self.path, self.clock, synchronous="OFF")
        return MemoryBackend(self.clock)

    async def restart(self) -> None:
        if self.kind == "sqlite":
            await self.backend.stop()
            self.backend = self._make()
            await self.backend.start()

    def scheduler(self, scheduler_id: str = "s1") -> Scheduler:
        return Scheduler(self.backend, FlowCache(self.backend), scheduler_id=scheduler_id)

    async def tick(self, scheduler: Scheduler, when: datetime | None = None) -> int:
        if when is not None:
            self.clock.set(when)
        return await scheduler.tick(self.clock())

    async def executions(self, flow_id: str = "every5") -> list[Execution]:
        found = await self.backend.executions.search(namespace=NS, flow_id=flow_id, limit=10_000)
        return sorted(found, key=lambda e: str((e.trigger or {}).get("date")))

    async def dates(self, flow_id: str = "every5") -> list[str]:
        return [str((e.trigger or {})["date"]) for e in await self.executions(flow_id)]


@pytest_asyncio.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    bench = Bench("memory", ManualClock(T0), tmp_path)
    await bench.backend.start()
    try:
        yield bench
    finally:
        await bench.backend.stop()


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def any_bench(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bench]:
    bench = Bench(request.param, ManualClock(T0), tmp_path)
    await bench.backend.start()
    try:
        yield bench
    finally:
        await bench.backend.stop()


# -- one date, one execution -----------------------------------------------------------
@pytest.mark.asyncio
async def test_each_due_date_fires_one_execution_once_across_ticks_and_restarts(
    any_bench: Bench,
) -> None:
    bench = any_bench
    await deploy_source(bench.backend.flows, flow())
    scheduler = bench.scheduler()

    # The first tick only schedules: the next date strictly after now.
    assert await bench.tick(scheduler) == 0
    state = await bench.backend.triggers.get(NS, "every5", "five")
    assert state is not None
    assert state.next_date == at(12, 5)
    assert await bench.executions() == []
    assert await bench.tick(scheduler, at(12, 4, 59)) == 0

    assert await bench.tick(scheduler, at(12, 5)) == 1
    [first] = await bench.executions()
    assert first.id == derived_id(NS, "every5", "five", at(12, 5).isoformat())
    assert first.state.current is StateType.CREATED
    assert first.trigger is not None
    assert first.trigger["id"] == "five"
    assert first.trigger["date"] == "2030-01-01T12:05:00Z"
    assert first.trigger["next"] == "2030-01-01T12:10:00Z"
    assert first.trigger["variables"]["date"] == "2030-01-01T12:05:00Z"
    assert await bench.backend.queues.depth(EXECUTOR_QUEUE) == 1

    # The same time again: nothing new.
    assert await bench.tick(scheduler) == 0
    assert await bench.tick(scheduler, at(12, 9, 59)) == 0
    assert await bench.tick(scheduler, at(12, 10)) == 1
    assert await bench.dates() == ["2030-01-01T12:05:00Z", "2030-01-01T12:10:00Z"]

    # A restart (a new scheduler; on SQLite a new connection to the file) at the same
    # time fires nothing again, and carries on with the next date.
    await bench.restart()
    again = bench.scheduler("s2")
    assert await bench.tick(again) == 0
    assert await bench.tick(again, at(12, 15)) == 1
    assert await bench.dates() == [
        "2030-01-01T12:05:00Z",
        "2030-01-01T12:10:00Z",
        "2030-01-01T12:15:00Z",
    ]
    assert await bench.backend.queues.depth(EXECUTOR_QUEUE) == 3
    state = await bench.backend.triggers.get(NS, "every5", "five")
    assert state is not None
    assert (state.last_date, state.next_date) == (at(12, 15), at(12, 20))


@pytest.mark.asyncio
async def test_two_schedulers_firing_the_same_date_create_one_execution(bench: Bench) -> None:
    """An overlap of two leaders (a lease handed over late) must not double a date."""
    await deploy_source(bench.backend.flows, flow())
    one, two = bench.scheduler("s1"), bench.scheduler("s2")
    await bench.tick(one)
    bench.clock.set(at(12, 5))
    fired = await asyncio.gather(one.tick(bench.clock()), two.tick(bench.clock()))
    assert sorted(fired) == [0, 1]
    assert await bench.dates() == ["2030-01-01T12:05:00Z"]
    assert await bench.backend.queues.depth(EXECUTOR_QUEUE) == 1


# -- downtime ----------------------------------------------------------------------------
MISSED = [iso(at(12, 5) + timedelta(minutes=5 * i)) for i in range(12)]  # 12:05 .. 13:00


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(None, MISSED, id="default-ALL"),
        pytest.param("ALL", MISSED, id="ALL"),
        pytest.param("LAST", MISSED[-1:], id="LAST"),
        pytest.param("NONE", [], id="NONE"),
    ],
)
@pytest.mark.asyncio
async def test_dates_missed_while_down_follow_recover_missed_schedules(
    bench: Bench, policy: str | None, expected: list[str]
) -> None:
    extra = f"    recoverMissedSchedules: {policy}" if policy else ""
    await deploy_source(bench.backend.flows, flow(trigger=extra))
    await bench.tick(bench.scheduler())
    # Down for an hour (and two minutes, so that 13:00 is late too); a new scheduler.
    bench.clock.set(at(13, 2))
    scheduler = bench.scheduler("after-downtime")
    assert await bench.tick(scheduler) == len(expected)
    assert await bench.dates() == expected
    assert await bench.tick(scheduler) == 0
    # Caught up: the next date fires normally, once.
    assert await bench.tick(scheduler, at(13, 5)) == 1
    assert await bench.dates() == [*expected, "2030-01-01T13:05:00Z"]


@pytest.mark.asyncio
async def test_late_maximum_delay_skips_dates_older_than_it(bench: Bench) -> None:
    await deploy_source(bench.backend.flows, flow(trigger="    lateMaximumDelay: PT10M"))
    await bench.tick(bench.scheduler())
    assert await bench.tick(bench.scheduler(), at(13, 2)) == 2
    assert await bench.dates() == ["2030-01-01T12:55:00Z", "2030-01-01T13:00:00Z"]


@pytest.mark.asyncio
async def test_last_policy_fires_once_even_after_a_very_long_downtime(bench: Bench) -> None:
    """More missed dates than one tick catches up with (MAX_CATCH_UP): LAST still fires
    only the very last one (it once fired the last date of each chunk of 1000)."""
    await deploy_source(
        bench.backend.flows,
        flow(cron="* * * * *", trigger="    recoverMissedSchedules: LAST"),
    )
    await bench.tick(bench.scheduler())
    down = 2 * MAX_CATCH_UP + 2  # minutes, hence missed dates
    bench.clock.set(T0 + timedelta(minutes=down, seconds=30))
    scheduler = bench.scheduler("after-downtime")
    for _ in range(5):
        await bench.tick(scheduler)
    assert await bench.dates() == [iso(T0 + timedelta(minutes=down))]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_catching_up_a_long_downtime_with_last_takes_one_quick_tick(bench: Bench) -> None:
    await deploy_source(
        bench.backend.flows,
        flow(cron="* * * * * *", trigger="    withSeconds: true\n    recoverMissedSchedules: LAST"),
    )
    await bench.tick(bench.scheduler())
    # 30 days of per-second dates: walking them one by one would take minutes, so a
    # bound of seconds tells the two apart even on a loaded machine
    bench.clock.advance(30 * 24 * 3600)
    began = time.perf_counter()
    fired = await bench.tick(bench.scheduler("after-downtime"))
    took = time.perf_counter() - began
    assert (fired, await bench.dates()) == (1, [iso(bench.clock())])
    assert took < 10.0, f"one tick took {took:.2f} s"


# -- cron flavours -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_six_field_cron_with_seconds_first(bench: Bench) -> None:
    await deploy_source(
        bench.backend.flows, flow(cron="*/15 * * * * *", trigger="    withSeconds: true")
    )
    scheduler = bench.scheduler()
    await bench.tick(scheduler)
    state = await bench.backend.triggers.get(NS, "every5", "five")
    assert state is not None
    assert state.next_date == at(12, 0, 15)
    assert await bench.tick(scheduler, at(12, 0, 14)) == 0
    assert await bench.tick(scheduler, at(12, 0, 15)) == 1
    assert await bench.tick(scheduler, at(12, 0, 45)) == 2
    assert await bench.dates() == [
        "2030-01-01T12:00:15Z",
        "2030-01-01T12:00:30Z",
        "2030-01-01T12:00:45Z",
    ]


@pytest.mark.asyncio
async def test_timezone_sets_the_wall_clock_of_the_cron_across_a_dst_change() -> None:
    # 2030-03-10 is the day New York moves from EST (UTC-5) to EDT (UTC-4).
    clock = ManualClock(datetime(2030, 3, 9, 12, 0, tzinfo=UTC))
    backend = MemoryBackend(clock)
    await deploy_source(
        backend.flows, flow(cron="0 9 * * *", trigger="    timezone: America/New_York")
    )
    scheduler = Scheduler(backend, FlowCache(backend), scheduler_id="s1")
    assert await scheduler.tick(clock()) == 0
    state = await backend.triggers.get(NS, "every5", "five")
    assert state is not None
    assert state.next_date == datetime(2030, 3, 9, 14, 0, tzinfo=UTC)
    clock.set(datetime(2030, 3, 9, 14, 0, tzinfo=UTC))
    assert await scheduler.tick(clock()) == 1
    state = await backend.triggers.get(NS, "every5", "five")
    assert state is not None
    assert state.next_date == datetime(2030, 3, 10, 13, 0, tzinfo=UTC)
    clock.set(datetime(2030, 3, 10, 13, 0, tzinfo=UTC))
    assert await scheduler.tick(clock()) == 1
    found = await backend.executions.search(namespace=NS, limit=10)
    assert sorted(str((e.trigger or {})["date"]) for e in found) == [
        "2030-03-09T14:00:00Z",
        "2030-03-10T13:00:00Z",
    ]


# -- what the execution gets ---------------------------------------------------------------
@pytest.mark.asyncio
async def test_trigger_inputs_are_rendered_typed_and_defaulted(bench: Bench) -> None:
    head = """inputs:
  - id: when
    type: STRING
  - id: count
    type: INT
  - id: label
    type: STRING
    defaults: nightly"""
    trigger = """    inputs:
      when: "{{ trigger.date }}"
      count: "{{ 1 + 2 }}\""""
    await deploy_source(bench.backend.flows, flow(head=head, trigger=trigger))
    scheduler = bench.scheduler()
    await bench.tick(scheduler)
    assert await bench.tick(scheduler, at(12, 5)) == 1
    [execution] = await bench.executions()
    assert execution.inputs == {"when": "2030-01-01T12:05:00Z", "count": 3, "label": "nightly"}


@pytest.mark.asyncio
async def test_disabled_triggers_and_flows_never_fire(bench: Bench) -> None:
    flows: dict[str, dict[str, Any]] = {
        "control": {},
        "trigger_off": {"trigger": "    disabled: true"},
        "flow_off": {"head": "disabled: true"},
        "state_off": {},
    }
    for flow_id, parts in flows.items():
        await deploy_source(bench.backend.flows, flow(flow_id, **parts))
    scheduler = bench.scheduler()
    await bench.tick(scheduler)
    # Disabled from outside (what the API's "disable trigger" stores).
    state = await bench.backend.triggers.get(NS, "state_off", "five")
    assert state is not None
    await bench.backend.triggers.save(msgspec.structs.replace(state, disabled=True))
    for minute in (5, 10, 15):
        await bench.tick(scheduler, at(12, minute))
    bench.clock.set(at(15, 0))
    await bench.tick(bench.scheduler("after-restart"))
    assert len(await bench.dates("control")) == 12 * 3
    for flow_id in ("trigger_off", "flow_off", "state_off"):
        assert await bench.executions(flow_id) == [], flow_id


@pytest.mark.asyncio
async def test_a_changed_cron_is_rescheduled_from_now_without_firing_old_dates(
    bench: Bench,
) -> None:
    await deploy_source(bench.backend.flows, flow())
    scheduler = bench.scheduler()
    await bench.tick(scheduler)
    await deploy_source(bench.backend.flows, flow(cron="0 * * * *"))
    assert await bench.tick(scheduler, at(12, 30)) == 0
    state = await bench.backend.triggers.get(NS, "every5", "five")
    assert state is not None
    assert state.next_date == at(13, 0)
    assert await bench.tick(scheduler, at(13, 0)) == 1
    [execution] = await bench.executions()
    assert execution.flow_revision == 2


# -- leader election -------------------------------------------------------------------------
async def until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_only_the_leader_fires_and_a_crashed_leader_is_replaced_after_its_ttl(
    bench: Bench,
) -> None:
    backend = bench.backend
    await deploy_source(backend.flows, flow())
    settings = SchedulerConfig(tick_seconds=0.01, leader_ttl_seconds=10.0)
    schedulers = [
        Scheduler(backend, FlowCache(backend), scheduler_id=name, settings=settings)
        for name in ("s1", "s2")
    ]
    systems = [ActorSystem([ChildSpec(id="scheduler", start=s.run)], name=s.id) for s in schedulers]

    async def leaders() -> dict[str, bool]:
        return {i.id: i.info["leader"] for i in await backend.services.list()}

    async def both_running() -> bool:
        states = await leaders()
        return len(states) == 2 and sum(states.values()) == 1

    async def dates(count: int) -> bool:
        return len(await bench.dates()) == count

    try:
        async with asyncio.timeout(10):
            for system in systems:
                await system.start()
            await until(both_running)
            flags = await leaders()
            leader, follower = sorted(schedulers, key=lambda s: not flags[s.id])
            await until(lambda: backend.triggers.get(NS, "every5", "five"))

            for minute in (5, 10):
                bench.clock.set(at(12, minute))
                await until(lambda n=minute // 5: dates(n))
            await asyncio.sleep(0.1)  # many more ticks of both
            assert (leader.fired, follower.fired) == (2, 0)
            assert len(await bench.dates()) == 2

            # The leader crashes (no release): its lock holds until the TTL ends.
            await systems[schedulers.index(leader)].stop(graceful=False)
            bench.clock.set(at(12, 10, 5))
            await asyncio.sleep(0.1)
            assert (await leaders())[follower.id] is False
            bench.clock.set(at(12, 15))
            await until(lambda: dates(3))
            assert (await leaders())[follower.id] is True
            assert follower.fired == 1
    finally:
        for system in systems:
            await system.stop()
