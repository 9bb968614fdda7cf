"""Durable queues in memory: leases, per-key ordering, delayed messages.

Each claim scans its queue from the oldest message (O(queue length)); acked messages
are deleted, so a queue is as long as its backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from backends.memory.data import Message, View
from backends.memory.session import Notifier, Session, require_aware
from backends.protocols import QueueMessage


def _publish(
    view: View,
    queue: str,
    items: Sequence[tuple[str | None, bytes]],
    available_at: datetime | None,
) -> None:
    if not items:
        return
    at = view.clock() if available_at is None else require_aware(available_at, "available_at")
    messages = view.queue(queue)
    for key, payload in items:
        message_id = view.data.allocate_message_id()
        # bytes(): a caller's bytearray or memoryview must not change what is queued
        messages.set(
            message_id,
            Message(id=message_id, key=key, payload=bytes(payload), available_at=at),
        )
    view.wake.add(queue)


def _claim(
    view: View, queue: str, consumer: str, limit: int, lease_seconds: float
) -> list[QueueMessage]:
    if limit <= 0:
        return []
    now = view.clock()
    messages = view.queue(queue)
    pending = list(messages.values())
    # A key with a leased message anywhere in the queue is held by that lease.
    blocked = {m.key for m in pending if m.consumer is not None and m.key is not None}
    lease_until = now + timedelta(seconds=lease_seconds)
    claimed: list[QueueMessage] = []
    for message in pending:
        if len(claimed) >= limit:
            break
        if message.consumer is not None or message.key in blocked:
            continue
        if message.available_at > now:
            # A delayed message does not hold its key: later events go first.
            continue
        messages.set(
            message.id,
            msgspec.structs.replace(message, consumer=consumer, lease_until=lease_until),
        )
        claimed.append(
            QueueMessage(
                id=message.id,
                queue=queue,
                key=message.key,
                payload=message.payload,
                attempts=message.attempts,
            )
        )
    return claimed


def _ack(view: View, queue: str, ids: Sequence[int]) -> None:
    messages = view.queue(queue)
    for message_id in ids:
        message = messages.get(message_id)
        if message is not None and messages.delete(message_id) and message.key is not None:
            # The next message of that key may be claimable now.
            view.wake.add(queue)


def _release(view: View, queue: str, message: Message, available_at: datetime) -> None:
    view.queue(queue).set(
        message.id,
        msgspec.structs.replace(
            message,
            consumer=None,
            lease_until=None,
            attempts=message.attempts + 1,
            available_at=available_at,
        ),
    )
    view.wake.add(queue)


def _nack(view: View, queue: str, ids: Sequence[int], delay_seconds: float) -> None:
    available_at = view.clock() + timedelta(seconds=max(delay_seconds, 0.0))
    messages = view.queue(queue)
    for message_id in ids:
        message = messages.get(message_id)
        # Only a leased message can be released; nacking one twice counts once.
        if message is not None and message.consumer is not None:
            _release(view, queue, message, available_at)


def _requeue(view: View, consumer: str | None) -> int:
    """Release the leases of ``consumer``, or (None) every lease past its deadline."""
    now = view.clock()
    count = 0
    for name in view.queue_names():
        for message in list(view.queue(name).values()):
            if message.consumer is None:
                continue
            if consumer is None:
                expired = message.lease_until is not None and message.lease_until <= now
                if not expired:
                    continue
            elif message.consumer != consumer:
                continue
            _release(view, name, message, now)
            count += 1
    return count


def _next_available(view: View, queue: str) -> datetime | None:
    messages = list(view.queue(queue).values())
    # A message whose key a lease holds waits for that ack or nack (which wakes
    # consumers), not for its date: counting it would make idle consumers spin.
    held = {m.key for m in messages if m.consumer is not None and m.key is not None}
    dates = [
        m.available_at
        for m in messages
        if m.consumer is None and (m.key is None or m.key not in held)
    ]
    return min(dates, default=None)


class MemoryQueues:
    """The Queues protocol over a session (autocommit or one transaction)."""

    def __init__(self, session: Session, notifier: Notifier) -> None:
        self._session = session
        self._notifier = notifier

    async def publish(
        self,
        queue: str,
        items: Sequence[tuple[str | None, bytes]],
        *,
        available_at: datetime | None = None,
    ) -> None:
        """Append ``(key, payload)`` items; hidden until ``available_at`` if given."""
        await self._session.write(lambda v: _publish(v, queue, items, available_at))

    async def claim(
        self,
        queue: str,
        consumer: str,
        limit: int,
        lease_seconds: float,
        *,
        prefetch_executions: bool = False,
    ) -> list[QueueMessage]:
        """Lease up to ``limit`` available messages to ``consumer``, oldest first.
        (``prefetch_executions`` is ignored: get_for_update reads the execution.)"""
        return await self._session.write(lambda v: _claim(v, queue, consumer, limit, lease_seconds))

    async def ack(self, queue: str, ids: Sequence[int]) -> None:
        """Delete the messages."""
        await self._session.write(lambda v: _ack(v, queue, ids))

    async def nack(self, queue: str, ids: Sequence[int], *, delay_seconds: float = 0.0) -> None:
        """Release the leases; the messages come back after ``delay_seconds``."""
        await self._session.write(lambda v: _nack(v, queue, ids, delay_seconds))

    async def requeue_consumer(self, consumer: str) -> int:
        """Release every lease ``consumer`` holds, in every queue."""
        return await self._session.write(lambda v: _requeue(v, consumer))

    async def requeue_expired(self) -> int:
        """Release every lease past its deadline. Until then an expired lease still
        holds its message (and its key): redelivery is the liveness check's call."""
        return await self._session.write(lambda v: _requeue(v, None))

    async def depth(self, queue: str) -> int:
        """Messages in the queue, leased or not."""
        return await self._session.read(lambda v: sum(1 for _ in v.queue(queue).items()))

    async def next_available(self, queue: str) -> datetime | None:
        """When the earliest message not leased becomes visible (None: none)."""
        return await self._session.read(lambda v: _next_available(v, queue))

    async def wait(self, queue: str, at_most: float) -> None:
        """Return once a publish, nack, requeue or keyed ack on ``queue`` commits, or
        after ``at_most`` real seconds."""
        await self._notifier.wait(queue, at_most)
