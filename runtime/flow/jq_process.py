"""jq programs in killable child processes (:mod:`runtime.flow.jq_child`).

libjq cannot be interrupted: ``def f: f; f`` never returns and ``[range(1e9)]``
eats memory until the process dies. So a program runs in a child process with
an address-space limit, and the caller waits at most the evaluation's remaining
CPU budget (wall time, which is never less than CPU time) before killing it.
Children are kept and reused, so a jq call costs a pipe round trip, not a start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import msgspec

from runtime.flow.budget import LeaveTheLoop, Meter, memory_failure
from runtime.flow.template_values import ExpressionFailure

__all__ = ["run_jq", "stop_children"]

_HEADER = struct.Struct(">I")
_MAX_IDLE = 2


class _Died(Exception):
    """The child ended before it answered."""


class _Child:
    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.flow.jq_child", str(memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )

    def ask(self, request: bytes, timeout: float) -> bytes | None:
        """The child's answer, or None when ``timeout`` passed first."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        try:
            self.process.stdin.write(_HEADER.pack(len(request)) + request)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died from None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        buffer = bytearray()
        wanted = _HEADER.size
        while len(buffer) < wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, max(wanted - len(buffer), 65536))
            if not chunk:
                raise _Died
            buffer += chunk
            if wanted == _HEADER.size and len(buffer) >= _HEADER.size:
                wanted += _HEADER.unpack_from(buffer)[0]
        return bytes(buffer[_HEADER.size : wanted])

    def kill(self) -> int | None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.process.wait()


_lock = threading.Lock()
_idle: list[_Child] = []


def _take(memory: int) -> _Child:
    with _lock:
        while _idle:
            child = _idle.pop()
            if child.memory == memory and child.process.poll() is None:
                return child
            child.kill()
    return _Child(memory)


def _give_back(child: _Child) -> None:
    with _lock:
        if len(_idle) < _MAX_IDLE:
            _idle.append(child)
            return
    child.kill()


def stop_children() -> None:
    """Kill the idle children (at shutdown; busy ones die with their deadline)."""
    with _lock:
        children = list(_idle)
        _idle.clear()
    for child in children:
        child.kill()


atexit.register(stop_children)


def run_jq(program: str, text: str, meter: Meter) -> list[Any]:
    """Run ``program`` on the JSON ``text`` under ``meter``'s budget."""
    if meter.on_loop:
        raise LeaveTheLoop  # a child's round trip, let alone the program, is not for a loop
    memory = meter.limits.memory_bytes
    child = _take(memory)
    timeout = meter.remaining()
    request = msgspec.msgpack.encode((program, text, timeout))
    try:
        reply = child.ask(request, timeout)
    except _Died:
        status = child.kill()
        if status == -signal.SIGXCPU:
            raise meter.out_of_time() from None
        raise memory_failure(memory) from None
    if reply is None:
        child.kill()
        raise meter.out_of_time()
    _give_back(child)
    ok, payload = msgspec.msgpack.decode(reply)
    if not ok:
        if payload == "memory":
            raise memory_failure(memory)
        raise ExpressionFailure(str(payload))
    meter.charge(len(payload))
    results: list[Any] = msgspec.json.decode(payload)
    return results
