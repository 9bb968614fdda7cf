"""A bounded pool of worker processes for CPU-bound callables.

Not ProcessPoolExecutor, because it can neither kill the process of one cancelled
call nor survive a crashed worker. Here each call owns one worker process while it
runs: cancelling the call, or its timeout expiring, SIGKILLs exactly that worker, and
a worker that dies fails only its own call. Lost workers are replaced lazily, when a
call next needs one, so the pool keeps its capacity.

The pool and each worker talk over a Unix socket pair in frames: an 8-byte
big-endian length, then a pickle. The pool sends ``(fn, args, kwargs)``; the worker
answers ``(_OK, result)`` or ``(_ERR, pickled exception or None, traceback text,
type name, message)``. The pool's end is non-blocking and read through the event
loop; a worker reads its end with plain blocking calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import msgspec

from runtime.log import get_logger

__all__ = [
    "PoolClosedError",
    "PoolError",
    "ProcessPool",
    "ProcessPoolStatistics",
    "RemoteError",
    "WorkerCrashedError",
]

log = get_logger(__name__)

T = TypeVar("T")

_HEADER: Final = struct.Struct("!Q")
_OK: Final = "ok"
_ERR: Final = "err"
# A worker whose socket hung up is normally already dead; this long it may take to
# finish exiting on its own (so its real exit code is reported) before SIGKILL.
_EXIT_GRACE: Final = 1.0


class PoolError(Exception):
    """Base class of the errors a ProcessPool raises itself."""


class PoolClosedError(PoolError):
    """The pool was stopped before the call could finish."""


class WorkerCrashedError(PoolError):
    """The worker process died while running the call (os._exit, a signal, the OOM killer)."""

    def __init__(
        self, message: str, *, pid: int | None = None, exitcode: int | None = None
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode  #: negative: killed by that signal number


class RemoteError(PoolError):
    """An exception raised by the callable that could not be sent back as itself."""

    def __init__(self, message: str, *, type_name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name  #: qualified name of the original exception type
        self.remote_traceback = remote_traceback


class ProcessPoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a process pool's gauges and counters."""

    size: int  #: the most worker processes that may exist at once
    workers_alive: int  #: worker processes started and not yet reaped
    busy: int  #: workers running a call
    idle: int  #: workers waiting for a call
    waiting: int  #: callers waiting for a free worker
    submitted: int  #: calls accepted by run()
    completed: int  #: calls that returned a result
    failed: int  #: calls whose callable raised
    timed_out: int  #: calls whose timeout expired
    cancelled: int  #: calls whose caller was cancelled
    crashed: int  #: workers that died on their own
    replaced: int  #: workers started in place of a killed or crashed one


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class ProcessPool:
    """Runs picklable callables in at most ``size`` worker processes.

    Callers beyond ``size`` wait for a free worker in FIFO order. Workers are started
    on first need, with the ``start_method`` multiprocessing context: ``spawn`` by
    default, since forking a process that runs an event loop and threads is unsafe.
    Workers are daemonic, so a callable cannot start multiprocessing children of its
    own (subprocesses are fine, and are killed with their worker).
    """

    def __init__(self, size: int, *, name: str = "pool", start_method: str = "spawn") -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ProcessPool {name!r}: size must be a positive integer, got {size!r}")
        methods = multiprocessing.get_all_start_methods()
        if start_method not in methods:
            raise ValueError(
                f"ProcessPool {name!r}: unknown start_method {start_method!r}; "
                f"use one of {', '.join(methods)}"
            )
        self._size = size
        self._name = name
        # typeshed gives get_context(str) a BaseContext without .Process.
        self._process_type: type[BaseProcess] = cast(
            Any, multiprocessing.get_context(start_method)
        ).Process
        self._state = _State.NEW
        # A slot is the right to own a worker process; there are `size` of them, and a
        # killed or crashed worker keeps its slot until it has been reaped, so live
        # processes never outnumber `size`. Idle workers hold no slot but never
        # outnumber the free ones (a worker goes idle exactly when its slot frees).
        self._free_slots = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._workers: set[_Worker] = set()  # every worker not yet reaped
        self._retiring: dict[_Worker, asyncio.Task[int | None]] = {}
        self._drained = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None
        self._started = 0
        self._lost = 0  # workers killed or crashed and not replaced yet
        self._submitted = 0
        self._completed = 0
        self._failed = 0
        self._timed_out = 0
        self._cancelled = 0
        self._crashed = 0
        self._replaced = 0

    @property
    def name(self) -> str:
        """The name the pool logs and names its processes and tasks with."""
        return self._name

    @property
    def size(self) -> int:
        """The most worker processes the pool runs at once."""
        return self._size

    async def start(self) -> None:
        """Open the pool for calls; worker processes start when calls first need them."""
        if self._state is not _State.NEW:
            raise RuntimeError(
                f"ProcessPool {self._name!r} was already started or stopped: a pool runs once, "
                "create a new one"
            )
        self._state = _State.RUNNING
        log.info("pool.started", pool=self._name, size=self._size)

    async def stop(self) -> None:
        """Kill every worker, wait until all are reaped, and fail pending calls.

        Callers waiting for a worker and calls still running get PoolClosedError.
        Idempotent. If the caller is cancelled, the shutdown still completes and a
        later stop() waits for it.
        """
        if self._stop_task is None:
            self._state = _State.CLOSED
            self._stop_task = asyncio.get_running_loop().create_task(
                self._shutdown(), name=f"{self._name}.stop"
            )
        await asyncio.shield(self._stop_task)

    async def __aenter__(self) -> ProcessPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def statistics(self) -> ProcessPoolStatistics:
        """A snapshot of the pool's gauges and counters."""
        return ProcessPoolStatistics(
            size=self._size,
            workers_alive=len(self._workers),
            busy=len(self._busy),
            idle=len(self._idle),
            waiting=sum(1 for waiter in self._waiters if not waiter.done()),
            submitted=self._submitted,
            completed=self._completed,
            failed=self._failed,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
            crashed=self._crashed,
            replaced=self._replaced,
        )

    async def run(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        # Not just asyncio.timeout() around run(), though that kills the worker too: this
        # one is counted in statistics() and names the callable in its error.
        timeout: float | None = None,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker process and return its result.

        ``timeout`` (seconds) bounds the whole call, waiting for a worker included;
        when it expires the worker running the call is killed and TimeoutError is
        raised. An exception raised by ``fn`` is re-raised here, with the remote
        traceback as a note; as a RemoteError when it does not pickle.
        """
        if self._state is not _State.RUNNING:
            raise self._not_running_error()
        described = _describe(fn)
        try:
            request = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            exc.add_note(
                f"ProcessPool {self._name!r}: {described} and its arguments must pickle "
                "(use a module-level function; no lambdas, closures or open resources)"
            )
            raise
        self._submitted += 1
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return cast(T, await self._call(request, described))
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        except TimeoutError:
            if not scope.expired():
                raise  # raised by fn itself
            self._timed_out += 1
            log.info("pool.call_timed_out", pool=self._name, fn=described, timeout=timeout)
            raise TimeoutError(
                f"ProcessPool {self._name!r}: {described} did not finish within {timeout} s, "
                "so its worker process was killed; pass a larger timeout= if it needs longer"
            ) from None

    async def _call(self, request: bytes, described: str) -> Any:
        await self._acquire_slot()
        if self._closed():  # stop() came while the slot was being handed over
            self._release_slot()
            raise self._not_running_error()
        try:
            worker = self._checkout()
        except BaseException:
            self._release_slot()
            raise
        try:
            reply = await worker.call(request)
        except BaseException:
            # Interrupted mid-call (cancelled, timed out): what the worker is doing is
            # unknown, so it cannot serve another call. Kill it.
            await self._retire(worker, grace=None)
            log.info("pool.worker_killed", pool=self._name, pid=worker.pid, fn=described)
            raise
        if reply is None:
            exitcode = await self._retire(worker, grace=_EXIT_GRACE)
            if self._closed():
                raise self._not_running_error()
            self._crashed += 1
            log.warning(
                "pool.worker_crashed",
                pool=self._name,
                pid=worker.pid,
                exitcode=exitcode,
                fn=described,
            )
            raise WorkerCrashedError(
                f"ProcessPool {self._name!r}: worker process {worker.pid} died while running "
                f"{described}, {_describe_exit(exitcode)}; the pool replaces it. Exit codes "
                "-9 (SIGKILL, often the OOM killer) or -11 (SIGSEGV) point at memory use or "
                "a crashing extension module",
                pid=worker.pid,
                exitcode=exitcode,
            )
        if not self._closed():
            self._checkin(worker)
        else:  # stop() is killing it; the call itself did finish
            await self._retire(worker, grace=None)
        return self._decode(reply, worker.pid)

    def _decode(self, reply: bytearray, pid: int) -> Any:
        message = pickle.loads(reply)
        if message[0] == _OK:
            self._completed += 1
            return message[1]
        self._failed += 1
        _, blob, remote_traceback, type_name, text = message
        error: BaseException | None = None
        if blob is not None:
            with contextlib.suppress(Exception):
                error = pickle.loads(blob)
        if error is None:
            error = RemoteError(
                f"{type_name}: {text}", type_name=type_name, remote_traceback=remote_traceback
            )
        error.add_note(
            f"Remote traceback (worker process {pid} of ProcessPool {self._name!r}):\n"
            f"{remote_traceback.rstrip()}"
        )
        raise error

    async def _acquire_slot(self) -> None:
        if self._free_slots and not self._waiters:
            self._free_slots -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            # Handed a slot in the same instant as being cancelled: pass it on.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_slot()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def _release_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the longest waiter
                return
        self._free_slots += 1

    def _checkout(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()  # most recently used: its caches are warm
            if worker.process.exitcode is None:
                self._busy.add(worker)
                return worker
            # Died while idle (a stray kill, the OOM killer); exitcode reaped it.
            self._crashed += 1
            self._lost += 1
            log.warning(
                "pool.worker_died_idle",
                pool=self._name,
                pid=worker.pid,
                exitcode=worker.process.exitcode,
            )
            worker.close()
            self._workers.discard(worker)
        worker = _Worker(self._process_type, f"{self._name}-worker-{self._started}")
        self._started += 1
        if self._lost:
            self._lost -= 1
            self._replaced += 1
        self._workers.add(worker)
        self._busy.add(worker)
        log.debug("pool.worker_started", pool=self._name, pid=worker.pid)
        return worker

    def _checkin(self, worker: _Worker) -> None:
        self._busy.discard(worker)
        self._idle.append(worker)
        self._release_slot()

    async def _retire(self, worker: _Worker, *, grace: float | None) -> int | None:
        """Kill (after ``grace`` seconds) and reap a busy worker, then free its slot.

        The work runs in a task of its own, so a caller cancelled again while waiting
        for it does not leave the slot taken or the process unreaped.
        """
        self._busy.discard(worker)
        task = self._retiring.get(worker)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._reap_and_release(worker, grace), name=f"{self._name}.retire.{worker.pid}"
            )
            self._retiring[worker] = task
            task.add_done_callback(self._retired)
        return await asyncio.shield(task)

    async def _reap_and_release(self, worker: _Worker, grace: float | None) -> int | None:
        try:
            exitcode = await worker.exited(grace)
        finally:
            worker.close()
            self._workers.discard(worker)
            self._retiring.pop(worker, None)
            if self._state is _State.CLOSED and not self._workers:
                self._drained.set()
        if self._state is not _State.CLOSED:
            self._lost += 1
        # Only now that the process is gone may another one take its place.
        self._release_slot()
        return exitcode

    def _retired(self, task: asyncio.Task[int | None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("pool.reap_failed", pool=self._name, task=task.get_name(), error=repr(error))

    async def _shutdown(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._not_running_error())
        idle, self._idle = self._idle, []
        workers = list(self._workers)
        for worker in workers:
            worker.kill()
        results = await asyncio.gather(
            *(worker.exited(None) for worker in workers), return_exceptions=True
        )
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                log.error("pool.reap_failed", pool=self._name, pid=worker.pid, error=repr(result))
        for worker in idle:
            worker.close()
            self._workers.discard(worker)
        # Busy workers are closed by their callers, which wake up to the hang-up.
        if self._workers:
            await self._drained.wait()
        log.info("pool.stopped", pool=self._name, started=self._started)

    def _closed(self) -> bool:
        # A call, which type checkers do not narrow: stop() may close the pool at any await.
        return self._state is _State.CLOSED

    def _not_running_error(self) -> Exception:
        if self._state is _State.NEW:
            return RuntimeError(
                f"ProcessPool {self._name!r} is not started: "
                "call `await pool.start()` or use `async with pool:` first"
            )
        return PoolClosedError(f"ProcessPool {self._name!r} was stopped; create a new pool")


class _Worker:
    """One worker process and the pool's end of its socket."""

    def __init__(self, process_type: type[BaseProcess], name: str) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = process_type(target=_worker_main, args=(theirs,), name=name, daemon=True)
            # Not off-loop: like asyncio's own subprocess support, this is one fork+exec
            # and a small pipe write, a few milliseconds.
            self.process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its own copy now
        ours.setblocking(False)
        self.sock = ours
        self.pid = cast(int, self.process.pid)
        self._exit: asyncio.Task[int | None] | None = None

    async def call(self, request: bytes) -> bytearray | None:
        """Send one request and return the reply; None if the worker hung up."""
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self.sock, _HEADER.pack(len(request)))
            await loop.sock_sendall(self.sock, request)
            header = await _recv_exactly(loop, self.sock, _HEADER.size)
            if header is None:
                return None
            return await _recv_exactly(loop, self.sock, _HEADER.unpack(header)[0])
        except ConnectionError:
            return None

    def kill(self) -> None:
        """SIGKILL the worker and its process group, unless it is already reaped."""
        if self.process.exitcode is not None:
            return  # reaped: its pid may belong to someone else by now
        # The worker leads its own process group (see _worker_main), so this also kills
        # what fn started. Early in the worker's start the group does not exist yet.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.kill()

    def exited(self, grace: float | None) -> asyncio.Task[int | None]:
        """The task reaping this worker, created on first call; it returns the exit code.

        It waits up to ``grace`` seconds (None: none) for the process to exit on its
        own, then kills it.
        """
        if self._exit is None:
            self._exit = asyncio.get_running_loop().create_task(
                self._reap(grace), name=f"{self.process.name}.reap"
            )
        return self._exit

    async def _reap(self, grace: float | None) -> int | None:
        if grace is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._sentinel_ready()
        self.kill()
        await self._sentinel_ready()
        if self.process.exitcode is None:
            # The sentinel fires when the child's descriptors close, a moment before the
            # kernel lets it be reaped; finish that short wait off the loop.
            await asyncio.to_thread(self.process.join)
        return self.process.exitcode

    async def _sentinel_ready(self) -> None:
        if self.process.exitcode is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        sentinel = self.process.sentinel
        loop.add_reader(sentinel, _resolve, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sentinel)

    def close(self) -> None:
        """Release the socket and the process handle; call once the process is reaped."""
        self.sock.close()
        try:
            self.process.close()
        except ValueError:
            log.error("pool.worker_not_reaped", pid=self.pid, process=self.process.name)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _recv_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = await loop.sock_recv_into(sock, view[received:])
        if count == 0:
            return None
        received += count
    return buffer


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else name


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            return f"exit code {exitcode} (killed by {signal.Signals(-exitcode).name})"
        except ValueError:
            return f"exit code {exitcode} (killed by signal {-exitcode})"
    return f"exit code {exitcode}"


# What follows runs in the worker processes.


def _worker_main(sock: socket.socket) -> None:
    """Serve calls from the pool until it hangs up."""
    # Lead a process group of our own: the pool kills the whole group, so processes fn
    # started die with their worker, and a Ctrl-C at the terminal reaches only the
    # parent, which owns shutdown.
    os.setpgrp()
    sock.setblocking(True)
    with sock:
        while (request := _recv_frame(sock)) is not None:
            reply = _execute(request)
            sock.sendall(_HEADER.pack(len(reply)))
            sock.sendall(reply)


def _recv_frame(sock: socket.socket) -> bytes | None:
    header = _recv_exactly_blocking(sock, _HEADER.size)
    if header is None:
        return None
    return _recv_exactly_blocking(sock, _HEADER.unpack(header)[0])


def _recv_exactly_blocking(sock: socket.socket, size: int) -> bytes | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return bytes(buffer)


def _execute(request: bytes) -> bytes:
    try:
        fn, args, kwargs = pickle.loads(request)
        result = fn(*args, **kwargs)
    except Exception as exc:
        return _dump_error(exc)
    try:
        return pickle.dumps((_OK, result), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        exc.add_note(f"while pickling the result of {_describe(fn)} to return it")
        return _dump_error(exc)


def _dump_error(exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(exc))
    blob: bytes | None
    try:
        blob = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        # Exceptions whose __init__ takes other arguments than .args pickle fine but
        # fail to unpickle; find out here, where the traceback is still at hand.
        pickle.loads(blob)
    except Exception:
        blob = None
    try:
        message = str(exc)
    except Exception:
        message = "<str() of the exception failed>"
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return pickle.dumps((_ERR, blob, text, type_name, message), protocol=pickle.HIGHEST_PROTOCOL)
