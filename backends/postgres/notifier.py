"""Notifications sent after the commit, from a statement of their own.

A transaction that calls ``pg_notify`` takes, at its commit, a lock that every
notifying transaction of the whole PostgreSQL cluster shares, and holds it until
its commit record is on disk: notifying commits then wait for each other's WAL
flush one after the other, where commits without notifications share one flush
(group commit). Measured with the throughput bench (2026-12-08), the sessions of a
loaded server spent most of their time waiting on that lock (``Lock:object`` in
``pg_stat_activity``) with the CPU idle.

So the hot writes (``backends.postgres.deferred``) carry no ``pg_notify``; the
notifications follow the commit, in a transaction of their own that writes nothing,
so its commit waits for no disk and holds the lock only briefly:

* a transaction with a ``COMMIT`` sends them in the same simple query, after it
  (``COMMIT; SELECT pg_notify(...)``): no extra round trip (an executor's batch);
* a statement that committed on its own (a worker's report, a submission) hands the
  channels to this process's :class:`Notifier`, which sends them as one more
  statement; while one is in flight, further channels wait and go together in the
  next, so under load they cost far fewer statements than the commits they follow.
A lost notification (a connection failure) costs latency, never a message: every
consumer polls at ``poll_seconds`` anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from runtime.log import get_logger

log = get_logger(__name__)

#: one notification per channel, whatever their number (one prepared statement);
#: the payload names the sender, whose own listener ignores it
NOTIFY = (
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify(c, $2)"
    " FROM unnest($1::text[]) AS c"
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def notify_literal(channels: list[str], sender: str) -> str:
    """The notifications as one statement with its values spelled out, to follow a
    ``COMMIT`` in the same simple query (one round trip; no parameters there)."""
    notifies = ", ".join(f"pg_notify({_literal(c)}, {_literal(sender)})" for c in channels)
    return f"SELECT set_config('synchronous_commit', 'off', true), {notifies}"


class Notifier:
    """Sends the channels it is given, at most one statement at a time."""

    def __init__(self, pool: Any, sender: str, where: str) -> None:
        self._pool = pool
        self._sender = sender
        self._where = where
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def notify(self, channels: Iterable[str]) -> None:
        """Notify ``channels`` soon (their transactions committed)."""
        if self._closed:
            return
        self._pending.update(channels)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._send(), name="postgres.notifier"
            )

    async def _send(self) -> None:
        while self._pending:
            channels = sorted(self._pending)
            self._pending.clear()
            try:
                async with self._pool.acquire(timeout=5.0) as connection:
                    await connection.execute(NOTIFY, channels, self._sender)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # the consumers' poll finds the messages; only the wake-up is late
                log.warning("postgres.notify_failed", where=self._where, error=str(exc))

    async def flushed(self) -> None:
        """Until what was given is sent (or failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Send what is pending (for at most a second), then stop."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=1.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
