"""Durable queues on SQLite: one table per queue, rows deleted on ack.

A claim is one ``UPDATE ... RETURNING`` statement: it leases the oldest visible,
unleased messages whose key is not held, so selecting and leasing cannot be split by
another writer. A keyed message is held while any message with its key is leased, or
an older one is not yet visible: one key's messages go out in publication order, one
batch at a time. Wake-ups are in-process events, set once the write commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from backends.protocols import QueueMessage
from backends.sql.mapping import encode_json, from_micros, require_aware, to_micros
from backends.sqlite.connection import Row, execute, fetch
from backends.sqlite.session import Session


class SqliteQueues:
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
        rows = [(key, bytes(payload), visible) for key, payload in items]
        table, create = self._s.table_for(queue)
        sql = self._s.queue_queries(table)["queue_publish"]

        def op(connection: sqlite3.Connection) -> None:
            if create is not None:
                create(connection)
            connection.executemany(sql, rows)

        await self._s.write_later(op, new_table=None if create is None else (queue, table))
        self._s.notify(queue)

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
        table = await self._s.find_table(queue)
        if table is None or limit <= 0:
            return []
        now = self._s.now()
        deadline = now + timedelta(seconds=lease_seconds)
        params = (consumer, to_micros(deadline), to_micros(now), limit)
        rows = await self._s.write(fetch(self._s.queue_queries(table)["queue_claim"], params))
        rows.sort()  # RETURNING does not promise an order
        return [
            QueueMessage(id=row[0], queue=queue, key=row[1], payload=row[2], attempts=row[3])
            for row in rows
        ]

    async def ack(self, queue: str, ids: Sequence[int]) -> None:
        """Delete the messages: they were handled."""
        table = self._s.known_table(queue)
        if table is None or not ids:
            return

        def acked(keys: list[Row]) -> None:
            if any(key is not None for (key,) in keys):
                # The next message of that key may be claimable now.
                self._s.notify(queue)

        sql = self._s.queue_queries(table)["queue_ack"]
        await self._s.write_later(fetch(sql, (encode_json(list(ids)),)), then=acked)

    async def nack(self, queue: str, ids: Sequence[int], *, delay_seconds: float = 0.0) -> None:
        """Release the leases; the messages come back (after ``delay_seconds``)."""
        table = self._s.known_table(queue)
        if table is None or not ids:
            return
        visible = to_micros(self._s.now() + timedelta(seconds=max(0.0, delay_seconds)))
        sql = self._s.queue_queries(table)["queue_nack"]

        def released(count: int) -> None:
            if count:
                self._s.notify(queue)

        await self._s.write_later(execute(sql, (encode_json(list(ids)), visible)), then=released)

    async def requeue_consumer(self, consumer: str) -> int:
        """Release every lease ``consumer`` holds (it died); returns how many."""
        return await self._requeue("queue_requeue_consumer", consumer)

    async def requeue_expired(self) -> int:
        """Release every lease past its deadline; returns how many."""
        return await self._requeue("queue_requeue_expired", to_micros(self._s.now()))

    async def _requeue(self, query: str, param: Any) -> int:
        statements = {
            queue: self._s.queue_queries(table)[query]
            for queue, table in self._s.all_tables().items()
        }
        if not statements:
            return 0

        def op(connection: sqlite3.Connection) -> dict[str, int]:
            return {
                queue: connection.execute(sql, (param,)).rowcount
                for queue, sql in statements.items()
            }

        released = await self._s.write(op)
        for queue, count in released.items():
            if count:
                self._s.notify(queue)
        return sum(released.values())

    async def depth(self, queue: str) -> int:
        """Messages in the queue, leased or not."""
        table = await self._s.find_table(queue)
        if table is None:
            return 0
        rows = await self._s.read(fetch(self._s.queue_queries(table)["queue_depth"]))
        return int(rows[0][0]) if rows else 0

    async def next_available(self, queue: str) -> datetime | None:
        """When the earliest message a claim could take becomes visible (None: none)."""
        table = await self._s.find_table(queue)
        if table is None:
            return None
        rows = await self._s.read(fetch(self._s.queue_queries(table)["queue_next_available"]))
        return from_micros(rows[0][0]) if rows and rows[0][0] is not None else None

    async def wait(self, queue: str, at_most: float) -> None:
        """Return when something may have been published to ``queue`` (an in-process
        event, set after the commit), or after ``at_most`` seconds. A publish nobody
        waited for makes the next wait return at once: no wake-up is lost between a
        claim that found nothing and this call."""
        event = self._s.core.wakeup(queue)
        if not event.is_set() and at_most > 0:
            delay = None if math.isinf(at_most) else at_most
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await event.wait()
        event.clear()
