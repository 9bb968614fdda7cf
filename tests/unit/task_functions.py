"""Functions for the PythonFunction task tests; a module of its own so the pool's
spawned worker processes can import it."""

from __future__ import annotations

import os
import time
from typing import Any


def square(n: int) -> int:
    return n * n


def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs, "pid": os.getpid()}


def pair() -> tuple[int, int]:
    return 1, 2


def not_json() -> object:
    return {1, 2}


def explode(message: str) -> None:
    raise ValueError(message)


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


class Holder:
    @staticmethod
    def double(n: int) -> int:
        return 2 * n


NOT_CALLABLE = 42
