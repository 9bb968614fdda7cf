"""Jobs for the process pool tests; a module of its own so spawned workers can import it."""

from __future__ import annotations

import os
import pathlib
import time


def pid() -> int:
    """The worker's process id."""
    return os.getpid()


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def fail(message: str) -> None:
    raise ValueError(message)


class StubbornError(Exception):
    """Pickles, but cannot be unpickled: __init__ takes a second required argument."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")


def fail_stubbornly() -> None:
    raise StubbornError(7, "does not round-trip")


def write_pid_and_sleep(path: str, seconds: float) -> None:
    """Announce our pid through ``path`` (written atomically), then block."""
    tmp = pathlib.Path(f"{path}.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(path)
    time.sleep(seconds)


def exit_with(code: int) -> None:
    os._exit(code)


def hold(seconds: float) -> tuple[int, float, float]:
    """Occupy the worker for ``seconds``; return (pid, start, end) on the monotonic clock."""
    start = time.monotonic()
    time.sleep(seconds)
    return os.getpid(), start, time.monotonic()
