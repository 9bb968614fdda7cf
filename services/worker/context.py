"""What a task sees while a worker runs it: its run context (variables, rendering,
storage, KV, secrets, the process pool, a working directory), its logger, and the
buffer its log lines wait in for the next write."""

from __future__ import annotations

import asyncio
import base64
import binascii
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.protocols import Backend, Storage
from runtime.actors import ProcessPool
from runtime.flow import budgeted
from runtime.flow.context import SECRET_INPUTS
from runtime.flow.execution import METRIC_TYPES, TaskMetric
from runtime.log import get_logger
from runtime.messages import LogEntry, WorkerJob
from runtime.tasks.template_services import WorkerFunctionServices
from services.task_services import BackendTaskServices

log = get_logger("services.worker")


class LogBuffer:
    """Log lines of running tasks, written to the log store in batches."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def add(self, entry: LogEntry) -> None:
        self.entries.append(entry)

    def take(self) -> list[LogEntry]:
        entries, self.entries = self.entries, []
        return entries


class TaskLogger:
    """The ``log`` a task writes to: its lines, tagged with its job, into the buffer."""

    def __init__(self, job: WorkerJob, buffer: LogBuffer, clock: Callable[[], datetime]) -> None:
        self._job = job
        self._buffer = buffer
        self._clock = clock
        #: secret values this task rendered: written as *** in its logs, as Kestra does
        self.masked: set[str] = set()

    def log(self, level: str, message: str) -> None:
        job = self._job
        for secret in self.masked:
            if secret in message:
                # Kestra's mask: as many stars, the first nine of a long one "**masked*"
                stars = "*" * len(secret)
                message = message.replace(secret, stars).replace("*" * 9, "**masked*", 1)
        self._buffer.add(
            LogEntry(
                execution_id=job.execution_id,
                namespace=job.namespace,
                flow_id=job.flow_id,
                timestamp=self._clock(),
                level=level.upper(),
                message=message,
                task_run_id=job.task_run_id,
                task_id=job.task_id,
                attempt=job.attempt,
            )
        )

    def debug(self, message: str) -> None:
        self.log("DEBUG", message)

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        self.log("WARN", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)


class WorkerRunContext:
    """The RunContext a task sees (runtime.tasks.context.RunContext)."""

    def __init__(
        self,
        job: WorkerJob,
        *,
        workdir_parent: str | None,
        logger: TaskLogger,
        storage: Storage,
        backend: Backend,
        pool: ProcessPool,
        secrets: dict[str, str],
    ) -> None:
        self.execution_id = job.execution_id
        self.task_run_id = job.task_run_id
        self.task_id = job.task_id
        self.attempt = job.attempt
        self.namespace = job.namespace
        self.flow_id = job.flow_id
        self.variables = job.variables
        inputs = job.variables.get("inputs") or {}
        for name in job.variables.get(SECRET_INPUTS) or ():
            value = inputs.get(name)
            if isinstance(value, str) and len(value) >= 3:  # as secret() values
                logger.masked.add(value)
        self._workdir_parent = workdir_parent
        self._workdir: Path | None = None
        self.log = logger
        self.storage = storage
        self.kv = backend.kv
        self.logs = backend.logs
        #: what the tasks acting on executions, logs and triggers use
        self.backend_services = BackendTaskServices(backend)
        self.pool = pool
        self._secrets = secrets
        self.warning: str | None = None
        self.kill_callbacks: list[Callable[[], None]] = []
        #: what the attempt reported with metric(), sent with its result
        self.metrics: list[TaskMetric] = []

    @property
    def workdir(self) -> Path:
        """Made on first use: most tasks never need one."""
        if self._workdir is None:
            self._workdir = Path(
                tempfile.mkdtemp(
                    prefix=f"runtime-{self.task_run_id[:8]}-", dir=self._workdir_parent
                )
            )
        return self._workdir

    async def cleanup(self) -> None:
        if self._workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self._workdir, True)

    async def render(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        variables = {**self.variables, **extra} if extra else self.variables
        # on the loop while cheap, else in a thread with the full budget
        return await budgeted.render_value_async(
            value, variables, _TemplateServices(self, self._secrets)
        )

    def warn(self, reason: str) -> None:
        self.warning = reason

    def metric(
        self, name: str, type: str, value: float, tags: dict[str, str] | None = None
    ) -> None:
        if type not in METRIC_TYPES:
            raise ValueError(
                f"metric {name!r} of task {self.task_id!r}: type {type!r} is none of "
                f"{', '.join(METRIC_TYPES)}"
            )
        self.metrics.append(
            TaskMetric(
                name=name,
                type=type,
                value=float(value),
                tags={str(k): str(v) for k, v in (tags or {}).items()},
                timestamp=datetime.now(UTC),
            )
        )

    def on_kill(self, callback: Callable[[], None]) -> None:
        self.kill_callbacks.append(callback)


class _TemplateServices(WorkerFunctionServices):
    """secret(), kv() and read() for the task's templates (the functions reading the
    execution's logs and files come from WorkerFunctionServices)."""

    def __init__(self, ctx: WorkerRunContext, secrets: dict[str, str]) -> None:
        self._ctx = ctx
        self._secrets = secrets

    async def secret(self, key: str) -> str:
        try:
            # Kestra's environment secrets are SECRET_<KEY>: secret('my_key') finds it
            value = self._secrets[key] if key in self._secrets else self._secrets[key.upper()]
        except KeyError:
            raise LookupError(
                f"secret {key!r} is not set: export SECRET_{key.upper()}=<base64 of the value> "
                "in the worker's environment"
            ) from None
        if len(value) >= 3:  # masking a one-letter secret would garble every line
            self._ctx.log.masked.add(value)
        return value

    async def kv(self, key: str, namespace: str | None, error_on_missing: bool) -> Any:
        space = namespace or self._ctx.namespace
        entry = await self._ctx.kv.get(space, key)
        if entry is None:
            if error_on_missing:
                raise LookupError(f"no KV entry {key!r} in namespace {space!r}")
            return None
        return entry.value

    async def read(self, path: str) -> str:
        data = await self._ctx.storage.get(path)
        return data.decode("utf-8", errors="replace")


def call_kill_callbacks(ctx: WorkerRunContext) -> None:
    for callback in ctx.kill_callbacks:
        try:
            callback()
        except Exception as exc:
            log.warning("worker.kill_callback_failed", error=repr(exc))


def secrets_from_env(environ: dict[str, str]) -> dict[str, str]:
    """Kestra's open-source convention: SECRET_<KEY> holds base64 of the value."""
    out = {}
    for name, value in environ.items():
        if name.startswith("SECRET_"):
            try:
                out[name.removeprefix("SECRET_")] = base64.b64decode(value).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                log.warning("worker.secret_not_base64", name=name)
    return out


__all__ = [
    "LogBuffer",
    "TaskLogger",
    "WorkerRunContext",
    "call_kill_callbacks",
    "secrets_from_env",
]
