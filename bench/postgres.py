"""End to end on PostgreSQL: the executor in this process, the worker(s) in others.

* ``floor``: the raw durable hop, measured in the same run on a bare asyncpg
  connection: one transaction claims one row of a pre-filled table (``SELECT ...
  FOR UPDATE SKIP LOCKED LIMIT 1``), deletes it, inserts one row and calls
  ``pg_notify``. A task costs several such hops (the job to the worker, its result
  back, the engine's next step), so the ratio to that floor is the figure to watch.
* ``sequential``: 40 sequential Return tasks from submission to the execution's
  end, with ``runtime run worker`` in a subprocess and the executor in this process
  (observed through ``Executor.listeners``).
* ``throughput``: a two-task flow (OutputValues then Log) submitted at stepped target
  rates, 1-2 worker subprocesses. Executions are submitted with
  :func:`services.executor.submit` from this process, on a backend of its own: the
  webhook API (the realistic entry point) does not exist yet. Per step: achieved
  submission rate, completed executions/s, latency from submission to end (p50, p95,
  p99); the sustained rate is the highest step whose completions keep up (>= 95% of
  the target) with p99 < 250 ms.

The run uses a fresh schema of the tests' server (``RUNTIME_TEST_POSTGRES_DSN``,
default ``postgresql://postgres@127.0.0.1:5432/test``), dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from backends.postgres import PostgresBackend
from backends.postgres.connection import close_quietly, connect
from backends.postgres.testing import server_dsn
from bench.standalone import run_once
from runtime.config import load_config
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from services.executor import submit
from services.flows import deploy_source
from services.standalone import Server

TASKS = 40
SEQUENTIAL = "id: sequential\nnamespace: bench\ntasks:\n" + "".join(
    f"  - id: t{i}\n    type: io.kestra.plugin.core.debug.Return\n    format: '{i}'\n"
    for i in range(TASKS)
)
PAIR = """
id: pair
namespace: bench
tasks:
  - id: values
    type: io.kestra.plugin.core.output.OutputValues
    values:
      greeting: "hello {{ execution.id }}"
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: "{{ outputs['values']['values']['greeting'] }}"
"""
RATES = (50, 100, 200, 400, 800)
#: a step keeps up when it completes this share of its target rate...
KEEP_UP = 0.95
#: ...with this p99 latency, submission to end
P99_TARGET_S = 0.250
TARGET_TOTAL_MS = 200.0
TARGET_PER_TASK_FLOORS = 4.0


@asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    """An empty schema with a random name, dropped (CASCADE) on exit on a new connection
    (the first may not survive a long run)."""
    schema = f"runtime_bench_{secrets.token_hex(6)}"
    admin = await connect(dsn, "public", connect_timeout=5.0, application_name="runtime-bench")
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await close_quietly(admin)
    try:
        yield schema
    finally:
        admin = await connect(dsn, "public", connect_timeout=5.0, application_name="runtime-bench")
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await close_quietly(admin)


async def server_started(dsn: str) -> str:
    """When the server last started: a step that straddles a restart is not a figure."""
    conn = await connect(dsn, "public", connect_timeout=30.0, application_name="runtime-bench")
    try:
        return str(await conn.fetchval("SELECT pg_postmaster_start_time()"))
    finally:
        await close_quietly(conn)


# -- the floor ---------------------------------------------------------------------------
async def floor(dsn: str, schema: str, *, rounds: int = 500, warmup: int = 50) -> float:
    """Median seconds of one claim + delete + insert + notify transaction."""
    conn = await connect(dsn, schema, connect_timeout=5.0, application_name="runtime-bench")
    try:
        await conn.execute(
            "CREATE TABLE bench_floor (id bigserial PRIMARY KEY, key text, payload bytea)"
        )
        await conn.execute(
            "INSERT INTO bench_floor (key, payload) "
            "SELECT 'k' || g, decode(repeat('78', 200), 'hex') FROM generate_series(1, 2000) g"
        )
        await conn.execute("ANALYZE bench_floor")
        claim = await conn.prepare(
            "SELECT id, key, payload FROM bench_floor ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1"
        )
        delete = await conn.prepare("DELETE FROM bench_floor WHERE id = $1")
        insert = await conn.prepare("INSERT INTO bench_floor (key, payload) VALUES ($1, $2)")
        notify = await conn.prepare("SELECT pg_notify($1, $2)")
        payload = b"x" * 200
        samples = []
        for i in range(warmup + rounds):
            began = time.perf_counter()
            async with conn.transaction():
                row = await claim.fetchrow()
                await delete.fetch(row["id"])
                await insert.fetch(row["key"], payload)
                await notify.fetch("bench_floor", "x")
            if i >= warmup:
                samples.append(time.perf_counter() - began)
        await conn.execute("DROP TABLE bench_floor")
        return statistics.median(samples)
    finally:
        await close_quietly(conn)


# -- worker subprocesses -----------------------------------------------------------------
def _runtime_command() -> list[str]:
    script = Path(sys.executable).with_name("runtime")
    if script.exists():
        return [str(script)]
    found = shutil.which("runtime")
    if found:
        return [found]
    return [sys.executable, "-c", "from services.cli import main; main()"]


@contextmanager
def workers(
    environ: dict[str, str], folder: Path, count: int, concurrency: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``runtime run worker`` in ``count`` subprocesses; terminated (then killed) on exit."""
    env = {**os.environ, **environ, "RUNTIME_WORKER_CONCURRENCY": str(concurrency)}
    env.setdefault("RUNTIME_LOG_LEVEL", "WARNING")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i in range(count):
            log_file = open(folder / f"worker-{i}.log", "wb")  # noqa: SIM115
            logs.append(log_file)
            procs.append(
                subprocess.Popen(
                    [*_runtime_command(), "run", "worker"],
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log_file in logs:
            log_file.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _check_alive(procs: Sequence[subprocess.Popen[bytes]], folder: Path) -> None:
    for i, proc in enumerate(procs):
        if proc.poll() is not None:
            tail = (folder / f"worker-{i}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"worker {i} exited with {proc.returncode}:\n{tail}")


# -- sequential --------------------------------------------------------------------------


# -- throughput --------------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _step(
    server: Server, submitter: PostgresBackend, revision: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Submit at ``rate``/s for ``seconds``; wait for the executions to end."""
    assert server.executor is not None
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    failed: list[str] = []
    all_done = asyncio.Event()
    total = max(1, round(rate * seconds))

    def observe(execution: Execution) -> None:
        if execution.id in started and execution.state.terminated and execution.id not in ended:
            ended[execution.id] = time.perf_counter()
            if execution.state.current is not StateType.SUCCESS:
                failed.append(execution.id)
            if len(ended) == total:
                all_done.set()

    async def one(execution_id: str) -> None:
        execution = new_execution(
            id=execution_id,
            namespace="bench",
            flow_id="pair",
            flow_revision=revision,
            at=submitter.clock(),
        )
        started[execution_id] = time.perf_counter()
        await submit(submitter, execution)

    server.executor.listeners.append(observe)
    pending: set[asyncio.Task[None]] = set()
    try:
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(new_id()))
            pending.add(task)
            task.add_done_callback(pending.discard)
        outcomes = await asyncio.gather(*pending, return_exceptions=True) if pending else []
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)} submissions failed, first: {errors[0]!r}")
        submitted_at = time.perf_counter()
        drain = max(10.0, seconds * 2)
        try:
            async with asyncio.timeout(drain):
                await all_done.wait()
        except TimeoutError:
            pass
    finally:
        server.executor.listeners.remove(observe)
    latencies = [ended[k] - started[k] for k in ended]
    last_end = max(ended.values(), default=t0)
    completion_rate = len(ended) / max(1e-9, last_end - t0)
    p99 = _percentile(latencies, 0.99)
    return {
        "target_per_s": rate,
        "submitted": total,
        "submitted_per_s": total / max(1e-9, submitted_at - t0),
        "completed": len(ended),
        "failed": len(failed),
        "completed_per_s": completion_rate,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p95_ms": _percentile(latencies, 0.95) * 1e3,
        "p99_ms": p99 * 1e3,
        "keeps_up": len(ended) == total
        and not failed
        and completion_rate >= KEEP_UP * rate
        and p99 < P99_TARGET_S,
    }


# -- the whole run -----------------------------------------------------------------------
async def run(
    *,
    repeat: int = 5,
    rates: Sequence[float] = RATES,
    step_seconds: float = 5.0,
    throughput_workers: int = 2,
    concurrency: int = 16,
    floor_rounds: int = 500,
) -> dict[str, Any]:
    dsn = server_dsn()
    with tempfile.TemporaryDirectory(prefix="runtime-bench-pg-") as scratch:
        folder = Path(scratch)
        async with fresh_schema(dsn) as schema:
            boot = await server_started(dsn)
            hop = await floor(dsn, schema, rounds=floor_rounds)
            environ = {
                "RUNTIME_BACKEND_TYPE": "postgres",
                "RUNTIME_BACKEND_DSN": dsn,
                "RUNTIME_BACKEND_SCHEMA": schema,
                "RUNTIME_DATA_DIR": str(folder / "data"),
            }
            config = load_config(None, environ)
            server = Server(config, components=("executor",), watch=False)
            async with server:
                await deploy_source(server.backend.flows, SEQUENTIAL)
                await deploy_source(server.backend.flows, PAIR)
                with workers(environ, folder, 1, concurrency) as procs:
                    await run_once(server, "bench", "sequential", limit_s=60.0)  # warm-up, startup
                    seq = []
                    for _ in range(repeat):
                        _check_alive(procs, folder)
                        seq.append((await run_once(server, "bench", "sequential"))[0])
                    seq.sort()
                seq_disturbed = await server_started(dsn) != boot
                with workers(environ, folder, throughput_workers, concurrency) as procs:
                    submitter = PostgresBackend(dsn, schema=schema, pool_max=20, listen=False)
                    await submitter.start()
                    try:
                        steps = await _throughput(
                            server, submitter, procs, folder, rates, step_seconds
                        )
                    finally:
                        await submitter.stop()
    seq_median = statistics.median(seq)
    per_task = seq_median / TASKS
    sustained = 0.0
    for step in steps:
        if not step["keeps_up"]:
            break
        sustained = step["target_per_s"]
    for step in steps:
        step["p50_floors"] = step["p50_ms"] / (hop * 1e3)
        step["p99_floors"] = step["p99_ms"] / (hop * 1e3)
    return {
        "floor_hop_ms": hop * 1e3,
        "sequential_40": {
            "median_ms": seq_median * 1e3,
            "best_ms": seq[0] * 1e3,
            "per_task_ms": per_task * 1e3,
            "per_task_floors": per_task / hop,
            "target_total_ms": TARGET_TOTAL_MS,
            "target_per_task_floors": TARGET_PER_TASK_FLOORS,
            "meets_total": seq_median * 1e3 <= TARGET_TOTAL_MS,
            "meets_per_task": per_task / hop <= TARGET_PER_TASK_FLOORS,
            "server_restarted": seq_disturbed,
        },
        "throughput": {
            "workers": throughput_workers,
            "concurrency": concurrency,
            "step_seconds": step_seconds,
            "steps": steps,
            "sustained_per_s": sustained,
            "p99_target_ms": P99_TARGET_S * 1e3,
        },
    }


async def _throughput(
    server: Server,
    submitter: PostgresBackend,
    procs: Sequence[subprocess.Popen[bytes]],
    folder: Path,
    rates: Sequence[float],
    step_seconds: float,
) -> list[dict[str, Any]]:
    record = await server.backend.flows.get("bench", "pair")
    assert record is not None
    # warm-up: every worker started and the statements prepared
    await _step(server, submitter, record.revision, 20, 1.0)
    steps = []
    for rate in rates:
        _check_alive(procs, folder)
        before = await server_started(submitter.dsn)
        cpu = time.process_time(), [_cpu_seconds(p.pid) for p in procs], time.perf_counter()
        step = await _step(server, submitter, record.revision, rate, step_seconds)
        wall = time.perf_counter() - cpu[2]
        # CPU share (1.0 = one core busy) of this process (executor + submissions)
        # and of each worker process, over the step and its drain
        step["cpu_executor_process"] = (time.process_time() - cpu[0]) / wall
        step["cpu_workers"] = [
            (_cpu_seconds(p.pid) - was) / wall for p, was in zip(procs, cpu[1], strict=True)
        ]
        step["server_restarted"] = await server_started(submitter.dsn) != before
        steps.append(step)
        if step["completed"] < step["submitted"] or step["p99_ms"] > 5_000:
            break  # far behind: higher rates only pile up a backlog
    return steps


def table(result: dict[str, Any]) -> str:
    hop = result["floor_hop_ms"]
    seq = result["sequential_40"]
    thr = result["throughput"]
    lines = [
        "| measure | result | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| durable hop (claim+delete+insert+notify, asyncpg) | {hop:.2f} ms | | 1 | |",
        f"| 40 sequential Return tasks, PostgreSQL, worker in a subprocess "
        f"| {seq['median_ms']:.0f} ms median, {seq['best_ms']:.0f} ms best "
        f"({seq['per_task_ms']:.2f} ms/task) | hop {hop:.2f} ms "
        f"| {seq['per_task_floors']:.1f} hops/task "
        f"| ≤ {seq['target_total_ms']:.0f} ms: {'met' if seq['meets_total'] else 'missed'}; "
        f"≤ {seq['target_per_task_floors']:.0f} hops/task: "
        f"{'met' if seq['meets_per_task'] else 'missed'}"
        f"{' (server restarted during the run)' if seq.get('server_restarted') else ''} |",
        "",
        f"Throughput, 2-task flow (OutputValues, Log), {thr['workers']} worker process(es) "
        f"x {thr['concurrency']}, {thr['step_seconds']:g} s steps, {os.cpu_count()} CPUs "
        "(CPU: cores busy, over the step and its drain):",
        "",
        "| target/s | submitted/s | completed/s | p50 ms | p95 ms | p99 ms "
        "| p50 / hop | p99 / hop | failed | CPU executor+submit / workers | keeps up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in thr["steps"]:
        lines.append(
            f"| {s['target_per_s']:g} | {s['submitted_per_s']:.0f} | {s['completed_per_s']:.0f} "
            f"| {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | {s['p99_ms']:.0f} "
            f"| {s['p50_floors']:.1f} | {s['p99_floors']:.1f} | {s['failed']} "
            f"| {s['cpu_executor_process']:.2f} / "
            f"{' + '.join(f'{c:.2f}' for c in s['cpu_workers'])} "
            f"| {'yes' if s['keeps_up'] else 'no'}"
            f"{' (server restarted during the step)' if s.get('server_restarted') else ''} |"
        )
    lines += [
        "",
        f"Sustained rate (completions ≥ {KEEP_UP:.0%} of target, p99 < "
        f"{thr['p99_target_ms']:.0f} ms): {thr['sustained_per_s']:g}/s",
    ]
    return "\n".join(lines)
