"""Supervisors: start children in order, restart them by strategy, stop them in reverse.

Semantics follow Erlang/OTP's supervisor:

* A child counts as started once it calls ``ctx.ready()``. A child that raises
  before that fails the whole start with its own exception; the children already
  started are stopped in reverse order first.
* ``restart``: PERMANENT children are always restarted, TRANSIENT ones only after an
  abnormal exit (an exception or an unexpected cancellation), TEMPORARY ones never.
* Strategies: ONE_FOR_ONE restarts the failed child; ONE_FOR_ALL stops every other
  child (reverse order) and restarts them all in order; REST_FOR_ONE does that for
  the failed child and the children started after it. TEMPORARY siblings stopped
  this way are not restarted.
* More than ``intensity.max_restarts`` restarts within ``intensity.within`` seconds:
  the supervisor stops all its children and fails with SupervisorEscalationError, so
  its own parent decides.
* Restarts wait a jittered exponential backoff that grows with the child's restarts
  in the intensity window.
* Stop: each child is asked to stop (``ctx.on_stop_requested``), given its
  ``shutdown_timeout``, then cancelled. Cancelling the supervisor itself cancels all
  children at once (an immediate stop).
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from runtime.actors.clock import Clock, SystemClock
from runtime.actors.registry import Registry
from runtime.log import get_logger

log = get_logger(__name__)


class Restart(enum.Enum):
    """Whether a child that exited is started again."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children are restarted when one fails."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class RestartIntensity(msgspec.Struct, frozen=True):
    """More than ``max_restarts`` restarts within ``within`` seconds escalates."""

    max_restarts: int = 3
    within: float = 5.0


class Backoff(msgspec.Struct, frozen=True):
    """Delay before the n-th restart of a child within the intensity window:
    ``min(maximum, initial * factor**(n-1))``, less up to ``jitter`` of it at random."""

    initial: float = 0.05
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * rng.random())


class ChildSpec(msgspec.Struct, frozen=True):
    """How to run one child.

    ``start(ctx)`` is the child's whole life: it calls ``ctx.ready()`` once started
    and returns (or raises) when it ends. ``terminate(ctx)``, if given, is called
    once when the supervisor drops the child for good (not between restarts).
    """

    id: str
    start: Callable[[ChildContext], Awaitable[None]]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    start_timeout: float = 60.0
    terminate: Callable[[ChildContext], None] | None = None


class SupervisorEscalationError(RuntimeError):
    """A supervisor gave up: its children failed more often than its intensity allows."""


class ChildStartError(RuntimeError):
    """A child ended or hung before signalling ready, without an error of its own."""


class ChildContext:
    """What a running child receives from its supervisor."""

    __slots__ = (
        "_ready",
        "_stop_callbacks",
        "_stop_event",
        "_stop_requested",
        "clock",
        "name",
        "registry",
    )

    def __init__(self, name: str, registry: Registry, clock: Clock) -> None:
        self.name = name
        self.registry = registry
        self.clock = clock
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop_requested = False
        self._stop_callbacks: list[Callable[[], None]] = []
        self._stop_event: asyncio.Event | None = None

    def ready(self) -> None:
        """Signal that the child has started. Idempotent."""
        if not self._ready.done():
            self._ready.set_result(None)

    @property
    def is_ready(self) -> bool:
        return self._ready.done()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def on_stop_requested(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (synchronously) when a graceful stop is requested."""
        if self._stop_requested:
            callback()
        else:
            self._stop_callbacks.append(callback)

    async def wait_stop_requested(self) -> None:
        if self._stop_requested:
            return
        if self._stop_event is None:
            self._stop_event = asyncio.Event()
        await self._stop_event.wait()

    def request_stop(self) -> None:
        """Ask the child to finish what it is doing and return."""
        if self._stop_requested:
            return
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()
        callbacks, self._stop_callbacks = self._stop_callbacks, []
        for callback in callbacks:
            callback()


class ChildState(enum.Enum):
    DOWN = "down"
    RUNNING = "running"
    STOPPING = "stopping"
    REMOVED = "removed"


class _Child:
    __slots__ = ("ctx", "incarnation", "restart_times", "spec", "state", "task")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state = ChildState.DOWN
        self.task: asyncio.Task[None] | None = None
        self.ctx: ChildContext | None = None
        self.incarnation = 0
        self.restart_times: deque[float] = deque()


_Exit = tuple[_Child, int, BaseException | None]


class Supervisor:
    """Runs children by :class:`ChildSpec`; use :meth:`run` as a child's ``start``
    (see :func:`supervisor_spec`) or let :class:`ActorSystem` run the root one."""

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: RestartIntensity = RestartIntensity(),  # noqa: B008 - frozen value
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        ids = [spec.id for spec in children]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"supervisor {name!r}: duplicate child ids {duplicates}")
        self.name = name
        self.specs = tuple(children)
        self.strategy = strategy
        self.intensity = intensity
        self.backoff = backoff
        self._clock_override = clock
        self._rng = rng or random.Random()
        self._children: list[_Child] = []
        self._exits: deque[_Exit] = deque()
        self._wakeup = asyncio.Event()
        self._restart_times: deque[float] = deque()
        self._stopping = False
        self._stop_future: asyncio.Future[None] | None = None
        self._clock: Clock = clock or SystemClock()
        self._registry = Registry()
        self.restarts = 0

    # -- introspection -------------------------------------------------------
    def children(self) -> list[tuple[str, ChildState]]:
        return [(c.spec.id, c.state) for c in self._children]

    def child_task(self, child_id: str) -> asyncio.Task[None] | None:
        for c in self._children:
            if c.spec.id == child_id:
                return c.task
        raise KeyError(child_id)

    # -- the child's life ----------------------------------------------------
    async def run(self, ctx: ChildContext) -> None:
        """Start the children, supervise them until a stop is requested, stop them."""
        self._registry = ctx.registry
        self._clock = self._clock_override or ctx.clock
        self._children = [_Child(spec) for spec in self.specs]
        self._exits.clear()
        self._restart_times.clear()
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._stop_future = asyncio.get_running_loop().create_future()
        ctx.on_stop_requested(self._on_stop_requested)
        try:
            for child in self._children:
                if self._stopping:
                    break
                try:
                    await self._start_child(child)
                except Exception:
                    await self._stop_all()
                    raise
            ctx.ready()
            while not self._stopping:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._exits and not self._stopping:
                    child, incarnation, error = self._exits.popleft()
                    if child.incarnation != incarnation or child.state is not ChildState.RUNNING:
                        continue
                    child.state = ChildState.DOWN
                    await self._recover(child, error)
            await self._stop_all()
        except asyncio.CancelledError:
            await self._kill_all()
            raise

    def _stop_requested(self) -> bool:
        return self._stopping

    def _on_stop_requested(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._stop_future is not None and not self._stop_future.done():
            self._stop_future.set_result(None)

    # -- starting ------------------------------------------------------------
    async def _start_child(self, child: _Child) -> None:
        spec = child.spec
        ctx = ChildContext(f"{self.name}/{spec.id}", self._registry, self._clock)
        child.incarnation += 1
        task = asyncio.create_task(_run_child(spec, ctx), name=ctx.name)
        child.task = task
        child.ctx = ctx
        timeout = None if spec.start_timeout == math.inf else spec.start_timeout
        try:
            await asyncio.wait({ctx._ready, task}, timeout=timeout, return_when="FIRST_COMPLETED")
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task})
            raise
        if ctx.is_ready:
            child.state = ChildState.RUNNING
            incarnation = child.incarnation
            task.add_done_callback(lambda t: self._on_child_exit(child, incarnation, t))
            log.debug("supervisor.child_started", supervisor=self.name, child=spec.id)
            return
        child.state = ChildState.DOWN
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            raise ChildStartError(
                f"child {spec.id!r} of supervisor {self.name!r} did not signal ready "
                f"within its start_timeout of {spec.start_timeout}s"
            )
        error = _exit_error(task)
        if error is not None:
            raise error
        raise ChildStartError(
            f"child {spec.id!r} of supervisor {self.name!r} returned before signalling ready"
        )

    def _on_child_exit(self, child: _Child, incarnation: int, task: asyncio.Task[None]) -> None:
        self._exits.append((child, incarnation, _exit_error(task)))
        self._wakeup.set()

    # -- restarting ----------------------------------------------------------
    async def _recover(self, failed: _Child, error: BaseException | None) -> None:
        pending: list[tuple[_Child, BaseException | None]] = [(failed, error)]
        while pending and not self._stop_requested():
            child, error = pending.pop()
            spec = child.spec
            if error is None:
                log.info("supervisor.child_exited", supervisor=self.name, child=spec.id)
            else:
                log.error(
                    "supervisor.child_failed",
                    supervisor=self.name,
                    child=spec.id,
                    error=repr(error),
                    exc_info=error if isinstance(error, Exception) else None,
                )
            if not _should_restart(spec.restart, error):
                self._remove(child)
                continue
            await self._count_restart(child, error)
            for other in reversed(self._affected(child)):
                if other is not child and other.state is ChildState.RUNNING:
                    await self._stop_child(other)
                    if other.spec.restart is Restart.TEMPORARY:
                        self._remove(other)
                    else:
                        other.state = ChildState.DOWN
            await self._sleep_or_stop(self.backoff.delay(len(child.restart_times), self._rng))
            if self._stop_requested():
                return
            for other in self._children:
                if other.state is not ChildState.DOWN:
                    continue
                try:
                    await self._start_child(other)
                    self.restarts += 1
                except Exception as start_error:
                    pending.append((other, start_error))
                    break

    def _affected(self, child: _Child) -> list[_Child]:
        live = [c for c in self._children if c.state is not ChildState.REMOVED]
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return live
        return live[live.index(child) :]

    async def _count_restart(self, child: _Child, error: BaseException | None) -> None:
        now = self._clock.monotonic()
        horizon = now - self.intensity.within
        for window in (self._restart_times, child.restart_times):
            window.append(now)
            while window and window[0] < horizon:
                window.popleft()
        if len(self._restart_times) > self.intensity.max_restarts:
            # The one line that says why everything stops; the parent (or the process)
            # decides what comes next.
            log.error(
                "supervisor.escalating",
                supervisor=self.name,
                child=child.spec.id,
                restarts=len(self._restart_times),
                within=self.intensity.within,
                max_restarts=self.intensity.max_restarts,
                error=repr(error),
                action="stopping every child of this supervisor and failing it",
            )
            await self._stop_all()
            raise SupervisorEscalationError(
                f"supervisor {self.name!r} gave up: more than {self.intensity.max_restarts} "
                f"restarts within {self.intensity.within}s; last failure was child "
                f"{child.spec.id!r}: {error!r}"
            ) from error

    async def _sleep_or_stop(self, delay: float) -> None:
        if delay <= 0 or self._stop_future is None:
            return
        sleeper = asyncio.create_task(self._clock.sleep(delay), name=f"{self.name}/backoff")
        try:
            await asyncio.wait({sleeper, self._stop_future}, return_when="FIRST_COMPLETED")
        finally:
            sleeper.cancel()
            await asyncio.wait({sleeper})

    # -- stopping ------------------------------------------------------------
    async def _stop_child(self, child: _Child) -> None:
        task, ctx = child.task, child.ctx
        child.state = ChildState.STOPPING
        if task is None or ctx is None or task.done():
            return
        ctx.request_stop()
        timeout = child.spec.shutdown_timeout
        if timeout > 0:
            await asyncio.wait({task}, timeout=None if timeout == math.inf else timeout)
        if not task.done():
            log.warning(
                "supervisor.shutdown_timeout",
                supervisor=self.name,
                child=child.spec.id,
                timeout=timeout,
            )
            task.cancel()
            while not (await asyncio.wait({task}, timeout=5.0))[0]:
                log.error(
                    "supervisor.child_ignores_cancel", supervisor=self.name, child=child.spec.id
                )
                task.cancel()
        error = _exit_error(task)
        if error is not None and not isinstance(error, asyncio.CancelledError):
            log.warning(
                "supervisor.child_failed_stopping",
                supervisor=self.name,
                child=child.spec.id,
                error=repr(error),
            )

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            if child.state is ChildState.RUNNING:
                await self._stop_child(child)
        for child in reversed(self._children):
            self._remove(child)

    async def _kill_all(self) -> None:
        tasks = [c.task for c in self._children if c.task is not None and not c.task.done()]
        for c in self._children:
            if c.state is ChildState.RUNNING:
                c.state = ChildState.STOPPING
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            for task in tasks:
                _exit_error(task)
        for child in reversed(self._children):
            self._remove(child)

    def _remove(self, child: _Child) -> None:
        if child.state is ChildState.REMOVED:
            return
        child.state = ChildState.REMOVED
        if child.spec.terminate is not None and child.ctx is not None:
            try:
                child.spec.terminate(child.ctx)
            except Exception:
                log.exception(
                    "supervisor.terminate_failed", supervisor=self.name, child=child.spec.id
                )


async def _run_child(spec: ChildSpec, ctx: ChildContext) -> None:
    await spec.start(ctx)


def _exit_error(task: asyncio.Task[None]) -> BaseException | None:
    """How a child task ended: None for a normal return, else the error (also marks it seen)."""
    if task.cancelled():
        return asyncio.CancelledError(f"child task {task.get_name()!r} was cancelled")
    return task.exception()


def _should_restart(restart: Restart, error: BaseException | None) -> bool:
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return error is not None
    return False


def supervisor_spec(
    id: str,
    children: Sequence[ChildSpec],
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: RestartIntensity = RestartIntensity(),  # noqa: B008 - frozen value
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = math.inf,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> ChildSpec:
    """A child spec for a nested supervisor. Its default shutdown timeout is infinite:
    its own children's timeouts bound its stop."""
    supervisor = Supervisor(
        id, children, strategy=strategy, intensity=intensity, backoff=backoff, clock=clock, rng=rng
    )
    return ChildSpec(
        id=id,
        start=supervisor.run,
        restart=restart,
        shutdown_timeout=shutdown_timeout,
        start_timeout=math.inf,
    )
