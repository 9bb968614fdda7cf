"""Conformance of the transactional inbox: a batch and its unit of work commit
together or not at all; handled batches never come back; one key's messages are
handled in order, by one consumer at a time."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from backends.protocols import Backend, Inbox, QueueMessage
from backends.testing.base import ConformanceBase, make_execution, payloads
from backends.testing.clock import ManualClock

IN = "inbox-in"
OUT = "inbox-out"


class _Boom(Exception):
    pass


async def _handle(inbox: Inbox, limit: int) -> list[QueueMessage]:
    """Handle one batch: publish one message per message handled."""
    async with inbox.batch(limit) as batch:
        if batch.messages:
            await batch.stores.queues.publish(OUT, [(m.key, m.payload) for m in batch.messages])
        return batch.messages


class InboxConformance(ConformanceBase):
    """``Backend.inbox``: the transactional outbox, written once for every component."""

    @pytest.mark.asyncio
    async def test_inbox_handler_failing_after_publishing_leaves_nothing_and_the_batch_back(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.queues.publish(IN, [("e1", b"one"), (None, b"two")])
        inbox = backend.inbox(IN, "c1", lease_seconds=30)

        async def fail_after_writing() -> None:
            async with inbox.batch(10) as batch:
                assert payloads(batch.messages) == [b"one", b"two"]
                await batch.stores.executions.save(make_execution("e1", clock()))
                await batch.stores.queues.publish(OUT, [(None, b"effect")])
                raise _Boom

        with pytest.raises(_Boom):
            await fail_after_writing()
        assert await backend.queues.depth(OUT) == 0
        assert await backend.executions.get("e1") is None
        # claimable again at once: the claim was part of what rolled back
        again = await _handle(backend.inbox(IN, "c2", lease_seconds=30), 10)
        assert payloads(again) == [b"one", b"two"]
        outputs = await backend.queues.claim(OUT, "reader", limit=10, lease_seconds=30)
        assert payloads(outputs) == [b"one", b"two"]

    @pytest.mark.asyncio
    async def test_inbox_handled_batches_never_come_back(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.queues.publish(IN, [("e1", b"a"), ("e2", b"b"), (None, b"c")])
        inbox = backend.inbox(IN, "c1", lease_seconds=30)
        handled = await _handle(inbox, 2)
        handled += await _handle(inbox, 2)
        assert sorted(payloads(handled)) == [b"a", b"b", b"c"]
        clock.advance(3600)  # far past any lease
        assert await backend.queues.requeue_expired() == 0
        assert await backend.queues.requeue_consumer("c1") == 0
        assert await _handle(backend.inbox(IN, "c2", lease_seconds=30), 10) == []
        assert await backend.queues.depth(IN) == 0
        assert await backend.queues.depth(OUT) == 3

    @pytest.mark.asyncio
    async def test_inbox_retry_hands_back_only_what_it_names(self, backend: Backend) -> None:
        await backend.queues.publish(IN, [(None, b"ok"), (None, b"again")])
        inbox = backend.inbox(IN, "c1", lease_seconds=30)
        async with inbox.batch(10) as batch:
            batch.retry([m for m in batch.messages if m.payload == b"again"], 0.0)
        [back] = await _handle(inbox, 10)
        assert back.payload == b"again"
        assert back.attempts == 1
        assert await _handle(inbox, 10) == []

    @pytest.mark.asyncio
    async def test_inbox_handles_one_key_in_order_by_one_consumer_at_a_time(
        self, backend: Backend
    ) -> None:
        items = [("k1", b"1"), ("k2", b"a"), ("k1", b"2"), ("k2", b"b"), ("k1", b"3")]
        await backend.queues.publish(IN, items)
        first = backend.inbox(IN, "c1", lease_seconds=30)
        second = backend.inbox(IN, "c2", lease_seconds=30)
        order: list[tuple[str | None, bytes]] = []
        async with first.batch(1) as held:
            assert [(m.key, m.payload) for m in held.messages] == [("k1", b"1")]
            # another consumer, as another process would be: none of this task's context
            other = asyncio.create_task(_handle(second, 10), context=contextvars.Context())
            done, _ = await asyncio.wait({other}, timeout=0.5)
            if done:
                # Units of work that run side by side (SQL servers): k1 stays with the
                # first consumer until it commits; the second gets the other key.
                assert [(m.key, m.payload) for m in other.result()] == [("k2", b"a"), ("k2", b"b")]
            # else a backend whose units of work run one at a time: it waits
            await held.stores.queues.publish(OUT, [(None, b"1")])
        order += [("k1", b"1")]
        order += [(m.key, m.payload) for m in await other]
        for _ in range(10):
            batch = await _handle(first if len(order) % 2 else second, 1)
            order += [(m.key, m.payload) for m in batch]
        assert [p for k, p in order if k == "k1"] == [b"1", b"2", b"3"]
        assert [p for k, p in order if k == "k2"] == [b"a", b"b"]

    @pytest.mark.asyncio
    async def test_inbox_received_messages_settle_with_what_their_handler_wrote(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.queues.publish(IN, [(None, b"job-1"), (None, b"job-2")])
        inbox = backend.inbox(IN, "worker", lease_seconds=30)
        received = await inbox.receive(10)
        assert payloads(received) == [b"job-1", b"job-2"]
        assert await backend.inbox(IN, "other", lease_seconds=30).receive(10) == []

        async def fail_after_writing() -> None:
            async with inbox.settle(received[:1]) as tx:
                await tx.queues.publish(OUT, [(None, b"result-1")])
                raise _Boom

        with pytest.raises(_Boom):
            await fail_after_writing()
        assert await backend.queues.depth(OUT) == 0
        assert await backend.queues.depth(IN) == 2  # still leased, not lost
        async with inbox.settle(received[:1]) as tx:
            await tx.queues.publish(OUT, [(None, b"result-1")])
        assert await backend.queues.depth(IN) == 1
        assert await backend.queues.depth(OUT) == 1
        await inbox.give_back(received[1:])
        [back] = await backend.inbox(IN, "other", lease_seconds=30).receive(10)
        assert back.payload == b"job-2"
