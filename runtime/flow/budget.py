"""CPU-time and memory budgets for template evaluations.

A flow is user input, so every evaluation (one property, one condition) runs under
a :class:`Meter`: the values it builds are charged against ``memory_bytes`` and
its CPU time against ``cpu_seconds``. The meter is checked where work can grow
(filters, functions, operators, loop iterations, output), so a plain lookup such
as ``{{ inputs.name }}`` reads no clock at all: that keeps the hot path cheap.

Where the work cannot be checked from Python, it runs where it can be stopped:
jq programs in a killable child process (:mod:`runtime.flow.jq_process`), regular
expressions in the ``regex`` library with a timeout.

An event loop must stay responsive, so a caller on a loop goes through
:func:`evaluate` (or :func:`evaluate_async`): the evaluation first runs in place
with a short *loop slice*; one that needs more (or needs jq) is abandoned with
:class:`LeaveTheLoop` and run again from the start, with the full budget, in a
small thread pool. Evaluations are pure (the engine's are; a worker's re-asks its
services), so running one again is safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import regex

from runtime.flow.template_values import ExpressionFailure

__all__ = [
    "LeaveTheLoop",
    "Limits",
    "Meter",
    "OverBudget",
    "configure",
    "evaluate",
    "evaluate_async",
    "limits",
    "active",
    "activate",
    "new_meter",
    "regex_split",
    "regex_sub",
    "size_of",
]

T = TypeVar("T")
P = ParamSpec("P")

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The budget of one evaluation, and how long one may run on an event loop."""

    cpu_seconds: float = 1.0
    memory_bytes: int = 64 * _MIB
    #: an evaluation on an event loop taking longer than this moves to a thread
    loop_slice_seconds: float = 0.02


_limits = Limits()


def configure(new: Limits) -> None:
    """Set the process's budgets (the server calls this with its settings)."""
    global _limits
    if new.cpu_seconds <= 0 or new.memory_bytes <= 0 or new.loop_slice_seconds <= 0:
        raise ValueError(
            "settings `template.cpu_seconds`, `template.memory_bytes` and "
            f"`template.loop_slice_seconds` must be positive; got {new}"
        )
    _limits = new


def limits() -> Limits:
    """The process's budgets."""
    return _limits


class OverBudget(ExpressionFailure):
    """An evaluation went over its CPU-time or memory budget."""


class LeaveTheLoop(BaseException):
    """The evaluation needs more than an event loop may give it: run it off the loop.

    A BaseException so that no ``except Exception`` on the way (Jinja's, the
    engine's) turns it into an ordinary failure; only :func:`evaluate` catches it.
    """


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _cpu_failure(cpu: float) -> OverBudget:
    return OverBudget(
        f"the expression went over its CPU-time budget of {_seconds(cpu)} "
        "(setting `template.cpu_seconds`); simplify it, or move heavy work to a script task"
    )


def memory_failure(budget: int, needed: int | None = None) -> OverBudget:
    """The error of an evaluation whose values outgrow ``budget`` bytes."""
    grew = f" (it asked for about {needed // _MIB} MiB)" if needed else ""
    return OverBudget(
        f"the expression went over its memory budget of {budget // _MIB} MiB{grew} "
        "(setting `template.memory_bytes`); work on smaller values, or in a script task"
    )


class Meter:
    """The budget account of one evaluation (shared by nested ``render()`` calls)."""

    __slots__ = (
        "cpu_deadline",
        "limits",
        "memory",
        "pass_deadline",
        "started",
        "ticks",
        "wall_deadline",
    )

    def __init__(
        self, budget: Limits, wall_deadline: float | None, pass_deadline: float | None = None
    ) -> None:
        self.limits = budget
        #: off the loop: when the whole pass (all its evaluations) must end
        self.pass_deadline = pass_deadline
        self.memory = 0
        #: set on an event loop: past it the evaluation leaves the loop
        self.wall_deadline = wall_deadline
        self.started = False
        self.cpu_deadline = 0.0
        self.ticks = 0

    @property
    def on_loop(self) -> bool:
        """Whether this evaluation runs on a loop slice (and may be moved off it)."""
        return self.wall_deadline is not None

    def check(self) -> None:
        """Raise when the time is spent. The CPU clock starts at the first check:
        what ran before it was only lookups."""
        if self.wall_deadline is not None:
            if time.perf_counter() > self.wall_deadline:
                raise LeaveTheLoop
            return
        now = time.thread_time()
        if not self.started:
            self.started = True
            self.cpu_deadline = now + self.limits.cpu_seconds
            if self.pass_deadline is not None and self.pass_deadline < self.cpu_deadline:
                self.cpu_deadline = self.pass_deadline
        if now > self.cpu_deadline:
            raise self.out_of_time()

    def charge(self, size: int) -> None:
        """Count ``size`` bytes of a value just built, and check the clock."""
        self.memory += size
        if self.memory > self.limits.memory_bytes:
            raise memory_failure(self.limits.memory_bytes, self.memory)
        self.check()

    def charge_value(self, value: Any) -> None:
        self.charge(size_of(value))

    def add(self, size: int) -> None:
        """Count ``size`` bytes without reading the clock (the text a render returns)."""
        self.memory += size
        if self.memory > self.limits.memory_bytes:
            raise memory_failure(self.limits.memory_bytes, self.memory)

    def tick(self) -> None:
        """One loop iteration; the clock is read every 64."""
        self.ticks += 1
        if not self.ticks & 63:
            self.check()

    def remaining(self) -> float:
        """Seconds left for work done outside Python (jq, a regular expression)."""
        if self.wall_deadline is not None:
            return self.wall_deadline - time.perf_counter()
        self.check()
        return max(self.cpu_deadline - time.thread_time(), 0.0)

    def out_of_time(self) -> BaseException:
        """What to raise when outside work ran out of :meth:`remaining` time."""
        if self.wall_deadline is not None:
            return LeaveTheLoop()
        if self.pass_deadline is not None and self.cpu_deadline >= self.pass_deadline:
            together = _seconds(PASS_FACTOR * self.limits.cpu_seconds)
            return OverBudget(
                f"the expressions of this pass went over {together} of CPU time together"
                f"  ({PASS_FACTOR} times `template.cpu_seconds`); the "
                "remaining ones fail at once so the component can go on with other work"
            )
        return _cpu_failure(self.limits.cpu_seconds)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Time spent awaiting I/O (a secret, a file) is not the loop's time."""
        before = time.perf_counter()
        try:
            yield
        finally:
            if self.wall_deadline is not None:
                self.wall_deadline += time.perf_counter() - before


#: the end of the current loop slice, set by :func:`evaluate` while it runs in place
_slice_end: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "template_slice_end", default=None
)


#: the end of the current pass off the loop (thread CPU time), set by :func:`evaluate`
_pass_end: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "template_pass_end", default=None
)

#: a pass off the loop (an engine pass over one execution's events, one worker render)
#: may spend this many evaluation budgets in all: past it, its remaining evaluations
#: fail at once, and a flow with a hundred heavy expressions cannot hold a thread
#: (and the executor's batch waiting on it) for a hundred budgets
PASS_FACTOR = 5


def new_meter() -> Meter:
    """A meter for one evaluation, with the process's budgets."""
    return Meter(_limits, _slice_end.get(), _pass_end.get())


def _as_a_pass(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    token = _pass_end.set(time.thread_time() + PASS_FACTOR * _limits.cpu_seconds)
    try:
        return function(*args, **kwargs)
    finally:
        _pass_end.reset(token)


#: the meter of the filter being called on this thread (filters get plain arguments)
_active = threading.local()


def activate(meter: Meter) -> None:
    """Make ``meter`` the one :func:`active` returns on this thread: set before
    every filter call, which runs to its end before another task can render."""
    _active.meter = meter


def active() -> Meter:
    """The meter of the evaluation calling a filter (a fresh one outside any)."""
    meter = getattr(_active, "meter", None)
    return meter if isinstance(meter, Meter) else new_meter()


def regex_sub(pattern: str, replace: Any, text: str) -> str:
    """``re.sub`` that stops at the evaluation's deadline (catastrophic backtracking)."""
    meter = active()
    try:
        result: str = regex.sub(
            pattern, replace, text, timeout=max(meter.remaining(), 0.001), concurrent=True
        )
    except TimeoutError:
        raise meter.out_of_time() from None
    except regex.error as exc:
        raise ExpressionFailure(f"invalid regular expression `{pattern}`: {exc}") from None
    meter.charge(len(result))
    return result


def regex_split(pattern: str, text: str, maxsplit: int) -> list[str]:
    """``re.split`` that stops at the evaluation's deadline."""
    meter = active()
    try:
        parts: list[str] = regex.split(
            pattern, text, maxsplit=maxsplit, timeout=max(meter.remaining(), 0.001), concurrent=True
        )
    except TimeoutError:
        raise meter.out_of_time() from None
    except regex.error as exc:
        raise ExpressionFailure(f"invalid regular expression `{pattern}`: {exc}") from None
    return parts


def size_of(value: Any) -> int:
    """A cheap estimate of the bytes a new value holds: one level deep, and from a
    sample of a long collection's items, so that sizing never costs more than a
    few microseconds (summing a million items took most of a second)."""
    if isinstance(value, str):
        return len(value) + 49
    if isinstance(value, (list, tuple)):
        return 56 + _items_size(value, len(value))
    if isinstance(value, dict):
        return 64 + _items_size(value.keys(), len(value)) + _items_size(value.values(), len(value))
    if isinstance(value, int):
        return 28 + value.bit_length() // 8
    return 32


_SAMPLE = 64


def _items_size(items: Iterable[Any], count: int) -> int:
    if count <= _SAMPLE:
        return sum(map(_item_size, items))
    sampled = sum(map(_item_size, itertools.islice(items, _SAMPLE)))
    return sampled * count // _SAMPLE


def check_range(start: Any, end: Any, increment: Any = 1) -> None:
    """Refuse a range whose items would not fit in what is left of the budget,
    before a million of them are built on the loop."""
    if not all(isinstance(n, int) for n in (start, end, increment)) or increment == 0:
        return  # the range itself reports bad bounds
    from runtime.flow.template_operators import MAX_RANGE  # it imports the filters, and they us

    meter = active()
    count = max((end - start) // increment + 1, 0)
    if count > MAX_RANGE:
        return  # over the cap: the range's own error says so
    if meter.memory + count * 36 > meter.limits.memory_bytes:
        raise memory_failure(meter.limits.memory_bytes, meter.memory + count * 36)


def _item_size(item: Any) -> int:
    if isinstance(item, str):
        return len(item) + 57
    if isinstance(item, (list, tuple, dict)):
        return 64 + 40 * len(item)
    return 40


# ---- running off the loop -------------------------------------------------------------

#: evaluations moved off an event loop; bounded, so a flood of heavy expressions
#: queues here instead of starting threads without end
_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="template-budget")


async def evaluate(function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``function(*args)`` (synchronous, renders templates) from an event loop:
    in place within the loop slice, else again in a thread with the full budget."""
    token = _slice_end.set(time.perf_counter() + _limits.loop_slice_seconds)
    try:
        return function(*args, **kwargs)
    except LeaveTheLoop:
        pass
    finally:
        _slice_end.reset(token)
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    call = functools.partial(context.run, _as_a_pass, function, *args, **kwargs)
    return await loop.run_in_executor(_THREADS, call)


class _Bridged:
    """Services whose every async method runs on ``loop`` (where their connections
    live) while the render that calls them runs on a thread's own loop."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._closed:
                raise RuntimeError("the render was abandoned (a timeout, a kill or a stop)")
            future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop)
            self._pending.add(future)
            try:
                return await asyncio.wrap_future(future)
            finally:
                self._pending.discard(future)

        return call

    def close(self) -> None:
        """Cancel the calls still waiting: once the caller gave up (or its loop is
        stopping), they might never be answered, and the thread would wait for ever."""
        self._closed = True
        for future in list(self._pending):
            future.cancel()


async def evaluate_async(function: Callable[[Any], Awaitable[T]], services: Any) -> T:
    """:func:`evaluate` for an async render given ``services`` (a worker's
    secret/kv/read). Off the loop it runs on a private loop in a thread, with
    ``services`` still called on this loop."""
    token = _slice_end.set(time.perf_counter() + _limits.loop_slice_seconds)
    try:
        return await function(services)
    except LeaveTheLoop:
        pass
    finally:
        _slice_end.reset(token)
    loop = asyncio.get_running_loop()
    bridged = None if services is None else _Bridged(services, loop)
    context = contextvars.copy_context()

    def in_thread() -> T:
        # a private loop that serves nothing else: blocking it is the point, so its
        # debug mode's slow-step warnings would only be noise
        return asyncio.run(_awaited(function(bridged)), debug=False)

    try:
        return await loop.run_in_executor(_THREADS, context.run, _as_a_pass, in_thread)
    finally:
        if bridged is not None:
            bridged.close()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
