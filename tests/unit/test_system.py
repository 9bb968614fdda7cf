"""The actor system: registry, lifecycle, stopping busy actors, signals."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from runtime.actors import (
    Actor,
    ActorNotFoundError,
    ActorSystem,
    ChildContext,
    ChildSpec,
    IllegalTransitionError,
    Lifecycle,
    NameTakenError,
    Registry,
    ServiceState,
    actor_spec,
    supervisor_spec,
)
from tests.unit.helpers import eventually


class Busy(Actor[float]):
    """Handles a message by sleeping; records how each handler ended."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes

    async def receive(self, message: float) -> None:
        try:
            await asyncio.sleep(message)
        except asyncio.CancelledError:
            self.outcomes.append("cancelled")
            raise
        self.outcomes.append("finished")


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


@pytest.mark.asyncio
async def test_stopping_busy_actors_respects_timeouts_and_leaves_no_task() -> None:
    outcomes: list[str] = []
    system = ActorSystem(
        [
            actor_spec("quick", lambda: Busy(outcomes), mailbox_size=4, shutdown_timeout=2.0),
            supervisor_spec(
                "nested",
                [
                    actor_spec(
                        f"stuck{i}", lambda: Busy(outcomes), mailbox_size=4, shutdown_timeout=0.1
                    )
                    for i in range(3)
                ],
            ),
        ]
    )
    await system.start()
    await system.ref("quick").tell(0.2)  # finishes within its timeout
    for i in range(3):
        await system.ref(f"stuck{i}").tell(3600.0)  # must be cancelled after 0.1 s
    await eventually(
        lambda: all(system.ref(n).statistics().in_flight for n in system.registry.names())
    )

    loop = asyncio.get_running_loop()
    began = loop.time()
    await system.stop()
    elapsed = loop.time() - began
    assert elapsed < 0.1 * 3 + 0.2 + 1.0, f"stop took {elapsed:.2f}s"
    assert sorted(outcomes) == ["cancelled", "cancelled", "cancelled", "finished"]
    assert other_tasks() == set()
    assert system.registry.names() == []
    assert system.state is ServiceState.TERMINATED_GRACEFULLY


@pytest.mark.asyncio
async def test_immediate_stop_cancels_everything_at_once() -> None:
    outcomes: list[str] = []
    system = ActorSystem(
        [
            actor_spec(f"a{i}", lambda: Busy(outcomes), mailbox_size=2, shutdown_timeout=60.0)
            for i in range(3)
        ]
    )
    await system.start()
    for i in range(3):
        await system.ref(f"a{i}").tell(3600.0)
    await eventually(lambda: all(system.ref(f"a{i}").statistics().in_flight for i in range(3)))
    await asyncio.wait_for(system.stop(graceful=False), 1.0)
    assert outcomes == ["cancelled"] * 3
    assert other_tasks() == set()
    assert system.state is ServiceState.TERMINATED_FORCED


@pytest.mark.asyncio
async def test_cancelling_the_caller_of_stop_propagates() -> None:
    async def child(ctx: ChildContext) -> None:
        ctx.ready()
        await ctx.wait_stop_requested()
        await asyncio.sleep(3600)  # a slow, but not stuck, shutdown

    system = ActorSystem([ChildSpec(id="slow", start=child, shutdown_timeout=3600.0)])
    await system.start()
    stopper = asyncio.create_task(system.stop(), name="stopper")
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await asyncio.wait_for(system.stop(graceful=False), 1.0)
    assert other_tasks() == set()


@pytest.mark.asyncio
async def test_signals_first_graceful_then_immediate() -> None:
    outcomes: list[str] = []
    system = ActorSystem(
        [actor_spec("a", lambda: Busy(outcomes), mailbox_size=2, shutdown_timeout=60.0)]
    )
    runner = asyncio.create_task(system.run_until_signalled(), name="runner")
    await eventually(lambda: system.state is ServiceState.RUNNING)
    await system.ref("a").tell(3600.0)
    await eventually(lambda: system.ref("a").statistics().in_flight == 1)

    os.kill(os.getpid(), signal.SIGTERM)
    await eventually(lambda: system.state is ServiceState.TERMINATING)
    await asyncio.sleep(0.05)
    assert not runner.done(), "a graceful stop waits for the busy actor"
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(runner, 1.0)
    assert outcomes == ["cancelled"]
    assert system.state is ServiceState.TERMINATED_FORCED


@pytest.mark.asyncio
async def test_one_signal_stops_an_idle_system_gracefully() -> None:
    system = ActorSystem([actor_spec("a", lambda: Busy([]), mailbox_size=2)])
    runner = asyncio.create_task(system.run_until_signalled(), name="runner")
    await eventually(lambda: system.state is ServiceState.RUNNING)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(runner, 1.0)
    assert system.state is ServiceState.TERMINATED_GRACEFULLY


def test_registry_names_lookup_and_conflicts() -> None:
    from runtime.actors import ActorRef, Mailbox

    registry = Registry()
    ref: ActorRef[int] = ActorRef("x", Mailbox(1))
    registry.register("x", ref)
    assert registry.lookup("x") is ref
    with pytest.raises(NameTakenError, match="'x' is already registered"):
        registry.register("x", ActorRef("x", Mailbox(1)))
    with pytest.raises(
        ActorNotFoundError, match=r"no actor named 'y' is registered \(registered: x\)"
    ):
        registry.lookup("y")
    registry.unregister("x", ActorRef("x", Mailbox(1)))  # another ref: no effect
    assert "x" in registry
    registry.unregister("x", ref)
    assert "x" not in registry


def test_lifecycle_legal_and_illegal_transitions() -> None:
    lc = Lifecycle("worker")
    seen: list[tuple[ServiceState, ServiceState]] = []
    lc.add_listener(lambda old, new: seen.append((old, new)))
    lc.transition(ServiceState.RUNNING)
    lc.transition(ServiceState.TERMINATING)
    lc.transition(ServiceState.TERMINATED_GRACEFULLY)
    assert lc.state.is_terminal
    assert seen[0] == (ServiceState.CREATED, ServiceState.RUNNING)
    with pytest.raises(
        IllegalTransitionError, match="cannot go from TERMINATED_GRACEFULLY to RUNNING"
    ):
        lc.transition(ServiceState.RUNNING)

    lc2 = Lifecycle("executor")
    with pytest.raises(
        IllegalTransitionError, match="allowed from CREATED: ERROR, RUNNING, TERMINATING"
    ):
        lc2.transition(ServiceState.TERMINATED_FORCED)
    lc2.transition(ServiceState.ERROR)
    lc2.transition(ServiceState.TERMINATING)
    lc2.transition(ServiceState.TERMINATED_FORCED)


@pytest.mark.asyncio
async def test_a_system_cannot_start_twice() -> None:
    system = ActorSystem([])
    await system.start()
    with pytest.raises(RuntimeError, match="already started"):
        await system.start()
    await system.stop()
