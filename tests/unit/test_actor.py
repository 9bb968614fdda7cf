"""Actors: one message at a time, tell/ask, backpressure, restarts keep the mailbox."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime.actors import (
    Actor,
    ActorNotFoundError,
    ActorSystem,
    AskTimeoutError,
    Backoff,
    BatchActor,
    MailboxClosedError,
    MailboxFullError,
    OverflowPolicy,
    SideActor,
    actor_spec,
)
from tests.unit.helpers import eventually, settle


class Recorder(Actor[Any]):
    """Records what it handles; measures how many handlers ever overlapped."""

    handled: list[Any]
    overlap = 0

    def __init__(self, journal: list[Any]) -> None:
        self.handled = journal
        self.active = 0

    async def receive(self, message: Any) -> Any:
        self.active += 1
        Recorder.overlap = max(Recorder.overlap, self.active)
        try:
            if isinstance(message, tuple) and message[0] == "sleep":
                await asyncio.sleep(message[1])
            elif isinstance(message, tuple) and message[0] == "wait":
                await message[1].wait()
            elif message == "boom":
                raise RuntimeError("boom")
            await asyncio.sleep(0)
            self.handled.append(message)
            return ("echo", message)
        finally:
            self.active -= 1


def recorder_system(journal: list[Any], **spec: Any) -> ActorSystem:
    spec.setdefault("mailbox_size", 100)
    return ActorSystem(
        [actor_spec("rec", lambda: Recorder(journal), **spec)], backoff=Backoff(initial=0.0)
    )


@pytest.mark.asyncio
async def test_messages_are_handled_one_at_a_time_in_order() -> None:
    journal: list[Any] = []
    Recorder.overlap = 0
    async with recorder_system(journal) as system:
        ref = system.ref("rec")
        for i in range(50):
            await ref.tell(i)
        assert await ref.ask("last", timeout=2) == ("echo", "last")
    assert journal == [*range(50), "last"]
    assert Recorder.overlap == 1


@pytest.mark.asyncio
async def test_tell_waits_on_a_full_mailbox_and_tell_nowait_raises() -> None:
    journal: list[Any] = []
    gate = asyncio.Event()
    system = recorder_system(journal, mailbox_size=2)
    async with system:
        ref = system.ref("rec")
        await ref.tell(("wait", gate))  # taken by the actor, in flight
        await eventually(lambda: ref.statistics().in_flight == 1)
        await ref.tell("queued")
        producer = asyncio.create_task(ref.tell("third"), name="producer")
        await settle()
        assert not producer.done(), "tell must wait while the mailbox is full"
        with pytest.raises(MailboxFullError):
            ref.tell_nowait("refused")
        assert ref.statistics().rejected == 1
        gate.set()
        await asyncio.wait_for(producer, 2)
        await ref.ask("sync", timeout=2)
    assert journal[1:] == ["queued", "third", "sync"]


@pytest.mark.asyncio
async def test_fail_overflow_policy_makes_tell_raise() -> None:
    gate = asyncio.Event()
    async with recorder_system([], mailbox_size=1, overflow=OverflowPolicy.FAIL) as system:
        ref = system.ref("rec")
        await ref.tell(("wait", gate))
        with pytest.raises(MailboxFullError):
            await ref.tell("more")
        gate.set()


@pytest.mark.asyncio
async def test_ask_times_out_and_the_late_reply_never_reaches_the_mailbox() -> None:
    journal: list[Any] = []
    async with recorder_system(journal) as system:
        ref = system.ref("rec")
        with pytest.raises(AskTimeoutError, match=r"'rec' did not answer tuple within 0\.05s"):
            await ref.ask(("sleep", 0.2), timeout=0.05)
        await eventually(lambda: len(journal) == 1)  # the handler still finished
        await settle()
        stats = ref.statistics()
        assert stats.received == 1, "the late reply must not be delivered as a message"
        assert (stats.size, stats.in_flight) == (0, 0)
        assert await ref.ask("next", timeout=1) == ("echo", "next")
    assert journal == [("sleep", 0.2), "next"]


@pytest.mark.asyncio
async def test_ask_gets_the_handler_error_and_the_actor_restarts_with_its_mailbox() -> None:
    journal: list[Any] = []
    async with recorder_system(journal) as system:
        ref = system.ref("rec")
        await ref.tell(("sleep", 0.01))
        failing = asyncio.create_task(ref.ask("boom", timeout=2), name="asker")
        await ref.tell("after-crash")  # queued behind the failing message
        with pytest.raises(RuntimeError, match="boom"):
            await failing
        assert await ref.ask("ping", timeout=2) == ("echo", "ping")
        assert system.ref("rec") is ref, "a restart keeps the ref and the mailbox"
        assert system.supervisor.restarts == 1
    assert journal == [("sleep", 0.01), "after-crash", "ping"]
    with pytest.raises(MailboxClosedError):
        await ref.tell("too late")
    with pytest.raises(ActorNotFoundError):
        system.ref("rec")


@pytest.mark.asyncio
async def test_graceful_stop_finishes_the_current_message_and_keeps_the_rest() -> None:
    journal: list[Any] = []
    system = recorder_system(journal, shutdown_timeout=5.0)
    await system.start()
    ref = system.ref("rec")
    await ref.tell(("sleep", 0.1))
    await ref.tell("never")
    await eventually(lambda: ref.statistics().in_flight >= 1)
    await system.stop()
    assert journal == [("sleep", 0.1)]
    assert not ref.alive


class Grouping(BatchActor[int]):
    """Records each batch; a negative number fails it, -1 as an answered error."""

    answered_errors = (KeyError,)

    def __init__(self, batches: list[list[int]], gate: asyncio.Event) -> None:
        self.batches = batches
        self.gate = gate

    async def receive_batch(self, messages: Any) -> Any:
        await self.gate.wait()
        self.batches.append(list(messages))
        if -1 in messages:
            raise KeyError("answered")
        if -2 in messages:
            raise ValueError("a crash")
        return sum(messages)


@pytest.mark.asyncio
async def test_a_batch_actor_gets_what_its_mailbox_holds_at_once() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()
    side = SideActor("grouping", Grouping(batches, gate), mailbox_size=8)
    asks = [asyncio.create_task(side.ref.ask(n, timeout=5)) for n in (1, 2, 3)]
    await settle()
    gate.set()
    # every asker of a batch gets the batch's answer
    assert await asyncio.gather(*asks) == [6, 6, 6]
    assert batches == [[1, 2, 3]]
    # an answered error reaches its askers only; the actor goes on
    with pytest.raises(KeyError):
        await side.ref.ask(-1, timeout=5)
    assert await side.ref.ask(4, timeout=5) == 4
    assert not side.task.done()
    # any other error reaches its askers and crashes the actor: its owner sees it
    with pytest.raises(ValueError, match="a crash"):
        await side.ref.ask(-2, timeout=5)
    await asyncio.wait({side.task}, timeout=5)
    assert isinstance(side.task.exception(), ValueError)
    assert batches == [[1, 2, 3], [-1], [4], [-2]]
