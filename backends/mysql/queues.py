"""Durable queues on MySQL / MariaDB: one table per queue, rows deleted on ack.

A claim, in one transaction (the caller's, or its own):

1. ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`` picks the oldest visible,
   unleased messages whose key no committed lease holds, and locks them; concurrent
   claims pass over each other's rows instead of waiting. Without keys among them,
   the lease (an ``UPDATE``) goes with the COMMIT, and that is all.
2. With keys, one more round trip sends together:

   - ``GET_LOCK(key, 0)`` for each key: a key whose lock another session holds is left
     alone. The locks are held until the claiming transaction ends, which covers the
     time its leases are invisible to others (the role PostgreSQL's
     transaction-level advisory locks play);
   - the lease of the messages that are unkeyed or whose key lock this connection
     holds (``IS_USED_LOCK``, the server hashing the lock name as Python does);
   - the recheck (a new statement: under READ COMMITTED it sees every lease committed
     before it, and the key locks keep new ones out), which names the leased
     messages of a key that another lease now holds, or that has an older waiting
     message the claim did not take: those are given back. What the claim keeps is,
     per key, the only lease and a prefix of the key's backlog;
   - with ``prefetch_executions``, the ``FOR UPDATE`` read of the executions named by
     the leased keys.

No LISTEN/NOTIFY: consumers of another process find new messages by polling, at an
interval that is short while messages flow and backs off while the queue stays empty
(``Core.poll``); consumers in this process are woken at once by in-process events
after a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from backends.errors import BackendError
from backends.mysql.connection import rows_placeholder
from backends.mysql.session import Session, TxSession
from backends.protocols import QueueMessage
from backends.sql.mapping import from_micros, require_aware, to_micros


class MysqlQueues:
    """The Queues protocol over a session (a transaction, or autocommit calls)."""

    def __init__(self, session: Session) -> None:
        self._s = session

    async def publish(
        self,
        queue: str,
        items: Sequence[tuple[str | None, bytes]],
        *,
        available_at: datetime | None = None,
    ) -> None:
        """Append ``(key, payload)`` items; hidden until ``available_at`` if given."""
        if not items:
            return
        if available_at is None:
            visible = to_micros(self._s.now())
        else:
            visible = to_micros(require_aware(available_at, "available_at"))
        queries = await self._s.table_for(queue)
        sql = queries["queue_publish"].replace("{rows}", rows_placeholder(3, len(items)))
        args = [value for key, payload in items for value in (key, bytes(payload), visible)]
        await self._s.change_later(sql, *args)
        self._s.committed(queue)

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
        With ``prefetch_executions`` (the keys are execution ids the caller will
        ``get_for_update`` next), the claim locks and reads them in its last round
        trip."""
        queries = await self._s.find_table(queue)
        if queries is None or limit <= 0:
            return []
        now = self._s.now()
        deadline = to_micros(now + timedelta(seconds=lease_seconds))
        core = self._s.core

        async def op(tx: TxSession) -> list[tuple[Any, ...]]:
            rows = await tx.select(queries["queue_claim"], to_micros(now), limit)
            if not rows:
                return []
            ids = tuple(row[0] for row in rows)
            keys = list(dict.fromkeys(row[1] for row in rows if row[1] is not None))
            if not keys:
                # the lease goes with the COMMIT
                await tx.change_later(queries["queue_lease"], consumer, deadline, ids)
                return rows
            # One round trip: try the keys' locks, lease what is unkeyed or locked by
            # this connection, then recheck (see the module docstring).
            tx.holds_locks = True
            names = [core.key_lock(queue, key) for key in keys]
            await tx.change_later("DO " + ", ".join(["GET_LOCK(%s, 0)"] * len(names)), *names)
            lock = (core.key_lock_prefix(queue),)
            await tx.change_later(queries["queue_lease_locked"], consumer, deadline, ids, *lock)
            asked: list[tuple[str, tuple[Any, ...]]] = [
                (
                    queries["queue_claim_verdicts"],
                    (ids, to_micros(now), ids, ids, consumer, deadline),
                )
            ]
            if prefetch_executions:
                # the executions of the keys just leased, locked and read in the same
                # round trip: the executor's get_for_update takes them from here
                asked.append((queries["queue_prefetch_executions"], (ids, consumer, deadline)))
            results = await tx.select_many(*asked)
            verdicts = results[0]
            kept = {int(row[0]) for row in verdicts if not row[1]}
            if prefetch_executions:
                found = {str(row[0]): bytes(row[1]) for row in results[1]}
                for row in rows:
                    if row[0] in kept and row[1] is not None:
                        tx.prefetched[row[1]] = found.get(row[1])
            back = tuple(int(row[0]) for row in verdicts if row[1])
            if back:
                await tx.change_later(queries["queue_give_back"], back, consumer)
                tx.committed(queue)  # claimable again
            return [row for row in rows if row[0] in kept]

        rows = await self._s.atomically(op)
        if rows:
            core.poll(queue).active()
        return [
            QueueMessage(id=row[0], queue=queue, key=row[1], payload=bytes(row[2]), attempts=row[3])
            for row in rows
        ]

    async def ack(self, queue: str, ids: Sequence[int]) -> None:
        """Delete the messages: they were handled."""
        queries = self._s.core.known_table(queue)
        if queries is None or not ids:
            return
        # No in-process wake-up: the deferred delete reports nothing, and waking every
        # consumer at each ack costs each an empty claim. A message its key held back
        # is found by the waiting consumers' next poll (2 ms while messages flow).
        await self._s.change_later(queries["queue_ack"], tuple(ids))

    async def nack(self, queue: str, ids: Sequence[int], *, delay_seconds: float = 0.0) -> None:
        """Release the leases; the messages come back (after ``delay_seconds``)."""
        queries = self._s.core.known_table(queue)
        if queries is None or not ids:
            return
        visible = to_micros(self._s.now() + timedelta(seconds=max(0.0, delay_seconds)))
        if await self._s.change(queries["queue_nack"], visible, tuple(ids)):
            self._s.committed(queue)

    async def requeue_consumer(self, consumer: str) -> int:
        """Release every lease ``consumer`` holds (it died); returns how many."""
        return await self._requeue("queue_requeue_consumer", consumer)

    async def requeue_expired(self) -> int:
        """Release every lease past its deadline; returns how many."""
        return await self._requeue("queue_requeue_expired", to_micros(self._s.now()))

    async def _requeue(self, query: str, param: str | int) -> int:
        # Every queue of the database, including those other processes created.
        await self._s.refresh_tables()
        released = 0
        for queue, queries in self._s.core.all_tables().items():
            count = await self._s.change(queries[query], param)
            if count:
                self._s.committed(queue)
                released += count
        return released

    async def depth(self, queue: str) -> int:
        """Messages in the queue, leased or not."""
        queries = await self._s.find_table(queue)
        if queries is None:
            return 0
        rows = await self._s.select(queries["queue_depth"])
        return int(rows[0][0]) if rows else 0

    async def next_available(self, queue: str) -> datetime | None:
        """When the earliest message a claim could take becomes visible (None: none)."""
        queries = await self._s.find_table(queue)
        if queries is None:
            return None
        rows = await self._s.select(queries["queue_next_available"])
        return from_micros(int(rows[0][0])) if rows and rows[0][0] is not None else None

    async def wait(self, queue: str, at_most: float) -> None:
        """Return when something may have been published to ``queue``, or after
        ``at_most`` seconds: at once after a commit of this process that published, else
        when a poll finds a message a claim would take. Polls come at the queue's
        adaptive interval: short while messages flow, doubling while they do not. A
        publish nobody waited for makes the next wait return at once: no wake-up is lost
        between a claim that found nothing and this call."""
        core = self._s.core
        event = core.wakeup(queue)
        poll = core.poll(queue)
        deadline = time.monotonic() + at_most
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, poll.interval)):
                    await event.wait()
            if event.is_set() or time.monotonic() >= deadline:
                break
            if await self._claimable(queue):
                poll.active()
                break
            poll.idle()
        event.clear()

    async def _claimable(self, queue: str) -> bool:
        """Whether a claim would find something; a failed poll says yes (the claim
        that follows reports the error, the caller's retry policy applies)."""
        try:
            queries = await self._s.find_table(queue)
            if queries is None:
                return False
            return bool(await self._s.select(queries["queue_probe"], to_micros(self._s.now())))
        except BackendError:
            return True
