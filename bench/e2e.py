"""End-to-end measures through the real server: ``sequential`` and ``fib``.

The executor runs in this process (its listeners tell when an execution ends, see
:func:`bench.standalone.run_once`); on PostgreSQL and MySQL the worker runs in a
subprocess (``runtime run worker``), as in the medium deployment. SQLite is the
embedded backend, one process by definition: its worker runs in this process too.

* ``sequential``: a flow of N sequential Return tasks (Windmill's "40 lightweight
  tasks" shape). Per-task time is split from the task runs' state histories, as
  Windmill's orchestrator benchmark does: *assignment* (CREATED -> RUNNING: the job
  travelling to a worker), *execution* (RUNNING -> terminal) and *transition* (the
  previous task's end -> this task's CREATED: the result travelling back and the
  engine's next step).
* ``fib``: Windmill's flows, 40 x fibo(10) and 10 x fibo(33) one after the other,
  once with the PythonFunction task (the worker's process pool) and once with a
  Python Script task (a new interpreter per task).
"""

from __future__ import annotations

import importlib.util
import secrets
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from backends.postgres.testing import server_dsn
from bench import kafka, postgres
from bench.floor import mysql_connect_kwargs, mysql_dsn
from bench.model import Result, Target
from bench.procs import runtime_command, spawned
from bench.standalone import run_once
from bench.targets import FIB, PER_TASK_FLOORS, SEQUENTIAL, SEQUENTIAL_TOTAL_MS
from runtime.config import load_config
from runtime.flow.execution import Execution
from services.flows import deploy_source
from services.standalone import Server

BACKENDS = ("sqlite", "postgres", "mysql", "kafka")


def sequential_source(tasks: int) -> str:
    return f"id: sequential{tasks}\nnamespace: bench\ntasks:\n" + "".join(
        f"  - id: t{i}\n    type: io.kestra.plugin.core.debug.Return\n    format: '{i}'\n"
        for i in range(tasks)
    )


def fib_sources(count: int, n: int) -> dict[str, str]:
    """Flow id -> source: ``count`` sequential fibo(n), as a PythonFunction and a Script."""
    values = f'"{{{{ range(1, {count}) }}}}"'
    function = (
        f"id: fib_function_{count}x{n}\nnamespace: bench\ntasks:\n"
        f"  - id: each\n    type: io.kestra.plugin.core.flow.ForEach\n    values: {values}\n"
        "    tasks:\n      - id: fibo\n        type: io.kestra.plugin.runtime.PythonFunction\n"
        f'        function: "bench.fib:fibo"\n        args: [{n}]\n'
    )
    script = (
        f"id: fib_script_{count}x{n}\nnamespace: bench\ntasks:\n"
        f"  - id: each\n    type: io.kestra.plugin.core.flow.ForEach\n    values: {values}\n"
        "    tasks:\n      - id: fibo\n        type: io.kestra.plugin.scripts.python.Script\n"
        "        script: |\n"
        "          def fibo(n):\n"
        "              return n if n < 2 else fibo(n - 1) + fibo(n - 2)\n"
        f"          print(fibo({n}))\n"
    )
    return {f"fib_function_{count}x{n}": function, f"fib_script_{count}x{n}": script}


# -- availability ------------------------------------------------------------------------
async def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot be measured here, or None when it can."""
    if backend == "sqlite":
        return None
    if backend == "postgres":
        try:
            await postgres.server_version(server_dsn())
        except Exception as exc:
            return f"PostgreSQL unreachable at {server_dsn()}: {exc}"
        return None
    if backend == "mysql":
        return await mysql_unavailable(need_backend=True)
    if backend == "kafka":
        return await kafka.unavailable()
    return f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})"


def _backend_missing(kind: str, dsn: str) -> str | None:
    """Why the server cannot be configured with ``backend.type: kind``, or None."""
    from services.standalone import make_backend

    try:
        make_backend(load_config(None, {"RUNTIME_BACKEND_TYPE": kind, "RUNTIME_BACKEND_DSN": dsn}))
    except Exception as exc:  # an unknown type, a half-built package: both say "not yet"
        return f"not available: the server has no working {kind} backend yet ({exc})"
    return None


async def mysql_unavailable(*, need_backend: bool) -> str | None:
    if need_backend:
        missing = _backend_missing("mysql", mysql_dsn())
        if missing:
            return missing
    if importlib.util.find_spec("aiomysql") is None:
        return "not available: aiomysql is not installed (pip install -e '.[bench]')"
    import aiomysql  # type: ignore[import-untyped]

    try:
        conn = await aiomysql.connect(**mysql_connect_kwargs(mysql_dsn()), connect_timeout=5)
        conn.close()
    except Exception as exc:
        return f"not available: MySQL unreachable at {mysql_dsn()}: {exc}"
    return None


# -- one backend, fresh, with its worker ---------------------------------------------------
@asynccontextmanager
async def backend_environment(backend: str, folder: Path) -> AsyncIterator[dict[str, str]]:
    """``RUNTIME_*`` settings of an empty database of ``backend``, dropped on exit."""
    base = {"RUNTIME_DATA_DIR": str(folder / "data"), "RUNTIME_LOG_LEVEL": "WARNING"}
    if backend == "sqlite":
        yield {**base, "RUNTIME_BACKEND_TYPE": "sqlite"}
    elif backend == "postgres":
        dsn = server_dsn()
        async with postgres.fresh_schema(dsn) as schema:
            yield {
                **base,
                "RUNTIME_BACKEND_TYPE": "postgres",
                "RUNTIME_BACKEND_DSN": dsn,
                "RUNTIME_BACKEND_SCHEMA": schema,
            }
    elif backend == "mysql":
        async with _mysql_database() as dsn:
            yield {**base, "RUNTIME_BACKEND_TYPE": "mysql", "RUNTIME_BACKEND_DSN": dsn}
    elif backend == "kafka":
        servers = kafka.bootstrap_servers()
        assert servers is not None, f"set {kafka.BOOTSTRAP_VARIABLE}"
        # topics of their own under a fresh prefix (no drop: a broker keeps them)
        yield {
            **base,
            "RUNTIME_BACKEND_TYPE": "kafka",
            "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": servers,
            "RUNTIME_BACKEND_TOPIC_PREFIX": f"bench{secrets.token_hex(4)}.",
            "RUNTIME_BACKEND_PARTITIONS": "4",
            # required on Kafka (issue 14); the measure's components never search
            "RUNTIME_SEARCH_TYPE": "elasticsearch",
            "RUNTIME_SEARCH_HOSTS": "http://127.0.0.1:9",
        }
    else:
        raise ValueError(f"unknown backend {backend!r}")


@asynccontextmanager
async def _mysql_database() -> AsyncIterator[str]:
    """A fresh database on the MySQL server; its DSN; dropped on exit."""
    import aiomysql

    dsn = mysql_dsn()
    name = f"runtime_bench_{secrets.token_hex(6)}"
    kwargs = mysql_connect_kwargs(dsn)

    async def admin(statement: str) -> None:
        conn = await aiomysql.connect(**{**kwargs, "autocommit": True}, connect_timeout=5)
        try:
            async with conn.cursor() as cur:
                await cur.execute(statement)
        finally:
            conn.close()

    await admin(f"CREATE DATABASE {name}")
    try:
        yield dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin(f"DROP DATABASE IF EXISTS {name}")


@asynccontextmanager
async def running_server(
    backend: str, folder: Path, *, concurrency: int, sources: list[str]
) -> AsyncIterator[Server]:
    """The executor in this process; the worker here (SQLite) or in a subprocess."""
    async with backend_environment(backend, folder) as environ:
        embedded = backend == "sqlite"
        environ = {**environ, "RUNTIME_WORKER_CONCURRENCY": str(concurrency)}
        config = load_config(None, environ)
        components = ("executor", "worker") if embedded else ("executor",)
        server = Server(config, components=components, watch=False)
        async with server:
            for source in sources:
                await deploy_source(server.backend.flows, source)
            if embedded:
                yield server
            else:
                with spawned([[*runtime_command(), "run", "worker"]], folder, environ):
                    yield server


# -- the phase split ----------------------------------------------------------------------
def _ms(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() * 1e3


def phases(execution: Execution, dispatched: dict[str, datetime] | None = None) -> dict[str, float]:
    """Medians and totals (ms) of assignment, execution and transition of the task runs.

    The engine dates a task run's CREATED with the event that made it due, which for
    the next task of a sequence is the previous task's end as the worker dated it: the
    histories alone cannot tell the result's trip back from the job's trip out. So
    ``dispatched`` (task run id -> when the executor's transaction that created it
    committed, seen through ``Executor.listeners``) splits them: *transition* is the
    previous task run's end -> its successor dispatched (the result to the executor,
    the engine's pass, the commit), *assignment* is dispatched -> RUNNING (the job to
    a worker), *execution* is RUNNING -> terminal. Without ``dispatched``, CREATED
    stands in for it (and transition is then 0). Also: *start*, the execution's
    CREATED -> its first task run dispatched, and *end*, the last task run's end ->
    the execution's end.
    """
    dispatched = dispatched or {}
    runs = sorted(execution.task_run_list, key=lambda r: r.state.histories[0].date)
    assignment: list[float] = []
    running: list[float] = []
    transition: list[float] = []
    previous_end: datetime | None = None
    for run in runs:
        histories = run.state.histories
        out = dispatched.get(run.id, histories[0].date)
        started = next((h.date for h in histories if h.state.running), out)
        ended = run.state.end_date
        if ended is None:
            raise RuntimeError(f"task run {run.task_id} of {execution.id} has not ended")
        assignment.append(_ms(started, out))
        running.append(_ms(ended, started))
        if previous_end is not None:
            transition.append(_ms(out, previous_end))
        previous_end = ended
    created_at = execution.state.histories[0].date
    ended_at = execution.state.end_date
    figures: dict[str, float] = {}
    for name, values in (
        ("assignment", assignment),
        ("execution", running),
        ("transition", transition),
    ):
        figures[f"{name}_median_ms"] = statistics.median(values) if values else 0.0
        figures[f"{name}_total_ms"] = sum(values)
    first = runs[0] if runs else None
    figures["start_ms"] = (
        _ms(dispatched.get(first.id, first.state.histories[0].date), created_at) if first else 0.0
    )
    figures["end_ms"] = (
        _ms(ended_at, previous_end) if ended_at is not None and previous_end is not None else 0.0
    )
    return figures


class DispatchLog:
    """An executor listener noting when each task run was first seen created."""

    def __init__(self, server: Server) -> None:
        self.clock = server.backend.clock
        self.seen: dict[str, datetime] = {}

    def __call__(self, execution: Execution) -> None:
        now: datetime | None = None
        for run in execution.task_run_list:
            if run.id not in self.seen:
                now = now or self.clock()
                self.seen[run.id] = now


def _median_of(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(d[key] for d in dicts) for key in dicts[0]}


# -- the measures ---------------------------------------------------------------------------
async def sequential(
    backend: str, *, floor_ms: float, tasks: int = 40, repeat: int = 5, concurrency: int = 16
) -> Result:
    """N sequential Return tasks, ``repeat`` times after a warm-up; medians."""
    source = sequential_source(tasks)
    flow_id = f"sequential{tasks}"
    with tempfile.TemporaryDirectory(prefix="runtime-bench-seq-") as scratch:
        folder = Path(scratch)
        async with running_server(
            backend, folder, concurrency=concurrency, sources=[source]
        ) as server:
            await run_once(server, "bench", flow_id, limit_s=60.0)  # warm-up, start-up
            assert server.executor is not None
            log = DispatchLog(server)
            server.executor.listeners.append(log)
            totals: list[float] = []
            splits: list[dict[str, float]] = []
            for _ in range(repeat):
                elapsed, final = await run_once(server, "bench", flow_id)
                totals.append(elapsed * 1e3)
                splits.append(phases(final, log.seen))
            server.executor.listeners.remove(log)
    total = statistics.median(totals)
    result = Result(
        measure=SEQUENTIAL,
        backend=backend,
        settings={
            "tasks": tasks,
            "repeat": repeat,
            "worker_concurrency": concurrency,
            "worker": "same process (embedded)" if backend == "sqlite" else "subprocess",
        },
        figures={
            "total_ms": total,
            "total_best_ms": min(totals),
            "per_task_ms": total / tasks,
            **_median_of(splits),
        },
    )
    result.add_ratios(floor_ms, ["total_ms", "per_task_ms", "assignment_median_ms"])
    result.ratios["transition_median_ms_floors"] = result.figures["transition_median_ms"] / floor_ms
    if backend == "postgres" and tasks == 40:
        result.targets = [
            Target(
                name="40 sequential tasks, PostgreSQL",
                figure="total_ms",
                value=total,
                bound=SEQUENTIAL_TOTAL_MS,
                direction="at_most",
                unit="ms",
            ),
            Target(
                name="per task vs durable hop",
                figure="per_task_ms_floors",
                value=result.ratios["per_task_ms_floors"],
                bound=PER_TASK_FLOORS,
                direction="at_most",
                unit="x floor",
            ),
        ]
    return result


async def fib(
    backend: str,
    *,
    floor_ms: float,
    light: tuple[int, int] = (40, 10),
    heavy: tuple[int, int] = (10, 33),
    repeat: int = 3,
    concurrency: int = 16,
) -> Result:
    """Windmill's two flows, through the process pool and through a script per task."""
    sources: dict[str, str] = {}
    for count, n in (light, heavy):
        sources.update(fib_sources(count, n))
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="runtime-bench-fib-") as scratch:
        folder = Path(scratch)
        async with running_server(
            backend, folder, concurrency=concurrency, sources=list(sources.values())
        ) as server:
            for flow_id in sources:
                heavy_flow = flow_id.endswith(f"_{heavy[0]}x{heavy[1]}")
                rounds = 1 if heavy_flow else repeat
                if not heavy_flow:
                    await run_once(server, "bench", flow_id, limit_s=120.0)  # warm-up
                samples = [
                    (await run_once(server, "bench", flow_id, limit_s=600.0))[0] * 1e3
                    for _ in range(rounds)
                ]
                figures[f"{flow_id.removeprefix('fib_')}_ms"] = statistics.median(samples)
    result = Result(
        measure=FIB,
        backend=backend,
        settings={
            "light": f"{light[0]} x fibo({light[1]})",
            "heavy": f"{heavy[0]} x fibo({heavy[1]})",
            "repeat_light": repeat,
            "repeat_heavy": 1,
            "worker": "same process (embedded)" if backend == "sqlite" else "subprocess",
        },
        figures=figures,
    )
    light_keys = [k for k in figures if k.endswith(f"_{light[0]}x{light[1]}_ms")]
    result.add_ratios(floor_ms, light_keys)
    return result
