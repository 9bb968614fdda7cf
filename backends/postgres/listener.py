"""LISTEN/NOTIFY wake-ups on one dedicated connection, which reconnects by itself.

A notification is only a hint that a queue may have something to claim: consumers
poll with SKIP LOCKED claims to find out, and ``Queues.wait`` returns after its
``at_most`` anyway. So a lost notification costs latency, never data: while the
connection is down, waits are capped at the backend's ``poll_seconds``, and once it is
back every waiter is woken (notifications sent meanwhile were lost).

The connection is not from the pool (LISTEN state must not leak to, or be reset by,
pooled use). One task owns it: it LISTENs the channels asked for, health-checks the
connection when idle, and on a drop reconnects with capped exponential backoff,
logging once per outage, then LISTENs everything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from backends.errors import BackendError
from backends.postgres.connection import close_quietly, translated
from runtime.log import get_logger

log = get_logger(__name__)

Connect = Callable[[], Awaitable[Any]]


class Listener:
    """LISTENs on the channels of the queues it is asked about; calls ``on_notify(queue)``
    for each notification not sent by ``sender`` (this backend's own, already woken
    in-process), and ``on_reconnect()`` after a drop."""

    def __init__(
        self,
        connect: Connect,
        *,
        sender: str,
        where: str,
        on_notify: Callable[[str], None],
        on_reconnect: Callable[[], None],
        health_seconds: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._connect = connect
        self._sender = sender
        self._where = where
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._health_seconds = health_seconds
        self._max_backoff = max_backoff
        #: channel -> queue, every channel asked for
        self._channels: dict[str, str] = {}
        #: channels LISTENed on the current connection
        self._listening: set[str] = set()
        #: set once the current connection LISTENs on the channel (see ``listening``)
        self._ready: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Event()
        self._lost = asyncio.Event()
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """Whether notifications are being received right now."""
        return self._connected

    def statistics(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "channels": len(self._channels),
            "reconnects": self.reconnects,
            "pid": None if self._connection is None else self._connection.get_server_pid(),
        }

    async def start(self) -> None:
        """Connect (Transient if the server is unreachable), then run in the background."""
        await self._open()
        self._task = asyncio.create_task(self._run(), name=f"postgres-listener {self._where}")
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        connection, self._connection = self._connection, None
        self._connected = False
        await close_quietly(connection)

    def subscribe(self, queue: str, channel: str) -> None:
        """LISTEN on ``channel`` for ``queue`` from now on (soon: the owner task does it)."""
        if channel not in self._channels:
            self._channels[channel] = queue
            self._ready[channel] = asyncio.Event()
            self._changed.set()

    async def listening(self, queue: str, channel: str, at_most: float) -> None:
        """Subscribe, and return once the LISTEN is in place (or after ``at_most``, or at
        once while disconnected): a notification sent after that is not missed."""
        self.subscribe(queue, channel)
        ready = self._ready[channel]
        if ready.is_set() or not self._connected:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await ready.wait()

    # -- the owner task ------------------------------------------------------------------
    async def _open(self) -> None:
        self._lost.clear()
        connection = await self._connect()
        try:
            connection.add_termination_listener(self._terminated)
            self._connection = connection
            self._listening = set()
            await self._listen_all()
        except BaseException:
            self._connection = None
            await close_quietly(connection)
            raise
        self._connected = True

    async def _listen_all(self) -> None:
        self._changed.clear()
        for channel in list(self._channels):
            if channel not in self._listening:
                await self._connection.add_listener(channel, self._notified)
                self._listening.add(channel)
                self._ready[channel].set()

    async def _run(self) -> None:
        while True:
            try:
                await self._serve()
            except (BackendError, OSError, TimeoutError) as exc:
                log.debug("postgres.listener_failed", where=self._where, error=str(exc))
            except Exception as exc:  # the driver's own errors: the connection is unusable
                log.debug("postgres.listener_failed", where=self._where, error=repr(exc))
            self._connected = False
            for ready in self._ready.values():
                ready.clear()
            connection, self._connection = self._connection, None
            await close_quietly(connection)
            await self._reconnect()

    async def _serve(self) -> None:
        """Keep LISTENing until the connection is lost."""
        while not self._lost.is_set():
            with translated(f"listener {self._where}"):
                await self._listen_all()
            changed = asyncio.ensure_future(self._changed.wait())
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                done, _ = await asyncio.wait(
                    {changed, lost},
                    timeout=self._health_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiter in (changed, lost):
                    waiter.cancel()
                await asyncio.gather(changed, lost, return_exceptions=True)
            if not done:
                # idle: a half-open TCP connection only shows when something is sent
                with translated(f"listener {self._where}"):
                    await asyncio.wait_for(self._connection.fetchval("SELECT 1"), 5.0)

    async def _reconnect(self) -> None:
        """Connect again, with backoff; warn once per outage, tell when it is over."""
        log.warning(
            "postgres.listener_disconnected",
            where=self._where,
            detail="wake-ups fall back to polling until the listener reconnects",
        )
        delay = 0.05
        while True:
            try:
                await self._open()
            except (BackendError, OSError, TimeoutError) as exc:
                log.debug("postgres.listener_reconnect_failed", where=self._where, error=str(exc))
            except Exception as exc:  # any driver error: try again later
                log.debug("postgres.listener_reconnect_failed", where=self._where, error=repr(exc))
            else:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))  # jittered
            delay = min(delay * 2, self._max_backoff)
        self.reconnects += 1
        log.warning("postgres.listener_reconnected", where=self._where)
        # Whatever was notified during the outage is lost: let every waiter claim.
        self._on_reconnect()

    # -- driver callbacks (run on the loop) ----------------------------------------------
    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self._sender:
            return
        queue = self._channels.get(channel)
        if queue is not None:
            self._on_notify(queue)

    def _terminated(self, connection: Any) -> None:
        if connection is self._connection:
            self._connected = False
            self._lost.set()

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The owner task never ends by itself: if it did, say so loudly, and let waits
        fall back to polling instead of sleeping on notifications that cannot come."""
        self._connected = False
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "postgres.listener_crashed",
                where=self._where,
                detail="wake-ups fall back to polling",
                exc_info=task.exception(),
            )
