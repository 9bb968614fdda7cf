"""The actor system: the root supervisor, the registry of names, and signal handling."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from runtime.actors.actor import ActorRef
from runtime.actors.clock import Clock, SystemClock
from runtime.actors.lifecycle import Lifecycle, ServiceState
from runtime.actors.registry import Registry
from runtime.actors.supervisor import (
    Backoff,
    ChildContext,
    ChildSpec,
    RestartIntensity,
    Strategy,
    Supervisor,
    SupervisorEscalationError,
)
from runtime.log import get_logger

log = get_logger(__name__)


class ActorSystem:
    """Runs a tree of children under one root supervisor.

    ``start()`` returns once every child has signalled ready (or raises the first
    start error). ``stop()`` stops gracefully: children in reverse order, each within
    its shutdown timeout. ``stop(graceful=False)`` cancels everything at once.
    ``run_until_signalled()`` maps SIGTERM/SIGINT to a graceful stop and a second
    signal to an immediate one.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        name: str = "root",
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: RestartIntensity = RestartIntensity(),  # noqa: B008 - frozen value
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.registry = Registry()
        self.lifecycle = Lifecycle(name)
        self.clock: Clock = clock or SystemClock()
        self.supervisor = Supervisor(
            name, children, strategy=strategy, intensity=intensity, backoff=backoff, rng=rng
        )
        self._ctx: ChildContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._forced = False
        self._signals_seen = 0

    @property
    def state(self) -> ServiceState:
        return self.lifecycle.state

    def ref(self, name: str) -> ActorRef[Any]:
        """The ref of the actor registered under ``name`` (ActorNotFoundError if none)."""
        return self.registry.lookup(name)

    async def start(self) -> None:
        if self.lifecycle.state is not ServiceState.CREATED:
            raise RuntimeError(f"actor system {self.name!r} was already started")
        ctx = ChildContext(self.name, self.registry, self.clock)
        task = asyncio.create_task(self.supervisor.run(ctx), name=f"actor-system/{self.name}")
        self._ctx, self._task = ctx, task
        try:
            await asyncio.wait({ctx._ready, task}, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task})
            raise
        if not ctx.is_ready:
            self.lifecycle.transition(ServiceState.ERROR)
            error = task.exception() if not task.cancelled() else None
            if error is not None:
                raise error
            raise RuntimeError(f"actor system {self.name!r} ended before it was ready")
        self.lifecycle.transition(ServiceState.RUNNING)
        task.add_done_callback(self._on_root_exit)
        log.info("system.started", system=self.name, children=len(self.supervisor.specs))

    def _on_root_exit(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            if self.lifecycle.can_transition(ServiceState.ERROR):
                self.lifecycle.transition(ServiceState.ERROR)
            if not isinstance(task.exception(), SupervisorEscalationError):
                # an escalation was logged once, where it happened
                log.error("system.failed", system=self.name, error=repr(task.exception()))
        elif self.lifecycle.state is ServiceState.RUNNING:
            # The root ended by itself (every child was temporary and finished).
            self.lifecycle.transition(ServiceState.TERMINATING)
        if self.lifecycle.state is ServiceState.TERMINATING:
            final = (
                ServiceState.TERMINATED_FORCED
                if self._forced or task.cancelled()
                else ServiceState.TERMINATED_GRACEFULLY
            )
            self.lifecycle.transition(final)
            log.info("system.stopped", system=self.name, state=final.value)

    def request_stop(self, *, graceful: bool = True) -> None:
        """Begin stopping without waiting; see :meth:`stop`."""
        if self._task is None or self._ctx is None or self._task.done():
            return
        if self.lifecycle.state is ServiceState.RUNNING:
            self.lifecycle.transition(ServiceState.TERMINATING)
        if graceful:
            log.info("system.stopping", system=self.name, graceful=True)
            self._ctx.request_stop()
        else:
            log.warning("system.stopping", system=self.name, graceful=False)
            self._forced = True
            self._task.cancel()

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop and wait until every child has ended."""
        self.request_stop(graceful=graceful)
        await self.wait()

    async def wait(self) -> None:
        """Wait until the system ends; raises SupervisorEscalationError if the root gave up."""
        task = self._task
        if task is None:
            return
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def run_until_signalled(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Run until a signal arrives (graceful stop) and a second one (immediate stop)."""
        loop = asyncio.get_running_loop()
        if self.lifecycle.state is ServiceState.CREATED:
            await self.start()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals_seen += 1
        graceful = self._signals_seen == 1
        log.warning(
            "system.signal",
            system=self.name,
            signal=sig.name,
            action="graceful stop" if graceful else "immediate stop",
        )
        self.request_stop(graceful=graceful)

    async def __aenter__(self) -> ActorSystem:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(
            graceful=exc_type is None or not issubclass(exc_type, asyncio.CancelledError)
        )
