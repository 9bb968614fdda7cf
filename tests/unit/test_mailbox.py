"""Mailboxes: bounded, backpressure, overflow policies, statistics, the durable protocol."""

from __future__ import annotations

import ast
import asyncio
import pathlib

import pytest

from runtime.actors import (
    Mailbox,
    MailboxClosedError,
    MailboxFullError,
    OverflowPolicy,
)
from tests.unit.helpers import settle


@pytest.mark.parametrize("size", [0, -1, 1.5, None, True])
def test_capacity_is_required_and_positive(size: object) -> None:
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        Mailbox(size)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_put_waits_while_full_and_put_nowait_raises() -> None:
    box: Mailbox[int] = Mailbox(2, name="box")
    await box.put(1)
    box.put_nowait(2)
    blocked = asyncio.create_task(box.put(3), name="blocked-put")
    await settle()
    assert not blocked.done()
    with pytest.raises(MailboxFullError, match="mailbox 'box' is full"):
        box.put_nowait(4)
    stats = box.statistics()
    assert (stats.size, stats.capacity, stats.received, stats.rejected) == (2, 2, 2, 1)
    assert stats.waiting_senders == 1

    batch = await box.receive(10)
    assert [d.message for d in batch] == [1, 2]
    await settle()
    assert not blocked.done(), "in-flight messages still count against the capacity"
    await box.ack(batch[:1])
    await asyncio.wait_for(blocked, 1)
    assert [d.message for d in await box.receive(10)] == [3]


@pytest.mark.asyncio
async def test_fail_policy_refuses_at_once() -> None:
    box: Mailbox[int] = Mailbox(1, OverflowPolicy.FAIL)
    await box.put(1)
    with pytest.raises(MailboxFullError):
        await box.put(2)
    assert box.statistics().rejected == 1


@pytest.mark.asyncio
async def test_cancelled_sender_leaves_no_trace() -> None:
    box: Mailbox[int] = Mailbox(1)
    await box.put(1)
    sender = asyncio.create_task(box.put(2), name="sender")
    await settle()
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    assert box.statistics().waiting_senders == 0
    assert box.statistics().received == 1


@pytest.mark.asyncio
async def test_nack_without_error_requeues_in_order_and_with_error_drops() -> None:
    box: Mailbox[str] = Mailbox(10)
    for m in "abcd":
        await box.put(m)
    batch = await box.receive(4)
    await box.ack(batch[:1])
    await box.nack(batch[1:2], error=RuntimeError("handler failed"))
    await box.nack(batch[2:])
    assert [d.message for d in await box.receive(10)] == ["c", "d"]
    stats = box.statistics()
    assert (stats.dropped, stats.redelivered, stats.in_flight) == (1, 2, 2)


@pytest.mark.asyncio
async def test_close_drains_then_raises_and_refuses_senders() -> None:
    box: Mailbox[int] = Mailbox(5)
    await box.put(1)
    waiting_receiver = None
    box.close()
    with pytest.raises(MailboxClosedError):
        box.put_nowait(2)
    assert [d.message for d in await box.receive(5)] == [1]
    with pytest.raises(MailboxClosedError):
        await box.receive(5)
    assert waiting_receiver is None


@pytest.mark.asyncio
async def test_close_wakes_a_waiting_receiver() -> None:
    box: Mailbox[int] = Mailbox(5)
    receiver = asyncio.create_task(box.receive(1), name="receiver")
    await settle()
    box.close()
    with pytest.raises(MailboxClosedError):
        await asyncio.wait_for(receiver, 1)


UNBOUNDED_QUEUES = {"Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"}


def test_the_kernel_creates_no_unbounded_queue() -> None:
    """asyncio/queue Queues need a positive maxsize; memory streams a size; no math.inf."""
    root = pathlib.Path(__file__).parents[2] / "runtime"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in UNBOUNDED_QUEUES:
                sizes = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "maxsize")]
                if not sizes or (
                    isinstance(sizes[0], ast.Constant) and sizes[0].value in (0, None)
                ):
                    offenders.append(f"{path}:{node.lineno}")
            if name == "create_memory_object_stream" and not (node.args or node.keywords):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == []
