"""What a runnable task sees while it runs on a worker: :class:`RunContext`.

A runnable task implements ``async def run(self, ctx: RunContext) -> dict | None``:
it renders its own properties with ``ctx.render``, logs through ``ctx.log``, keeps
files in ``ctx.workdir`` and returns its outputs. Raising :class:`TaskFailure` (or
any exception) fails the attempt; ``ctx.warn(...)`` makes a successful attempt end
in WARNING. Cancellation (a kill or a timeout) arrives as CancelledError.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from runtime.actors.pool import ProcessPool


class TaskFailure(Exception):
    """The task failed for a reason a person can act on; the message is logged as is.
    ``outputs`` are kept on the failed task run (a WorkingDirectory's children)."""

    def __init__(self, message: str, *, outputs: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.outputs = outputs


class TaskStorage(Protocol):
    """The part of internal storage tasks use (backends.protocols.Storage has it all)."""

    async def put(self, namespace: str, path: str, data: bytes | AsyncIterator[bytes]) -> str: ...
    async def get(self, uri: str) -> bytes: ...
    async def exists(self, uri: str) -> bool: ...
    async def delete(self, uri: str) -> bool: ...
    async def list(self, namespace: str, prefix: str = "") -> builtins.list[str]: ...


class KVEntryLike(Protocol):
    @property
    def value(self) -> Any: ...


class TaskKV(Protocol):
    """The part of the KV store tasks use (backends.protocols.KVStore has it all)."""

    async def get(self, namespace: str, key: str) -> KVEntryLike | None: ...
    async def set(
        self, namespace: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> Any: ...
    async def delete(self, namespace: str, key: str) -> bool: ...


class TaskLogger(Protocol):
    def debug(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def error(self, message: str) -> None: ...
    def log(self, level: str, message: str) -> None: ...


class RunContext(Protocol):
    """The worker's services for one attempt of one task run."""

    # Read-only properties, so implementations may narrow the types.
    @property
    def execution_id(self) -> str: ...

    @property
    def task_run_id(self) -> str: ...

    @property
    def task_id(self) -> str: ...

    @property
    def attempt(self) -> int: ...

    @property
    def namespace(self) -> str: ...

    @property
    def flow_id(self) -> str: ...

    @property
    def variables(self) -> dict[str, Any]:
        """What templates see (inputs, outputs, vars, execution, taskrun, ...)."""
        ...

    @property
    def workdir(self) -> Path:
        """A private temporary folder for this attempt, deleted afterwards."""
        ...

    @property
    def log(self) -> TaskLogger: ...

    @property
    def storage(self) -> TaskStorage: ...

    @property
    def kv(self) -> TaskKV: ...

    @property
    def pool(self) -> ProcessPool:
        """The worker's process pool, for CPU-bound Python callables."""
        ...

    async def render(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        """Render templates in ``value`` (strings inside lists and dicts too), with
        secret(), kv() and read() available; ``extra`` adds variables."""
        ...

    def warn(self, reason: str) -> None:
        """End this attempt in WARNING instead of SUCCESS."""
        ...

    def metric(
        self, name: str, type: str, value: float, tags: dict[str, str] | None = None
    ) -> None:
        """Report a metric of this attempt: ``type`` "counter" (a count) or "timer"
        (seconds); stored with the task run and served by /api/v1/metrics."""
        ...

    def on_kill(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the attempt is killed or times out, before the
        cancellation (scripts kill their process group here)."""
        ...
