"""Builds the components of one process as one supervision tree.

``runtime run --all`` runs them all (liveness, flow deployer, executor, worker,
scheduler, webserver); ``runtime run executor`` and friends run one each. Backends
and storage are chosen by the config's ``type`` strings, and their drivers are
imported only when chosen.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from backends.errors import Transient
from backends.protocols import Backend, Storage
from runtime.actors import ActorSystem, ChildContext, ChildSpec
from runtime.config import Config, ConfigError
from runtime.flow import budget, context
from runtime.flow.execution import Execution
from runtime.log import get_logger
from services.common import instance_id, sleep_or_stop
from services.executor import Executor
from services.flows import FlowCache, deploy_file, deploy_folder
from services.liveness import Liveness
from services.metrics_listener import MetricsListener
from services.scheduler import Scheduler
from services.tracing import make_tracer
from services.webserver.server import Webserver
from services.worker import Worker, secrets_from_env

log = get_logger(__name__)

#: what a Server runs unless told otherwise (tests, `runtime flow test`): no listening socket
COMPONENTS = ("executor", "worker", "scheduler")
#: what `runtime run --all` runs
ALL_COMPONENTS = (*COMPONENTS, "webserver")

_BACKENDS = {
    "memory": ("backends.memory", "MemoryBackend"),
    "sqlite": ("backends.sqlite", "SqliteBackend"),
    "postgres": ("backends.postgres", "PostgresBackend"),
    "mysql": ("backends.mysql", "MysqlBackend"),
    "kafka": ("backends.kafka.backend", "KafkaBackend"),
}
#: drivers the base install leaves out: backend -> (driver modules, the extra adding them)
_EXTRAS = {
    "postgres": (frozenset({"asyncpg"}), "postgres"),
    "mysql": (frozenset({"aiomysql", "pymysql"}), "mysql"),
    "kafka": (frozenset({"aiokafka"}), "kafka"),
}
#: backends only one process uses at a time (liveness may re-queue every foreign lease)
_EXCLUSIVE = frozenset({"memory", "sqlite"})


class _Component(Protocol):
    async def run(self, ctx: ChildContext) -> None: ...


def make_backend(config: Config) -> Backend:
    """The backend named by ``backend.type``."""
    kind = config.backend.type.lower()
    if kind not in _BACKENDS:
        known = ", ".join(sorted(_BACKENDS))
        raise ConfigError(f"setting `backend.type`: unknown backend {kind!r} (known: {known})")
    module_name, class_name = _BACKENDS[kind]
    cls: Any = getattr(_import_backend(kind, module_name), class_name)
    if kind == "sqlite":
        path = config.sqlite_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, synchronous=config.backend.synchronous)  # type: ignore[no-any-return]
    if kind == "postgres":
        if not config.backend.dsn:
            raise ConfigError(
                "setting `backend.dsn` (or RUNTIME_BACKEND_DSN) is required for the postgres "
                "backend, e.g. postgresql://runtime@127.0.0.1:5432/runtime"
            )
        return cls(  # type: ignore[no-any-return]
            config.backend.dsn, schema=config.backend.schema, pool_max=config.backend.pool_max
        )
    if kind == "mysql":
        if not config.backend.dsn:
            raise ConfigError(
                "setting `backend.dsn` (or RUNTIME_BACKEND_DSN) is required for the mysql "
                "backend, e.g. mysql://runtime:secret@127.0.0.1:3306/runtime"
            )
        try:
            return cls(  # type: ignore[no-any-return]
                config.backend.dsn,
                pool_max=config.backend.pool_max,
                poll_slowest=config.backend.poll_seconds,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if kind == "kafka":
        from backends.kafka.settings import KafkaSettings

        return cls(KafkaSettings.from_config(config))  # type: ignore[no-any-return]
    return cls()  # type: ignore[no-any-return]


def _import_backend(kind: str, module_name: str) -> Any:
    """The backend's module; a driver left out of a lean install is one clear error."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        drivers, extra = _EXTRAS.get(kind, (frozenset(), ""))
        if exc.name is None or exc.name.split(".")[0] not in drivers:
            raise
        raise ConfigError(
            f"setting `backend.type`: the {kind} backend needs the driver {exc.name!r}, "
            f"which this install lacks; install it with: pip install 'runtime[{extra}]'"
        ) from None


def make_storage(config: Config) -> Storage:
    """The storage named by ``storage.type`` (backends/storage_common/factory.py)."""
    from backends.storage_common.factory import make_storage as build

    return build(config.storage, config.storage_path())


class Server:
    """The components of one process, started and stopped together."""

    def __init__(
        self,
        config: Config,
        *,
        components: Sequence[str] = COMPONENTS,
        flows_dir: Path | None = None,
        backend: Backend | None = None,
        storage: Storage | None = None,
        watch: bool = True,
    ) -> None:
        unknown = set(components) - set(ALL_COMPONENTS)
        if unknown:
            raise ConfigError(
                f"unknown component(s) {sorted(unknown)}: use {', '.join(ALL_COMPONENTS)}"
            )
        self.config = config
        try:
            budget.configure(
                budget.Limits(
                    cpu_seconds=config.template.cpu_seconds,
                    memory_bytes=config.template.memory_bytes,
                    loop_slice_seconds=config.template.loop_slice_seconds,
                )
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        context.configure(
            globals_=config.variables.globals,
            environ=os.environ,
            env_prefix=config.variables.env_vars_prefix,
        )
        self.components = tuple(components)
        self.flows_dir = flows_dir
        self.watch = watch
        self.backend = backend if backend is not None else make_backend(config)
        self.storage = storage if storage is not None else make_storage(config)
        self.flows = FlowCache(self.backend)
        #: one per process, kept across executor restarts (None: tracing off)
        self.tracer = make_tracer(config.tracing)
        self.system: ActorSystem | None = None
        #: called with each execution a committed executor batch changed (in-process
        #: observers such as `flow test`); kept here so they survive executor restarts
        self.listeners: list[Callable[[Execution], None]] = []
        #: ids of this process's live worker and scheduler instances (liveness skips them)
        self._own_ids: set[str] = set()
        self._scheduler_id = ""
        #: the instances running now; a restart replaces them
        self.liveness: Liveness | None = None
        self.executor: Executor | None = None
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None
        self.webserver: Webserver | None = None
        self.metrics_listener: MetricsListener | None = None

    def _children(self) -> list[ChildSpec]:
        """One child per component, each started from a factory: a restart builds a
        fresh instance (its process pool, its state), never reruns a spent one."""
        config = self.config
        children: list[ChildSpec] = []
        wanted = set(self.components)
        if wanted & set(COMPONENTS):
            # Not for a webserver alone: it leases nothing, and on an embedded backend
            # liveness would hand back the leases of the process that runs the rest.
            children.append(self._spec("liveness", self._new_liveness, 5.0))
        if self.flows_dir is not None:
            children.append(ChildSpec(id="deployer", start=self._deployer, shutdown_timeout=5.0))
        if "executor" in wanted:
            children.append(self._spec("executor", self._new_executor, 10.0))
        if "worker" in wanted:
            grace = config.worker.grace_seconds + 10.0
            children.append(self._spec("worker", self._new_worker, grace))
        if "scheduler" in wanted:
            children.append(self._spec("scheduler", self._new_scheduler, 5.0))
        if config.metrics.port is not None:
            children.append(self._spec("metrics", self._new_metrics_listener, 5.0))
        if "webserver" in wanted:
            # Last: it starts once the components that carry executions out run, and
            # stops first, so no request arrives while they stop.
            shutdown = config.webserver.shutdown_seconds + 5.0
            children.append(self._spec("webserver", self._new_webserver, shutdown))
        return children

    def _spec(self, id: str, build: Callable[[], _Component], shutdown: float) -> ChildSpec:
        async def start(ctx: ChildContext) -> None:
            component = build()
            try:
                await component.run(ctx)
            finally:
                self._own_ids.discard(getattr(component, "id", ""))

        return ChildSpec(id=id, start=start, shutdown_timeout=shutdown)

    # Each factory also publishes the instance it built (tests, `flow test` look at
    # the running one); a new worker id per instance lets liveness hand back the jobs
    # a failed instance could not give back itself.
    def _new_liveness(self) -> Liveness:
        exclusive = self.config.backend.type.lower() in _EXCLUSIVE
        self.liveness = Liveness(
            self.backend, settings=self.config.liveness, exclusive=exclusive, own_ids=self._own_ids
        )
        return self.liveness

    def _new_executor(self) -> Executor:
        self.executor = Executor(
            self.backend,
            self.flows,
            consumer_id=instance_id("executor"),
            settings=self.config.executor,
            listeners=self.listeners,
            tracer=self.tracer,
        )
        self._own_ids.add(self.executor.id)
        return self.executor

    def _new_worker(self) -> Worker:
        self.worker = Worker(
            self.backend,
            self.storage,
            self.flows,
            worker_id=instance_id("worker"),
            settings=self.config.worker,
            secrets=secrets_from_env(dict(os.environ)),
        )
        self._own_ids.add(self.worker.id)
        return self.worker

    def _new_scheduler(self) -> Scheduler:
        # One id per process, not per instance: a restarted scheduler renews the
        # leader lease its predecessor held instead of waiting out its TTL.
        self._scheduler_id = self._scheduler_id or instance_id("scheduler")
        self.scheduler = Scheduler(
            self.backend,
            self.flows,
            scheduler_id=self._scheduler_id,
            settings=self.config.scheduler,
        )
        self._own_ids.add(self.scheduler.id)
        return self.scheduler

    def _new_metrics_listener(self) -> MetricsListener:
        settings = self.config.metrics
        previous = self.metrics_listener
        if previous is not None and previous.port:
            settings = msgspec.structs.replace(settings, port=previous.port)
        self.metrics_listener = MetricsListener(
            self.backend, settings, users=self.config.webserver.users
        )
        return self.metrics_listener

    def _new_webserver(self) -> Webserver:
        settings = self.config.webserver
        previous = self.webserver
        if previous is not None and previous.port:
            # a restart listens where clients already connect (port 0 picked one)
            settings = msgspec.structs.replace(settings, port=previous.port)
        self.webserver = Webserver(self.backend, self.storage, self.flows, settings)
        return self.webserver

    async def _deployer(self, ctx: ChildContext) -> None:
        """Deploy the flows folder, then redeploy files as they change."""
        assert self.flows_dir is not None
        folder = self.flows_dir
        deployed, problems = await deploy_folder(self.backend.flows, folder)
        for problem in problems:
            log.error("flows.invalid", problem=problem)
        log.info(
            "flows.folder_deployed",
            folder=str(folder),
            flows=len(deployed),
            invalid_files=len({p.split(":", 1)[0] for p in problems}),
        )
        ctx.ready()
        if not self.watch:
            await ctx.wait_stop_requested()
            return
        from watchfiles import Change, awatch

        stop = asyncio.Event()
        ctx.on_stop_requested(stop.set)
        async for changes in awatch(folder, stop_event=stop, recursive=True):
            for change, name in changes:
                path = Path(name)
                if change is Change.deleted or path.suffix not in (".yml", ".yaml"):
                    continue
                try:
                    await deploy_file(self.backend.flows, path)
                except (ValueError, OSError) as exc:
                    log.error("flows.invalid", file=str(path), problem=str(exc))

    async def start(self) -> None:
        await self.backend.start()  # a no-op when connect() started it
        try:
            # Checked before any component runs: a wrong bucket or credentials stop the
            # start with one error naming the setting.
            await self.storage.start()
        except BaseException:
            await self.backend.stop()
            raise
        self.system = ActorSystem(self._children(), name="runtime")
        try:
            await self.system.start()
        except BaseException:
            await self.storage.stop()
            await self.backend.stop()
            raise

    async def stop(self, *, graceful: bool = True) -> None:
        if self.system is not None:
            try:
                await self.system.stop(graceful=graceful)
            finally:
                await self._stop_tracer()
                await self.storage.stop()
                await self.backend.stop()

    async def connect(self, *, max_delay: float = 30.0) -> None:
        """Start the backend, retrying with backoff while it is unreachable (a
        database restarting, a server started before its database); a signal stops
        the waiting."""
        delay = 1.0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            while True:
                try:
                    await self.backend.start()
                    return
                except Transient as exc:
                    log.error("backend.unreachable", error=str(exc), retry_in=delay)
                await sleep_or_stop(stop, delay)
                if stop.is_set():
                    raise SystemExit(0)
                delay = min(max_delay, delay * 2)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def run_until_signalled(self) -> None:
        """Connect (waiting for the backend if need be), start, run until signalled."""
        if self.system is None:
            await self.connect()
            await self.start()
        assert self.system is not None
        try:
            await self.system.run_until_signalled()
        finally:
            await self._stop_tracer()
            await self.storage.stop()
            await self.backend.stop()

    async def _stop_tracer(self) -> None:
        """Export the pending spans (the SDK blocks for it: off the loop)."""
        tracer, self.tracer = self.tracer, None  # once, whichever stop comes first
        if tracer is not None:
            await asyncio.to_thread(tracer.shutdown)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
