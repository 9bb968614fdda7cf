"""Durable queues on PostgreSQL: one table per queue, rows deleted on ack.

A claim is one ``UPDATE`` over a ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP
LOCKED``: it leases the oldest visible, unleased messages whose key no lease holds,
and concurrent claims pass over each other's rows instead of waiting.

Keys need more than row locks, because a lease is invisible to other transactions
until it commits (and the executor claims inside its batch transaction):

1. the claim takes ``pg_try_advisory_xact_lock(<queue class>, hashtext(key))`` for
   each key it leases, and leaves the messages of a key whose lock it cannot get. The
   lock lasts until the claiming transaction ends, which covers the time its leases
   are invisible. Taking it twice in one transaction succeeds, so one claim may take
   several messages of one key, in order.
2. a statement's snapshot predates the locks it takes, and a try-lock that failed on
   one message of a key may succeed on a later one (the holder committed meanwhile).
   So when a claim leased keyed messages, a second statement in the same transaction,
   with a newer snapshot, gives back the messages of any key that another lease now
   holds, or that has an older waiting message the claim did not take
   (``queue_claim_recheck``). What the claim keeps is, per key, the only lease and a
   prefix of the key's backlog.

The executor's claim (``prefetch_executions``, in its batch transaction) is one
statement, ``queue_claim_executions``: it settles every message it claims before it
commits, so no lease of its queue is ever committed, and it tries each key's lock once
and leaves a key alone when an older message of it waits: the two ways above cannot
happen (see the statement).

Autocommit claims (workers, tests) send the same two statements, each committed on
its own, with no transaction around them: the claim's leases are visible, and its
locks gone, before the recheck runs. That stays safe: of two claims whose leases of one
key both committed, the recheck of the one that committed last starts after both
commits and sees the other lease, unless that one was given back already; so at most
one of them keeps the key (at worst both give back, and wake consumers to try again).
A claim inside a transaction needs its locks instead, since its leases stay invisible
until it commits.

Wake-ups: every write that may make a message claimable wakes this process's waiters
through in-process events after its commit, and other processes by a notification:
the hot writes (publish, ack: ``backends.postgres.deferred``) hand their channels to
``backends.postgres.notifier`` once committed; the rare ones (nack, requeues) call
pg_notify in their own statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from backends.postgres.session import Conn, Session
from backends.protocols import QueueMessage
from backends.sql.mapping import from_micros, require_aware, to_micros


class PostgresQueues:
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
        rows = [(key, bytes(payload)) for key, payload in items]
        table = await self._s.table_for(queue)
        await self._s.defer(lambda deferred: deferred.publish(queue, table, rows, visible))

    async def claim(
        self,
        queue: str,
        consumer: str,
        limit: int,
        lease_seconds: float,
        *,
        prefetch_executions: bool = False,
    ) -> list[QueueMessage]:
        """Lease up to ``limit`` available messages to ``consumer``, oldest first; with
        ``prefetch_executions``, the same statement locks and reads the executions the
        keys name, for the transaction's ``get_for_update`` (in a transaction only)."""
        self._s.core.subscribe(queue)
        table = await self._s.find_table(queue)
        if table is None or limit <= 0:
            return []
        now = self._s.now()
        deadline = to_micros(now + timedelta(seconds=lease_seconds))
        params = (consumer, deadline, to_micros(now), limit, table.lock_class)

        in_transaction = self._s.prefetched is not None
        prefetch = prefetch_executions and in_transaction
        if prefetch:
            claim = table.queries["queue_claim_executions"]
        elif in_transaction:
            claim = table.queries["queue_claim"]
        else:
            claim = table.queries["queue_claim_autocommit"]

        async def op(connection: Conn) -> list[tuple[int, str | None, bytes, int]]:
            rows = await connection.fetch(claim, *params)
            if prefetch:
                # one statement, no recheck needed (see queue_claim_executions)
                return self._prefetched(rows)
            rows = [(row[0], row[1], row[2], row[3]) for row in rows]
            keyed = [row[0] for row in rows if row[1] is not None]
            if not keyed:
                return rows
            recheck = table.queries["queue_claim_recheck"]
            given_back = await connection.fetchval(
                recheck, keyed, consumer, params[2], table.channel, self._s.sender
            )
            if not given_back:
                return rows
            self._s.committed(queue)  # they are claimable again
            back = set(given_back)
            return [row for row in rows if row[0] not in back]

        # In autocommit, each statement commits on its own (see the module docstring).
        rows = await self._s.on_connection(op)
        rows.sort()  # RETURNING does not promise an order
        return [
            QueueMessage(id=row[0], queue=queue, key=row[1], payload=row[2], attempts=row[3])
            for row in rows
        ]

    def _prefetched(self, rows: list[Any]) -> list[tuple[int, str | None, bytes, int]]:
        """Keep the execution of each claimed key for get_for_update; the message rows."""
        cache = self._s.prefetched
        assert cache is not None
        for row in rows:
            if row[1] is not None:
                cache[row[1]] = row[4]
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def ack(self, queue: str, ids: Sequence[int]) -> None:
        """Delete the messages: they were handled."""
        table = self._s.core.known_table(queue)
        if table is None or not ids:
            return
        acked = list(ids)
        await self._s.defer(lambda deferred: deferred.ack(queue, table, acked))

    async def nack(self, queue: str, ids: Sequence[int], *, delay_seconds: float = 0.0) -> None:
        """Release the leases; the messages come back (after ``delay_seconds``)."""
        table = self._s.core.known_table(queue)
        if table is None or not ids:
            return
        visible = to_micros(self._s.now() + timedelta(seconds=max(0.0, delay_seconds)))
        sql = table.queries["queue_nack"]
        rows = await self._s.write(sql, list(ids), visible, table.channel, self._s.sender)
        if rows and rows[0][0]:
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
        tables = self._s.core.all_tables()
        if not tables:
            return 0
        sender = self._s.sender

        async def op(connection: Conn) -> dict[str, int]:
            released: dict[str, int] = {}
            for queue, table in tables.items():
                row = await connection.fetchrow(table.queries[query], param, table.channel, sender)
                released[queue] = int(row[0])
            return released

        released = await self._s.on_connection(op)
        for queue, count in released.items():
            if count:
                self._s.committed(queue)
        return sum(released.values())

    async def depth(self, queue: str) -> int:
        """Messages in the queue, leased or not."""
        table = await self._s.find_table(queue)
        if table is None:
            return 0
        rows = await self._s.fetch(table.queries["queue_depth"])
        return int(rows[0][0]) if rows else 0

    async def next_available(self, queue: str) -> datetime | None:
        """When the earliest message a claim could take becomes visible (None: none)."""
        table = await self._s.find_table(queue)
        if table is None:
            return None
        rows = await self._s.fetch(table.queries["queue_next_available"])
        return from_micros(rows[0][0]) if rows and rows[0][0] is not None else None

    async def wait(self, queue: str, at_most: float) -> None:
        """Return when something may have been published to ``queue`` (a notification
        from another process, or an in-process event set after a local commit), or after
        ``at_most`` seconds (at most ``poll_seconds`` while the listener is down). A
        publish nobody waited for makes the next wait return at once: no wake-up is lost
        between a claim that found nothing and this call."""
        core = self._s.core
        event = core.wakeup(queue)
        started = time.monotonic()
        if not event.is_set() and at_most > 0:
            # The first wait of a queue makes sure its LISTEN is in place.
            await core.listening(queue, min(at_most, 1.0))
            spent = time.monotonic() - started
            limit = max(0.0, core.wait_limit(at_most) - spent)
            delay = None if math.isinf(limit) else limit
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await event.wait()
        event.clear()
