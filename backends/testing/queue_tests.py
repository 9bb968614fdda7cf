"""Conformance of ``Queues``: delivery, leases, per-key order, delays, wake-ups."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.protocols import Backend
from backends.testing.base import ConformanceBase, cancel_quietly, payloads
from backends.testing.clock import ManualClock

Q = "conformance"
OTHER = "conformance-other"


class QueueConformance(ConformanceBase):
    """Queues: at-least-once delivery with leases, keyed order, delayed messages."""

    @pytest.mark.asyncio
    async def test_queue_publish_claim_ack(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [(None, b"hello")])
        [message] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert (message.queue, message.key, message.payload) == (Q, None, b"hello")
        assert message.attempts == 0
        await backend.queues.ack(Q, [message.id])
        assert await backend.queues.depth(Q) == 0
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []

    @pytest.mark.asyncio
    async def test_queue_claims_oldest_first_up_to_limit(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [(None, b"0"), (None, b"1"), (None, b"2")])
        await backend.queues.publish(Q, [(None, b"3"), (None, b"4")])
        first = await backend.queues.claim(Q, "c1", limit=2, lease_seconds=30)
        second = await backend.queues.claim(Q, "c1", limit=2, lease_seconds=30)
        rest = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert payloads(first) == [b"0", b"1"]
        assert payloads(second) == [b"2", b"3"]
        assert payloads(rest) == [b"4"]
        ids = [m.id for m in (*first, *second, *rest)]
        assert ids == sorted(ids)
        assert len(set(ids)) == 5

    @pytest.mark.asyncio
    async def test_queue_lease_hides_claimed_messages(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [(None, b"a"), (None, b"b")])
        first = await backend.queues.claim(Q, "c1", limit=1, lease_seconds=30)
        second = await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30)
        assert payloads(first) == [b"a"]
        assert payloads(second) == [b"b"]
        assert await backend.queues.claim(Q, "c3", limit=10, lease_seconds=30) == []
        assert await backend.queues.depth(Q) == 2

    @pytest.mark.asyncio
    async def test_queue_nack_redelivers_and_counts_attempts(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [(None, b"job")])
        [first] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        await backend.queues.nack(Q, [first.id])
        [again] = await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30)
        assert (again.id, again.payload, again.attempts) == (first.id, b"job", 1)
        await backend.queues.nack(Q, [again.id])
        [third] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert third.attempts == 2

    @pytest.mark.asyncio
    async def test_queue_nack_with_delay(self, backend: Backend, clock: ManualClock) -> None:
        await backend.queues.publish(Q, [(None, b"job")])
        [message] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        await backend.queues.nack(Q, [message.id], delay_seconds=30)
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []
        assert await backend.queues.next_available(Q) == clock.after(30)
        clock.advance(29)
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []
        clock.advance(1)
        [again] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert (again.id, again.attempts) == (message.id, 1)

    @pytest.mark.asyncio
    async def test_queue_expired_lease_held_until_requeue_expired(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.queues.publish(Q, [(None, b"job")])
        [message] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=10)
        clock.advance(5)
        assert await backend.queues.requeue_expired() == 0
        clock.advance(6)
        # Redelivery is the liveness check's decision, not a side effect of claiming.
        assert await backend.queues.claim(Q, "c2", limit=10, lease_seconds=10) == []
        assert await backend.queues.requeue_expired() == 1
        assert await backend.queues.requeue_expired() == 0
        [again] = await backend.queues.claim(Q, "c2", limit=10, lease_seconds=10)
        assert (again.id, again.payload, again.attempts) == (message.id, b"job", 1)

    @pytest.mark.asyncio
    async def test_queue_requeue_consumer(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [(None, b"a"), (None, b"b")])
        await backend.queues.publish(OTHER, [(None, b"c")])
        assert payloads(await backend.queues.claim(Q, "dead", limit=1, lease_seconds=60)) == [b"a"]
        assert payloads(await backend.queues.claim(Q, "alive", limit=1, lease_seconds=60)) == [b"b"]
        assert payloads(await backend.queues.claim(OTHER, "dead", 1, 60)) == [b"c"]

        assert await backend.queues.requeue_consumer("dead") == 2
        assert await backend.queues.requeue_consumer("nobody") == 0
        again = await backend.queues.claim(Q, "c3", limit=10, lease_seconds=60)
        assert [(m.payload, m.attempts) for m in again] == [(b"a", 1)]  # b stays leased
        other = await backend.queues.claim(OTHER, "c3", limit=10, lease_seconds=60)
        assert [(m.payload, m.attempts) for m in other] == [(b"c", 1)]

    @pytest.mark.asyncio
    async def test_queue_key_is_exclusive_while_leased(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [("A", b"a1"), ("A", b"a2"), ("B", b"b1")])
        [a1] = await backend.queues.claim(Q, "c1", limit=1, lease_seconds=30)
        assert a1.payload == b"a1"
        # a2 waits for a1, whoever asks; B is not held up by A.
        assert payloads(await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30)) == [b"b1"]
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []
        await backend.queues.ack(Q, [a1.id])
        assert payloads(await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30)) == [b"a2"]

    @pytest.mark.asyncio
    async def test_queue_key_batch_keeps_publication_order(self, backend: Backend) -> None:
        # One claim may take several messages of a key (the executor handles one
        # execution's events in one pass), always in publication order.
        await backend.queues.publish(Q, [("A", b"a1"), ("B", b"b1"), ("A", b"a2")])
        await backend.queues.publish(Q, [(None, b"n1"), ("A", b"a3")])
        batch = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert payloads(batch) == [b"a1", b"b1", b"a2", b"n1", b"a3"]
        assert [m.key for m in batch] == ["A", "B", "A", None, "A"]
        await backend.queues.publish(Q, [("A", b"a4"), ("C", b"c1")])
        assert payloads(await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30)) == [b"c1"]

    @pytest.mark.asyncio
    async def test_queue_key_held_by_any_leased_message(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [("A", b"a1"), ("A", b"a2")])
        a1, a2 = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        await backend.queues.nack(Q, [a1.id])
        # a1 is free again, but a2 of the same key is still leased.
        assert await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30) == []
        await backend.queues.ack(Q, [a2.id])
        [again] = await backend.queues.claim(Q, "c2", limit=10, lease_seconds=30)
        assert (again.payload, again.attempts) == (b"a1", 1)

    @pytest.mark.asyncio
    async def test_queue_key_is_not_held_by_a_delayed_message(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        """A delayed wake-up (or a nacked retry) must not stall the execution's other
        events until it is due: only a lease holds a key."""
        await backend.queues.publish(Q, [("A", b"wake")], available_at=clock.after(3600))
        await backend.queues.publish(Q, [("A", b"a1"), ("B", b"b1")])
        batch = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert payloads(batch) == [b"a1", b"b1"]
        await backend.queues.ack(Q, [m.id for m in batch])
        clock.advance(3600)
        assert payloads(await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)) == [
            b"wake"
        ]

    @pytest.mark.asyncio
    async def test_queue_available_at_hides_until_due(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        assert await backend.queues.next_available(Q) is None
        await backend.queues.publish(Q, [(None, b"later")], available_at=clock.after(60))
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []
        assert await backend.queues.depth(Q) == 1
        assert await backend.queues.next_available(Q) == clock.after(60)
        clock.advance(59)
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []
        clock.advance(1)
        assert payloads(await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)) == [
            b"later"
        ]
        # Leased messages are not "available".
        assert await backend.queues.next_available(Q) is None
        await backend.queues.publish(Q, [(None, b"now")])
        due = await backend.queues.next_available(Q)
        assert due is not None
        assert due <= clock()

    @pytest.mark.asyncio
    async def test_queue_depth_counts_leased_messages(self, backend: Backend) -> None:
        assert await backend.queues.depth(Q) == 0
        await backend.queues.publish(Q, [(None, b"1"), ("k", b"2"), (None, b"3")])
        [first] = await backend.queues.claim(Q, "c1", limit=1, lease_seconds=30)
        assert await backend.queues.depth(Q) == 3
        await backend.queues.ack(Q, [first.id])
        assert await backend.queues.depth(Q) == 2
        assert await backend.queues.depth(OTHER) == 0

    @pytest.mark.asyncio
    async def test_queues_are_independent(self, backend: Backend) -> None:
        await backend.queues.publish(Q, [("K", b"in-q")])
        await backend.queues.publish(OTHER, [("K", b"in-other")])
        [mine] = await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30)
        assert mine.payload == b"in-q"
        # The same key in another queue is another key.
        [theirs] = await backend.queues.claim(OTHER, "c2", limit=10, lease_seconds=30)
        assert (theirs.payload, theirs.queue) == (b"in-other", OTHER)
        await backend.queues.ack(Q, [mine.id])
        await backend.queues.ack(Q, [theirs.id])  # wrong queue: changes nothing
        assert await backend.queues.depth(Q) == 0
        assert await backend.queues.depth(OTHER) == 1

    @pytest.mark.asyncio
    async def test_queue_wait_wakes_on_publish(self, backend: Backend) -> None:
        waiter = asyncio.create_task(backend.queues.wait(Q, at_most=10))
        try:
            await asyncio.sleep(0.05)
            assert not waiter.done(), "wait() returned although nothing was published"
            published = time.monotonic()
            await backend.queues.publish(Q, [(None, b"wake")])
            await asyncio.wait_for(waiter, timeout=5)
            assert time.monotonic() - published < 1.0
        finally:
            await cancel_quietly(waiter)

    @pytest.mark.asyncio
    async def test_queue_wait_returns_at_once_after_an_unseen_publish(
        self, backend: Backend
    ) -> None:
        """A publish between a consumer's empty claim and its wait() must not be lost."""
        assert await backend.queues.claim(Q, "c1", limit=10, lease_seconds=30) == []
        await backend.queues.publish(Q, [(None, b"in the gap")])
        started = time.monotonic()
        await asyncio.wait_for(backend.queues.wait(Q, at_most=10), timeout=5)
        assert time.monotonic() - started < 1.0

    @pytest.mark.asyncio
    async def test_queue_wait_times_out(self, backend: Backend) -> None:
        started = time.monotonic()
        await asyncio.wait_for(backend.queues.wait(Q, at_most=0.1), timeout=5)
        elapsed = time.monotonic() - started
        assert 0.08 <= elapsed < 2.0

    @pytest.mark.asyncio
    async def test_queue_wait_ignores_other_queues(self, backend: Backend) -> None:
        waiter = asyncio.create_task(backend.queues.wait(Q, at_most=10))
        try:
            await asyncio.sleep(0.05)
            await backend.queues.publish(OTHER, [(None, b"not for you")])
            await asyncio.sleep(0.1)
            assert not waiter.done(), "a publish to another queue woke wait()"
            await backend.queues.publish(Q, [(None, b"for you")])
            await asyncio.wait_for(waiter, timeout=5)
        finally:
            await cancel_quietly(waiter)

    @pytest.mark.asyncio
    async def test_queue_concurrent_consumers_share_without_duplicates(
        self, backend: Backend
    ) -> None:
        published = [(f"k{i % 5}" if i % 2 else None, f"{i:03}".encode()) for i in range(80)]
        await backend.queues.publish(Q, published)
        seen: list[bytes] = []

        async def consume(consumer: str) -> None:
            while True:
                batch = await backend.queues.claim(Q, consumer, limit=3, lease_seconds=60)
                if not batch:
                    if await backend.queues.depth(Q) == 0:
                        return
                    await backend.queues.wait(Q, at_most=0.01)
                    continue
                seen.extend(payloads(batch))
                await asyncio.sleep(0)  # hold the leases while others claim
                await backend.queues.ack(Q, [m.id for m in batch])

        async with asyncio.timeout(30), asyncio.TaskGroup() as group:
            for n in range(5):
                group.create_task(consume(f"consumer-{n}"))

        assert len(seen) == len(set(seen)), "a message was delivered twice"
        assert sorted(seen) == sorted(p for _, p in published)
        for key in {k for k, _ in published if k is not None}:
            in_order = [p for k, p in published if k == key]
            assert [p for p in seen if p in in_order] == in_order, f"key {key} out of order"
