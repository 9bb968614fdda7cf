"""Actors: state plus a handler that sees one message at a time.

An actor runs as a supervised child (see :func:`actor_spec`). Its mailbox outlives
restarts, so an :class:`ActorRef` stays valid while the supervisor restarts the
actor; the mailbox closes only when the supervisor drops the child for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from runtime.actors.clock import Clock, SystemClock
from runtime.actors.mailbox import (
    Delivery,
    Inbox,
    Mailbox,
    MailboxClosedError,
    MailboxStatistics,
    OverflowPolicy,
    Postbox,
)
from runtime.actors.registry import Registry
from runtime.actors.supervisor import ChildContext, ChildSpec, Restart
from runtime.log import get_logger

M = TypeVar("M")

log = get_logger(__name__)


class AskTimeoutError(TimeoutError):
    """``ask`` got no reply in time. A reply arriving later is dropped."""


class ActorRef(Generic[M]):
    """The address of an actor: the only way to reach it."""

    __slots__ = ("_postbox", "name")

    def __init__(self, name: str, postbox: Postbox[M]) -> None:
        self.name = name
        self._postbox = postbox

    async def tell(self, message: M) -> None:
        """Send; waits while the mailbox is full (backpressure)."""
        await self._postbox.put(message)

    def tell_nowait(self, message: M) -> None:
        """Send without waiting; raises MailboxFullError when the mailbox is full."""
        self._postbox.put_nowait(message)

    async def ask(self, message: M, timeout: float | None) -> Any:  # noqa: ASYNC109 - the API asked for
        """Send and wait for the handler's return value (or its exception).

        The reply travels through a future owned by this call, never through a
        mailbox; on timeout the future is cancelled, so a late reply is dropped.
        ``timeout=None`` waits for as long as the actor takes.
        """
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._postbox.put(message, reply)
                return await reply
        except TimeoutError:
            raise AskTimeoutError(
                f"actor {self.name!r} did not answer {type(message).__name__} within {timeout}s"
            ) from None
        finally:
            reply.cancel()

    def statistics(self) -> MailboxStatistics:
        return self._postbox.statistics()

    @property
    def alive(self) -> bool:
        """False once the actor has stopped for good and its mailbox is closed."""
        return not self._postbox.closed

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"


class Actor(Generic[M]):
    """Subclass and implement :meth:`receive`. One message is handled at a time.

    The return value of ``receive`` answers an ``ask``; an exception crashes the actor
    (the asker gets it too) and its supervisor decides what happens next.
    """

    #: deliveries taken from the inbox at once (they are acked together)
    batch_size: int = 64
    #: set before on_start
    ref: ActorRef[M]
    name: str

    async def on_start(self) -> None:
        """Called before the actor counts as started; raising fails the start."""

    async def receive(self, message: M) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement receive()")

    async def on_stop(self) -> None:
        """Called when the actor stops, gracefully or not (not after a crash of on_start)."""


class BatchActor(Actor[M]):
    """An actor that handles every message its mailbox holds at once (up to
    ``batch_size``) in :meth:`receive_batch`: a group commit. Messages arriving while
    a batch is handled wait in the mailbox and make the next batch together.

    Each asker of the batch gets ``receive_batch``'s return value, or its exception.
    An exception of ``answered_errors`` only answers the askers (they decide whether
    to send again); any other also crashes the actor, as ``receive`` would.
    """

    #: errors that answer the batch's askers without crashing the actor
    answered_errors: tuple[type[Exception], ...] = ()

    async def receive_batch(self, messages: Sequence[M]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement receive_batch()")


class _StopSignal(Exception):
    """Raised in the receive loop when a graceful stop interrupts a wait for messages."""


class ActorCell(Generic[M]):
    """Owns what survives an actor's restarts: its name, mailbox and ref."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Actor[M]],
        mailbox_factory: Callable[[], Any],
        register: bool,
    ) -> None:
        self.name = name
        self._factory = factory
        self._mailbox_factory = mailbox_factory
        self._register = register
        self._mailbox: Any = None
        self._ref: ActorRef[M] | None = None
        self.actor: Actor[M] | None = None

    @property
    def ref(self) -> ActorRef[M]:
        if self._ref is None or self._mailbox.closed:
            self._mailbox = self._mailbox_factory()
            self._ref = ActorRef(self.name, self._mailbox)
        return self._ref

    async def run(self, ctx: ChildContext) -> None:
        ref = self.ref
        inbox: Inbox[M] = self._mailbox
        actor = self._factory()
        actor.ref = ref
        actor.name = self.name
        self.actor = actor
        await actor.on_start()
        if self._register and ctx.registry.get(self.name) is not ref:
            ctx.registry.register(self.name, ref)

        task = asyncio.current_task()
        assert task is not None
        busy = False
        stopping = False
        stop_cancels = 0

        def request_stop() -> None:
            nonlocal stopping, stop_cancels
            stopping = True
            if not busy:
                stop_cancels += 1
                task.cancel()

        ctx.on_stop_requested(request_stop)
        ctx.ready()
        try:
            while not stopping:
                try:
                    batch = await inbox.receive(actor.batch_size)
                except asyncio.CancelledError:
                    if stop_cancels and task.uncancel() == 0:
                        stop_cancels -= 1
                        break
                    raise
                except MailboxClosedError:
                    break
                busy = True
                if isinstance(actor, BatchActor):
                    await self._handle_at_once(actor, inbox, batch)
                else:
                    await self._handle_batch(actor, inbox, batch, lambda: stopping)
                busy = False
        finally:
            # Shielded from nothing but our own stop: on_stop runs even on a crash.
            await actor.on_stop()

    @staticmethod
    async def _handle_batch(
        actor: Actor[M],
        inbox: Inbox[M],
        batch: Sequence[Delivery[M]],
        stopping: Callable[[], bool],
    ) -> None:
        done = 0
        receive = actor.receive
        try:
            for delivery in batch:
                if stopping():
                    break
                result = await receive(delivery.message)
                reply = delivery.reply
                if reply is not None and not reply.done():
                    reply.set_result(result)
                done += 1
        except Exception as exc:
            reply = batch[done].reply
            if reply is not None and not reply.done():
                reply.set_exception(exc)
            await inbox.ack(batch[:done])
            # The unstarted rest first: both go back to the front, order preserved.
            await inbox.nack(batch[done + 1 :])
            await inbox.nack(batch[done : done + 1], error=exc)
            raise
        except BaseException:
            # Cancelled mid-message: the message was not handled; give it back.
            await inbox.ack(batch[:done])
            await inbox.nack(batch[done:])
            raise
        await inbox.ack(batch[:done])
        if done < len(batch):
            await inbox.nack(batch[done:])

    @staticmethod
    async def _handle_at_once(
        actor: BatchActor[M], inbox: Inbox[M], batch: Sequence[Delivery[M]]
    ) -> None:
        try:
            result = await actor.receive_batch([delivery.message for delivery in batch])
        except Exception as exc:
            # answered, not redelivered: each asker decides whether to send again
            for delivery in batch:
                reply = delivery.reply
                if reply is not None and not reply.done():
                    reply.set_exception(exc)
            await inbox.ack(batch)
            if isinstance(exc, actor.answered_errors):
                return
            raise
        except BaseException:
            await inbox.nack(batch)  # cancelled mid-batch: not handled, give it back
            raise
        for delivery in batch:
            reply = delivery.reply
            if reply is not None and not reply.done():
                reply.set_result(result)
        await inbox.ack(batch)

    def terminate(self, ctx: ChildContext) -> None:
        """The supervisor dropped the child: close the mailbox, forget the name."""
        if self._mailbox is not None:
            self._mailbox.close()
        if self._register and self._ref is not None:
            ctx.registry.unregister(self.name, self._ref)


def actor_spec(
    name: str,
    factory: Callable[[], Actor[Any]],
    *,
    mailbox_size: int | None = None,
    overflow: OverflowPolicy = OverflowPolicy.BLOCK,
    mailbox_factory: Callable[[], Any] | None = None,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = 5.0,
    start_timeout: float = 60.0,
    register: bool = True,
) -> ChildSpec:
    """A child spec that runs ``factory()``'s actor under a supervisor.

    Give either ``mailbox_size`` (a volatile :class:`Mailbox`) or ``mailbox_factory``
    (anything implementing both Inbox and Postbox). With
    ``register`` the actor is findable by ``name`` in the system's registry.
    """
    if mailbox_factory is None:
        if mailbox_size is None:
            raise TypeError(f"actor {name!r}: give mailbox_size or mailbox_factory")
        size = mailbox_size

        def mailbox_factory() -> Mailbox[Any]:
            return Mailbox(size, overflow, name)

    cell: ActorCell[Any] = ActorCell(name, factory, mailbox_factory, register)
    return ChildSpec(
        id=name,
        start=cell.run,
        restart=restart,
        shutdown_timeout=shutdown_timeout,
        start_timeout=start_timeout,
        terminate=cell.terminate,
    )


class SideActor(Generic[M]):
    """An actor run as a task of the component that owns it (the worker's report
    writer), not as a supervisor's child: the owner watches :attr:`task` with its other
    side tasks, so the actor's crash is the owner's failure, and the owner's restart
    builds a fresh one. Start it inside the running loop."""

    def __init__(
        self,
        name: str,
        actor: Actor[M],
        *,
        mailbox_size: int,
        clock: Clock | None = None,
    ) -> None:
        self._mailbox: Mailbox[M] = Mailbox(mailbox_size, OverflowPolicy.BLOCK, name)
        cell: ActorCell[M] = ActorCell(name, lambda: actor, lambda: self._mailbox, False)
        self.ref: ActorRef[M] = cell.ref
        self._ctx = ChildContext(name, Registry(), clock or SystemClock())
        self.task: asyncio.Task[None] = asyncio.create_task(cell.run(self._ctx), name=name)

    async def stop(self, within: float) -> None:
        """Refuse new messages, let the actor handle what its mailbox holds, and wait
        for it at most ``within`` seconds (then it is cancelled)."""
        self._mailbox.close()  # the receive loop drains the mailbox, then ends
        if self.task.done():
            return
        _, pending = await asyncio.wait({self.task}, timeout=within)
        if pending:
            self.task.cancel()
            await asyncio.wait({self.task})
