"""The jq child process (``python -m runtime.flow.jq_child``): runs one program at a
time for :mod:`runtime.flow.jq_process`, under an address-space limit, and dies
with its parent. libjq runs to completion in C: killing this process is the only
way to stop it, which is why it is a process of its own."""

from __future__ import annotations

import contextlib
import ctypes
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

import jq
import msgspec

_HEADER = struct.Struct(">I")


def _die_with_parent() -> None:
    # A parent killed with -9 cannot kill us: ask Linux to (PR_SET_PDEATHSIG = 1).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at what the interpreter uses now plus the budget."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                current = int(line.split()[1]) * 1024
                limit = current + extra_bytes
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                return


def _read(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return stream.read(_HEADER.unpack(header)[0])


def _write(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _cpu_backstop(seconds: float) -> None:
    """Past the parent's deadline the parent kills us; this covers a parent too
    busy to notice (SIGXCPU ends the process)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    soft = int(spent + seconds) + 2
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _run(program: str, text: str, max_reply: int) -> tuple[bool, Any]:
    try:
        compiled = jq.compile(program)
    except Exception as exc:
        return False, f"invalid jq expression `{program}`: {exc}"
    try:
        results = compiled.input_text(text).all()
    except MemoryError:
        return False, "memory"
    except Exception as exc:
        return False, f"jq expression `{program}` failed: {exc}"
    reply = msgspec.json.encode(results)
    if len(reply) > max_reply:
        return False, "memory"
    return True, reply


def main() -> None:
    _die_with_parent()
    memory = int(sys.argv[1])
    _limit_memory(memory)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (frame := _read(stdin)) is not None:
        program, text, seconds = msgspec.msgpack.decode(frame)
        _cpu_backstop(seconds)
        _write(stdout, msgspec.msgpack.encode(_run(program, text, memory)))


if __name__ == "__main__":
    main()
