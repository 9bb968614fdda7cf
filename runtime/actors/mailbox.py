"""Mailboxes: bounded in-memory queues of deliveries, and the protocol actors read.

An actor reads its messages through the :class:`Inbox` protocol (receive a batch,
ack, nack) and is fed through the :class:`Postbox` protocol (put, put_nowait); the
volatile :class:`Mailbox` implements both. The server components read their durable
queues through the backends' transactional inbox (``backends.protocols.Inbox``),
whose unit of work a one-message ack cannot express.

Capacity counts messages queued *and* in flight (received, not yet acked), so a
mailbox never holds more than its capacity, whatever the consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from runtime.log import get_logger

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)

log = get_logger(__name__)


class OverflowPolicy(enum.Enum):
    """What a sender meets when the mailbox is full."""

    BLOCK = "block"  #: ``put`` waits for room; ``put_nowait`` raises MailboxFullError
    FAIL = "fail"  #: ``put`` and ``put_nowait`` both raise MailboxFullError at once


class MailboxFullError(Exception):
    """The mailbox is at capacity and the send could not wait."""


class MailboxClosedError(Exception):
    """The mailbox was closed: its actor has stopped for good."""


class MailboxStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a mailbox's counters."""

    size: int  #: messages queued, not yet received
    in_flight: int  #: received, not yet acked or nacked
    capacity: int
    received: int  #: messages accepted since creation
    rejected: int  #: sends refused because the mailbox was full
    dropped: int  #: messages discarded after the handler failed on them
    redelivered: int  #: messages returned to the queue by nack or lease expiry
    waiting_senders: int


class Delivery(Generic[T]):
    """One message handed to a consumer, with what it needs to be acked.

    ``reply`` is set for ``ask``: the consumer resolves it with the handler's result.
    ``attempts`` counts failed handlings before this delivery.
    """

    __slots__ = ("attempts", "deadline", "message", "reply")

    def __init__(
        self, message: T, reply: asyncio.Future[Any] | None = None, attempts: int = 0
    ) -> None:
        self.message = message
        self.reply = reply
        self.attempts = attempts
        self.deadline = math.inf

    def __repr__(self) -> str:
        return f"Delivery({self.message!r}, attempts={self.attempts})"


class Inbox(Protocol[T]):
    """What an actor reads: batches of deliveries it must ack or nack."""

    async def receive(self, max_messages: int) -> Sequence[Delivery[T]]:
        """Wait for at least one message; return up to ``max_messages``.

        Raises MailboxClosedError once the inbox is closed and empty.
        """
        ...

    async def ack(self, deliveries: Sequence[Delivery[T]]) -> None:
        """The deliveries were handled: forget them."""
        ...

    async def nack(
        self, deliveries: Sequence[Delivery[T]], *, error: BaseException | None = None
    ) -> None:
        """The deliveries were not handled. ``error`` is set when the handler failed
        on them; without it they were never started and go back unchanged."""
        ...


class Postbox(Protocol[T_contra]):
    """What a sender writes to."""

    async def put(self, message: T_contra, reply: asyncio.Future[Any] | None = None) -> None: ...

    def put_nowait(self, message: T_contra, reply: asyncio.Future[Any] | None = None) -> None: ...

    def statistics(self) -> MailboxStatistics: ...

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


class _BoundedQueue(Generic[T]):
    """The bounded queue both in-memory mailboxes are built on."""

    def __init__(
        self, capacity: int, overflow: OverflowPolicy = OverflowPolicy.BLOCK, name: str = ""
    ) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"mailbox capacity must be a positive integer, got {capacity!r}")
        self.name = name
        self._capacity = capacity
        self._overflow = overflow
        self._queue: deque[Delivery[T]] = deque()
        self._in_flight = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._received = 0
        self._rejected = 0
        self._dropped = 0
        self._redelivered = 0

    # -- sending -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _full(self) -> bool:
        return len(self._queue) + self._in_flight >= self._capacity

    def put_nowait(self, message: T, reply: asyncio.Future[Any] | None = None) -> None:
        if self._closed:
            raise MailboxClosedError(f"mailbox {self.name!r} is closed: its actor has stopped")
        if self._full():
            self._rejected += 1
            raise MailboxFullError(
                f"mailbox {self.name!r} is full ({self._capacity} messages); "
                "the actor is not keeping up: wait with tell() or raise the mailbox size"
            )
        self._queue.append(Delivery(message, reply))
        self._received += 1
        self._wake_one(self._getters)

    async def put(self, message: T, reply: asyncio.Future[Any] | None = None) -> None:
        while self._full() and not self._closed and self._overflow is OverflowPolicy.BLOCK:
            putter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(putter)
            try:
                await putter
            except BaseException:
                putter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(putter)
                # We were woken but are leaving: pass the wake-up on.
                if not self._full() and not putter.cancelled():
                    self._wake_one(self._putters)
                raise
        self.put_nowait(message, reply)

    # -- receiving -----------------------------------------------------------
    async def _wait_for_message(self, within: float = math.inf) -> bool:
        """Wait until a message is queued; False on timeout. Raises when closed and empty."""
        while not self._queue:
            if self._closed:
                raise MailboxClosedError(f"mailbox {self.name!r} is closed")
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                if within == math.inf:
                    await getter
                else:
                    try:
                        async with asyncio.timeout(within):
                            await getter
                    except TimeoutError:
                        return False
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._queue and not getter.cancelled():
                    self._wake_one(self._getters)
                raise
        return True

    def _take(self, max_messages: int) -> list[Delivery[T]]:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        queue = self._queue
        n = min(max_messages, len(queue))
        batch = [queue.popleft() for _ in range(n)]
        self._in_flight += n
        if self._queue:
            self._wake_one(self._getters)
        return batch

    def _settle(self, count: int) -> None:
        self._in_flight -= count
        for _ in range(count):
            if not self._wake_one(self._putters):
                break

    def _requeue_front(self, deliveries: Sequence[Delivery[T]]) -> None:
        self._queue.extendleft(reversed(deliveries))
        self._in_flight -= len(deliveries)
        self._redelivered += len(deliveries)
        self._wake_one(self._getters)

    @staticmethod
    def _wake_one(waiters: deque[asyncio.Future[None]]) -> bool:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def close(self) -> None:
        """Refuse new messages; receivers drain what is queued, then get MailboxClosedError."""
        self._closed = True
        for waiter in (*self._getters, *self._putters):
            if not waiter.done():
                waiter.set_result(None)
        self._getters.clear()
        self._putters.clear()

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            size=len(self._queue),
            in_flight=self._in_flight,
            capacity=self._capacity,
            received=self._received,
            rejected=self._rejected,
            dropped=self._dropped,
            redelivered=self._redelivered,
            waiting_senders=sum(1 for p in self._putters if not p.done()),
        )

    def __len__(self) -> int:
        return len(self._queue)


class Mailbox(_BoundedQueue[T]):
    """A volatile, bounded, in-process mailbox.

    A message whose handler failed is dropped (the actor's crash is the signal, as
    in Erlang); messages returned unstarted go back to the front in order.
    """

    async def receive(self, max_messages: int) -> Sequence[Delivery[T]]:
        if not self._queue:
            await self._wait_for_message()
        return self._take(max_messages)

    async def ack(self, deliveries: Sequence[Delivery[T]]) -> None:
        self._settle(len(deliveries))

    async def nack(
        self, deliveries: Sequence[Delivery[T]], *, error: BaseException | None = None
    ) -> None:
        if not deliveries:
            return
        if error is not None:
            self._dropped += len(deliveries)
            log.warning(
                "mailbox.dropped", mailbox=self.name, count=len(deliveries), error=repr(error)
            )
            self._settle(len(deliveries))
        else:
            self._requeue_front(deliveries)
