"""Supervision: strategies, restart types, intensity, backoff, start and stop order."""

from __future__ import annotations

import asyncio
import random

import pytest

from runtime.actors import (
    ActorSystem,
    Backoff,
    ChildContext,
    ChildSpec,
    ChildStartError,
    FakeClock,
    Restart,
    RestartIntensity,
    ServiceState,
    Strategy,
    SupervisorEscalationError,
    supervisor_spec,
)
from tests.unit.helpers import eventually, settle


class Boom(Exception):
    pass


class Probe:
    """Children whose life the test controls, recording ("start"|"exit", id) events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.control: dict[str, asyncio.Future[str]] = {}

    def spec(
        self,
        child_id: str,
        *,
        restart: Restart = Restart.PERMANENT,
        fail_start: BaseException | None = None,
        shutdown_timeout: float = 1.0,
    ) -> ChildSpec:
        async def start(ctx: ChildContext) -> None:
            self.events.append(("start", child_id))
            if fail_start is not None:
                raise fail_start
            control: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self.control[child_id] = control
            ctx.on_stop_requested(lambda: control.done() or control.set_result("stop"))
            ctx.ready()
            try:
                what = await control
            finally:
                self.events.append(("exit", child_id))
            if what == "crash":
                raise Boom(child_id)

        return ChildSpec(
            id=child_id, start=start, restart=restart, shutdown_timeout=shutdown_timeout
        )

    def crash(self, child_id: str) -> None:
        self.control[child_id].set_result("crash")

    def finish(self, child_id: str) -> None:
        self.control[child_id].set_result("normal")

    def starts(self) -> int:
        return sum(1 for kind, _ in self.events if kind == "start")


def make_system(probe: Probe, ids: list[str], strategy: Strategy, clock: FakeClock, **kw: object):
    return ActorSystem(
        [probe.spec(i) for i in ids],
        strategy=strategy,
        clock=clock,
        rng=random.Random(7),
        backoff=Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.5),
        **kw,  # type: ignore[arg-type]
    )


async def crash_and_restart(probe: Probe, clock: FakeClock, child_id: str) -> list[tuple[str, str]]:
    before = len(probe.events)
    starts = probe.starts()
    probe.crash(child_id)
    await eventually(lambda: clock.pending_sleeps == 1)
    clock.advance(10.0)
    await eventually(lambda: probe.starts() > starts and _settled(probe))
    await settle()
    return probe.events[before:]


def _settled(probe: Probe) -> bool:
    return all(not f.done() for f in probe.control.values() if f is not None)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("exit", "b"), ("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [
                ("exit", "b"),
                ("exit", "c"),
                ("exit", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ],
        ),
        (Strategy.REST_FOR_ONE, [("exit", "b"), ("exit", "c"), ("start", "b"), ("start", "c")]),
    ],
)
async def test_strategy_restarts_exactly_the_right_children_in_order(
    strategy: Strategy, expected: list[tuple[str, str]]
) -> None:
    probe, clock = Probe(), FakeClock()
    system = make_system(probe, ["a", "b", "c"], strategy, clock)
    await system.start()
    assert probe.events == [("start", "a"), ("start", "b"), ("start", "c")]

    assert await crash_and_restart(probe, clock, "b") == expected
    assert system.supervisor.children() == [(i, _running()) for i in "abc"]

    await system.stop()
    assert probe.events[-3:] == [("exit", "c"), ("exit", "b"), ("exit", "a")]
    assert system.state is ServiceState.TERMINATED_GRACEFULLY


def _running():  # type: ignore[no-untyped-def]
    from runtime.actors import ChildState

    return ChildState.RUNNING


@pytest.mark.asyncio
async def test_restart_types_decide_who_comes_back() -> None:
    probe, clock = Probe(), FakeClock()
    system = ActorSystem(
        [
            probe.spec("perm", restart=Restart.PERMANENT),
            probe.spec("trans", restart=Restart.TRANSIENT),
            probe.spec("temp", restart=Restart.TEMPORARY),
        ],
        clock=clock,
        backoff=Backoff(initial=0.0),
    )
    await system.start()

    probe.finish("perm")  # a permanent child is restarted even after a normal exit
    await eventually(lambda: probe.events.count(("start", "perm")) == 2)

    probe.finish("trans")  # a transient child that ends normally stays down
    probe.crash("temp")  # a temporary child never comes back
    await eventually(lambda: ("exit", "temp") in probe.events)
    await settle()
    states = dict(system.supervisor.children())
    assert states["trans"].value == "removed"
    assert states["temp"].value == "removed"
    assert probe.events.count(("start", "trans")) == 1
    assert probe.events.count(("start", "temp")) == 1

    await system.stop()


@pytest.mark.asyncio
async def test_transient_child_is_restarted_after_a_crash() -> None:
    probe, clock = Probe(), FakeClock()
    system = ActorSystem(
        [probe.spec("t", restart=Restart.TRANSIENT)], clock=clock, backoff=Backoff(initial=0.0)
    )
    await system.start()
    probe.crash("t")
    await eventually(lambda: probe.events.count(("start", "t")) == 2)
    await settle()
    # one crash, one restart: the restarted child runs on, nothing else starts
    assert probe.events.count(("start", "t")) == 2
    assert dict(system.supervisor.children())["t"].value == "running"
    await system.stop()


@pytest.mark.asyncio
async def test_backoff_is_applied_and_grows_with_fake_clock() -> None:
    probe, clock = Probe(), FakeClock()
    system = make_system(
        probe,
        ["a"],
        Strategy.ONE_FOR_ONE,
        clock,
        intensity=RestartIntensity(max_restarts=10, within=100.0),
    )
    await system.start()

    probe.crash("a")
    await eventually(lambda: clock.pending_sleeps == 1)
    await settle()
    assert probe.starts() == 1, "restarted before the backoff elapsed"
    assert 0.5 <= clock.sleeps[-1] <= 1.0  # initial 1.0, jitter up to half
    clock.advance(clock.sleeps[-1] - 0.01)
    await settle()
    assert probe.starts() == 1, "restarted before the backoff elapsed"
    clock.advance(0.02)
    await eventually(lambda: probe.starts() == 2)

    probe.crash("a")
    await eventually(lambda: clock.pending_sleeps == 1)
    assert 1.0 <= clock.sleeps[-1] <= 2.0  # second restart in the window: doubled
    clock.advance(2.0)
    await eventually(lambda: probe.starts() == 3)

    probe.crash("a")
    await eventually(lambda: clock.pending_sleeps == 1)
    assert 2.0 <= clock.sleeps[-1] <= 4.0
    clock.advance(4.0)
    await eventually(lambda: probe.starts() == 4)
    await system.stop()


@pytest.mark.asyncio
async def test_exceeding_the_intensity_escalates_and_stops_every_child() -> None:
    probe, clock = Probe(), FakeClock()
    system = make_system(
        probe,
        ["a", "b"],
        Strategy.ONE_FOR_ONE,
        clock,
        intensity=RestartIntensity(max_restarts=2, within=60.0),
    )
    await system.start()
    await crash_and_restart(probe, clock, "b")
    await crash_and_restart(probe, clock, "b")
    assert probe.starts() == 4

    probe.crash("b")  # third restart within 60 s: more than 2
    with pytest.raises(SupervisorEscalationError, match="more than 2 restarts") as info:
        await asyncio.wait_for(system.wait(), 2)
    assert isinstance(info.value.__cause__, Boom)
    assert probe.events[-2:] == [("exit", "b"), ("exit", "a")]
    assert probe.starts() == 4
    assert system.state is ServiceState.ERROR


@pytest.mark.asyncio
async def test_restarts_spread_beyond_the_window_do_not_escalate() -> None:
    probe, clock = Probe(), FakeClock()
    system = make_system(
        probe,
        ["a"],
        Strategy.ONE_FOR_ONE,
        clock,
        intensity=RestartIntensity(max_restarts=1, within=5.0),
    )
    await system.start()
    for _ in range(4):
        await crash_and_restart(probe, clock, "a")  # advances 10 s each time
    assert probe.starts() == 5
    assert system.state is ServiceState.RUNNING
    await system.stop()


@pytest.mark.asyncio
async def test_escalation_reaches_the_parent_which_restarts_the_subtree() -> None:
    probe, clock = Probe(), FakeClock()
    inner = supervisor_spec(
        "inner",
        [probe.spec("x"), probe.spec("y")],
        intensity=RestartIntensity(max_restarts=0, within=60.0),
        backoff=Backoff(initial=0.0),
    )
    system = ActorSystem(
        [probe.spec("before"), inner],
        clock=clock,
        backoff=Backoff(initial=0.0),
        intensity=RestartIntensity(max_restarts=5, within=60.0),
    )
    await system.start()
    probe.crash("x")  # inner allows no restart: it stops y and fails to root
    await eventually(lambda: probe.events.count(("start", "x")) == 2)
    await eventually(lambda: probe.events.count(("start", "y")) == 2)
    assert probe.events[3:] == [
        ("exit", "x"),
        ("exit", "y"),
        ("start", "x"),
        ("start", "y"),
    ]
    assert probe.events.count(("start", "before")) == 1  # one_for_one at the root
    await system.stop()


@pytest.mark.asyncio
async def test_child_failing_to_start_fails_the_start_with_its_own_error() -> None:
    probe = Probe()
    error = ValueError("cannot open the database")
    system = ActorSystem(
        [probe.spec("a"), probe.spec("bad", fail_start=error), probe.spec("c")],
        clock=FakeClock(),
    )
    with pytest.raises(ValueError, match="cannot open the database") as info:
        await system.start()
    assert info.value is error
    # a was started then stopped again; c was never started
    assert probe.events == [("start", "a"), ("start", "bad"), ("exit", "a")]
    assert system.state is ServiceState.ERROR


@pytest.mark.asyncio
async def test_child_returning_before_ready_fails_the_start() -> None:
    async def quits(ctx: ChildContext) -> None:
        return None

    system = ActorSystem([ChildSpec(id="quits", start=quits)])
    with pytest.raises(ChildStartError, match="returned before signalling ready"):
        await system.start()


@pytest.mark.asyncio
async def test_child_never_ready_times_out() -> None:
    async def hangs(ctx: ChildContext) -> None:
        await asyncio.Event().wait()

    system = ActorSystem([ChildSpec(id="hangs", start=hangs, start_timeout=0.05)])
    with pytest.raises(ChildStartError, match="did not signal ready within"):
        await system.start()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.mark.asyncio
async def test_a_child_that_ignores_stop_is_cancelled_after_its_timeout() -> None:
    cancelled = asyncio.Event()

    async def stubborn(ctx: ChildContext) -> None:
        ctx.ready()
        try:
            await asyncio.Event().wait()  # never looks at the stop request
        except asyncio.CancelledError:
            cancelled.set()
            raise

    system = ActorSystem([ChildSpec(id="stubborn", start=stubborn, shutdown_timeout=0.05)])
    await system.start()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await system.stop()
    assert cancelled.is_set()
    assert loop.time() - began < 1.0
    assert system.state is ServiceState.TERMINATED_GRACEFULLY


@pytest.mark.asyncio
async def test_duplicate_child_ids_are_refused() -> None:
    probe = Probe()
    with pytest.raises(ValueError, match=r"duplicate child ids \['a'\]"):
        ActorSystem([probe.spec("a"), probe.spec("a")])
