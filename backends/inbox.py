"""The transactional durable inbox over a backend's queue tables and transactions.

A component reads its queue through an :class:`~backends.protocols.Inbox`, never
through claims and acks of its own: the inbox hands it a batch of messages together
with the unit of work they are handled in, so what the handler saves and publishes
commits with the batch's acks, or nothing does (the transactional outbox, written
once). Memory, SQLite, PostgreSQL and MySQL share this implementation: the claim
runs inside the transaction, so a failure rolls the claim back too and the batch is
claimable again at once, with no lease to wait out; per-key order and "one consumer
per key at a time" are the queues' own rules. A backend with other means (Kafka's
producer transactions carrying consumed offsets) provides its own ``Inbox``.

Two ways to read, for two kinds of handler:

* :meth:`TransactionalInbox.batch`: claim and handle in one unit of work (the
  executor: a batch is handled in milliseconds).
* :meth:`TransactionalInbox.receive` then :meth:`TransactionalInbox.settle`: lease
  now (committed at once), then each message's outcome commits with its ack (the
  worker: a job may run for hours, longer than any transaction should stay open).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from backends.protocols import Backend, QueueMessage, Stores


class InboxBatch:
    """Messages handed out together, and the stores of the unit of work they are
    handled in. Every message is acked when the unit of work commits, but those
    :meth:`retry` names."""

    __slots__ = ("_retry", "messages", "stores")

    def __init__(self, messages: list[QueueMessage], stores: Stores) -> None:
        self.messages = messages
        self.stores = stores
        self._retry: dict[int, float] = {}

    def retry(self, messages: Sequence[QueueMessage], delay_seconds: float) -> None:
        """Hand ``messages`` back (after ``delay_seconds``) instead of acking them; the
        rest of the unit of work still commits."""
        for message in messages:
            self._retry[message.id] = delay_seconds


class TransactionalInbox:
    """One consumer's inbox on one queue of a backend with SQL-style transactions."""

    def __init__(
        self,
        backend: Backend,
        queue: str,
        consumer: str,
        *,
        lease_seconds: float,
        prefetch_executions: bool = False,
    ) -> None:
        self.backend = backend
        self.queue = queue
        self.consumer = consumer
        self.lease_seconds = lease_seconds
        self.prefetch_executions = prefetch_executions

    @contextlib.asynccontextmanager
    async def batch(self, limit: int) -> AsyncIterator[InboxBatch]:
        """Up to ``limit`` messages and their unit of work: committed with the acks
        when the block exits normally; rolled back, claim included, when it raises."""
        async with self.backend.transaction() as tx:
            messages = await tx.queues.claim(
                self.queue,
                self.consumer,
                limit,
                self.lease_seconds,
                prefetch_executions=self.prefetch_executions,
            )
            batch = InboxBatch(messages, tx)
            yield batch
            if not messages:
                return
            retry = batch._retry
            # Acked after what the handler wrote, as the last statement before the
            # commit: deferring backends send them together.
            await tx.queues.ack(self.queue, [m.id for m in messages if m.id not in retry])
            for delay in sorted(set(retry.values())):
                ids = [i for i, d in retry.items() if d == delay]
                await tx.queues.nack(self.queue, ids, delay_seconds=delay)

    async def receive(self, limit: int) -> list[QueueMessage]:
        """Lease up to ``limit`` messages to this consumer (committed at once); settle
        each later with :meth:`settle` or :meth:`give_back`."""
        return await self.backend.queues.claim(self.queue, self.consumer, limit, self.lease_seconds)

    @contextlib.asynccontextmanager
    async def settle(self, messages: Sequence[QueueMessage]) -> AsyncIterator[Stores]:
        """The unit of work in which received ``messages`` are done with: what the
        block writes commits together with their acks, or nothing does (the messages
        then stay leased to this consumer)."""
        async with self.backend.transaction() as tx:
            yield tx
            await tx.queues.ack(self.queue, [m.id for m in messages])

    async def give_back(self, messages: Sequence[QueueMessage], delay_seconds: float = 0.0) -> None:
        """Release received ``messages`` unhandled; they come back (after the delay)."""
        await self.backend.queues.nack(
            self.queue, [m.id for m in messages], delay_seconds=delay_seconds
        )

    async def wait(self, at_most: float) -> None:
        """Until something may have arrived, or ``at_most`` seconds (a hint only)."""
        await self.backend.queues.wait(self.queue, at_most)

    async def next_available(self) -> datetime | None:
        """When the earliest waiting message becomes claimable (None: none waits)."""
        return await self.backend.queues.next_available(self.queue)


__all__ = ["InboxBatch", "TransactionalInbox"]
