"""``throughput``: a 2-task flow started through the webhook at stepped rates.

Kestra's published method: executions of a small flow (OutputValues, then Log) are
started through ``POST /api/v1/executions/webhook/{namespace}/{flowId}/{key}`` by
an open-loop generator (requests leave on a fixed schedule, whether or not earlier
ones were answered), one step per offered rate, each for a fixed duration.

Latency is from the request leaving the generator to the execution's end date as
the server stored it, read from the backend after the step (so measuring adds no
load while the step runs). A rate is *sustained* when executions end at
``KEEP_UP`` of the offered rate or more, none failed, and p99 stays within the
bound; the steps stop at the first rate that is not.

Requests go out through :mod:`bench.loadgen` (a request prepared once, keep-alive
connections, only the answer's id parsed): the generator shares the machine's cores
with the server, and an HTTP client library's own cost per request would be taken
from the server's share. The server runs in separate processes started from the CLI with a generated
config file: ``runtime run --all`` (SQLite: one process by definition), or on
PostgreSQL/MySQL the executor, the worker and the webserver each in their own
process when the CLI can start the webserver alone. The generator runs in this
process and shares the machine's cores with the server: on a small machine it
takes a share of the CPU the server would otherwise have, which the settings note.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import yaml

from bench import profiling
from bench.e2e import backend_environment
from bench.loadgen import Outcome, Poster
from bench.model import Result, Step, Target, percentile
from bench.postgres import BackendCpu
from bench.procs import cpu_seconds, runtime_command, spawned
from bench.targets import KEEP_UP, P99_BOUND_MS, THROUGHPUT, THROUGHPUT_PER_S
from runtime.config import load_config
from runtime.flow.execution import Execution
from services.standalone import make_backend

RATES = (100, 200, 300, 400, 500, 600, 800)
NAMESPACE = "bench"
FLOW_ID = "pair"


def pair_source(key: str) -> str:
    return f"""id: {FLOW_ID}
namespace: {NAMESPACE}
triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: {key}
tasks:
  - id: values
    type: io.kestra.plugin.core.output.OutputValues
    values:
      greeting: "hello {{{{ execution.id }}}}"
  - id: log
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ outputs['values']['values']['greeting'] }}}}"
"""


def webserver_missing() -> str | None:
    """Why the webhook cannot be driven from this tree, or None."""
    if importlib.util.find_spec("services.webserver") is None:
        return (
            "not available: the webserver (services/webserver, POST "
            "/api/v1/executions/webhook/{namespace}/{flowId}/{key}) is not in this tree yet"
        )
    return None


# -- the server processes -----------------------------------------------------------------
def _cli_run_options() -> tuple[set[str], set[str]]:
    """The ``runtime run`` command's option names and component choices, as built now."""
    import click

    from services.cli import run

    options: set[str] = set()
    components: set[str] = set()
    for param in run.params:
        if isinstance(param, click.Option):
            options.update(param.opts)
        elif isinstance(param.type, click.Choice):
            components.update(str(c) for c in param.type.choices)
    return options, components


def server_commands(
    backend: str, config: Path, flows: Path, profile: Path | None = None
) -> list[list[str]]:
    """The processes that make the server: one (``--all``) or one per component.

    With ``profile``, each runs under cProfile and leaves its profile there.
    """
    options, components = _cli_run_options()
    common = ["--config", str(config)]
    if backend != "sqlite" and "webserver" in components:
        runs = [
            ["run", "executor", *common, "--flows", str(flows)],
            ["run", "worker", *common],
            ["run", "webserver", *common],
        ]
    else:
        extra = ["--server"] if "--server" in options else []
        runs = [["run", "--all", *extra, *common, "--flows", str(flows)]]
    if profile is None:
        return [[*runtime_command(), *run] for run in runs]
    return [
        profiling.command(profile, f"throughput-{backend}-{run[1].lstrip('-')}", run)
        for run in runs
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(environ: dict[str, str], port: int, concurrency: int, path: Path) -> None:
    """The server's settings file, from the ``RUNTIME_*`` settings of the backend."""
    backend: dict[str, Any] = {"type": environ["RUNTIME_BACKEND_TYPE"]}
    for key in ("dsn", "schema"):
        value = environ.get(f"RUNTIME_BACKEND_{key.upper()}")
        if value:
            backend[key] = value
    document = {
        "data_dir": environ["RUNTIME_DATA_DIR"],
        "log_level": "WARNING",
        "backend": backend,
        "worker": {"concurrency": concurrency},
        "webserver": {"host": "127.0.0.1", "port": port},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}"
        for path in sorted(folder.glob("*.log"))
    )


async def wait_ready(
    client: httpx.AsyncClient,
    url: str,
    procs: Sequence[subprocess.Popen[bytes]],
    folder: Path,
    limit_s: float = 60.0,
) -> None:
    """Until the webhook answers something other than 404 (the flow is deployed)."""
    deadline = time.monotonic() + limit_s
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"a server process exited with {proc.returncode}:\n{_logs(folder)}"
                )
        try:
            response = await client.post(url, json={})
            if response.status_code < 300:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        await asyncio.sleep(0.25)
    raise RuntimeError(
        f"the webhook at {url} was not ready in {limit_s:g} s ({last}):\n{_logs(folder)}"
    )


# -- one step --------------------------------------------------------------------------------
async def offer(
    poster: Poster, rate: float, seconds: float
) -> tuple[list[tuple[datetime, Outcome]], float]:
    """Send ``rate``/s requests for ``seconds`` on a fixed schedule (open loop).

    Returns (sent at, what it got) per request, and the seconds the sending took.
    """
    total = max(1, round(rate * seconds))
    sent: list[tuple[datetime, Outcome]] = []

    async def one() -> None:
        at = datetime.now(UTC)
        sent.append((at, await poster.post()))

    tasks: list[asyncio.Task[None]] = []
    began = time.perf_counter()
    for i in range(total):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    took = time.perf_counter() - began
    await asyncio.gather(*tasks)
    return sent, took


async def collect(backend: Any, ids: list[str], drain_s: float) -> dict[str, Execution]:
    """The executions once ended (or as they are when ``drain_s`` ran out)."""
    found: dict[str, Execution] = {}
    pending = list(ids)
    deadline = time.monotonic() + drain_s
    while pending:
        # wait on the last one alone first: polling all of them would load the server
        probe = await backend.executions.get(pending[-1])
        if (probe is None or not probe.state.terminated) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            continue
        still: list[str] = []
        for chunk in range(0, len(pending), 64):
            part = pending[chunk : chunk + 64]
            got = await asyncio.gather(*(backend.executions.get(i) for i in part))
            for execution_id, execution in zip(part, got, strict=True):
                if execution is not None and execution.state.terminated:
                    found[execution_id] = execution
                else:
                    still.append(execution_id)
        pending = still
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.25)
    return found


def summarise(
    rate: float,
    seconds: float,
    sent: list[tuple[datetime, Outcome]],
    took: float,
    ended: dict[str, Execution],
    p99_bound_ms: float,
) -> Step:
    latencies: list[float] = []
    failed = 0
    first = min((at for at, _ in sent), default=None)
    last_end: datetime | None = None
    failures: dict[str, int] = {}
    for at, outcome in sent:
        if outcome.cause is not None:
            failures[outcome.cause] = failures.get(outcome.cause, 0) + 1
        execution = ended.get(outcome.id or "")
        if execution is None:
            continue
        end = execution.state.end_date
        assert end is not None
        if execution.state.current.value != "SUCCESS":
            failed += 1
        latencies.append((end - at).total_seconds() * 1e3)
        last_end = end if last_end is None or end > last_end else last_end
    accepted = sum(1 for _, outcome in sent if outcome.id)
    span = (last_end - first).total_seconds() if last_end and first else 0.0
    achieved = len(latencies) / span if span > 0 else 0.0
    p99 = percentile(latencies, 0.99)
    return Step(
        offered_per_s=rate,
        seconds=seconds,
        sent=len(sent),
        accepted=accepted,
        completed=len(latencies),
        failed=failed,
        sent_per_s=len(sent) / took if took > 0 else float(len(sent)),
        achieved_per_s=achieved,
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=p99,
        failures=dict(sorted(failures.items())),
        retried=sum(1 for _, outcome in sent if outcome.retried),
        sustained=(
            len(latencies) == len(sent)
            and failed == 0
            and achieved >= KEEP_UP * rate
            and p99 is not None
            and p99 <= p99_bound_ms
        ),
    )


# -- the measure -----------------------------------------------------------------------------
async def throughput(
    backend: str,
    *,
    floor_ms: float,
    rates: Sequence[float] = RATES,
    step_seconds: float = 10.0,
    p99_bound_ms: float = P99_BOUND_MS,
    concurrency: int = 16,
    profile: Path | None = None,
) -> Result:
    """The 2-task flow through the webhook at each rate until one is not sustained.

    ``profile``: a folder where each server process leaves its cProfile profile.
    """
    missing = webserver_missing()
    if missing:
        return Result(measure=THROUGHPUT, backend=backend, skipped=missing)
    key = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="runtime-bench-thr-") as scratch:
        folder = Path(scratch)
        flows = folder / "flows"
        flows.mkdir()
        (flows / "pair.yml").write_text(pair_source(key))
        async with backend_environment(backend, folder) as environ:
            port = free_port()
            config = folder / "server.yml"
            write_config(environ, port, concurrency, config)
            commands = server_commands(backend, config, flows, profile)
            url = f"http://127.0.0.1:{port}/api/v1/executions/webhook/{NAMESPACE}/{FLOW_ID}/{key}"
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
            reader = make_backend(load_config(config, {}))
            with spawned(commands, folder, {}) as procs:
                async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
                    await wait_ready(client, url, procs, folder)
                async with Poster(url) as poster:
                    await reader.start()
                    try:
                        # warm-up: connections open, statements prepared, caches filled
                        sent, _ = await offer(poster, 20, 1.0)
                        await collect(reader, [o.id for _, o in sent if o.id], 10.0)
                        database = (
                            BackendCpu(environ["RUNTIME_BACKEND_DSN"], [p.pid for p in procs])
                            if backend == "postgres"
                            else None
                        )
                        steps = await _steps(
                            poster,
                            reader,
                            procs,
                            folder,
                            rates,
                            step_seconds,
                            p99_bound_ms,
                            database,
                        )
                    finally:
                        await reader.stop()
    result = _result(backend, floor_ms, steps, commands, step_seconds, p99_bound_ms, concurrency)
    if profile is not None:
        written = profiling.summarise_files(profile, f"throughput-{backend}-")
        result.settings["profiled"] = True
        result.notes.append(
            "profiled (cProfile slows the server): " + ", ".join(p.name for p in written)
        )
    return result


async def _steps(
    poster: Poster,
    reader: Any,
    procs: Sequence[subprocess.Popen[bytes]],
    folder: Path,
    rates: Sequence[float],
    step_seconds: float,
    p99_bound_ms: float,
    database: BackendCpu | None = None,
) -> list[Step]:
    steps: list[Step] = []
    for rate in rates:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a server process exited:\n{_logs(folder)}")
        db_before = await database.sample() if database is not None else {}
        cpu = [cpu_seconds(p.pid) for p in procs], time.process_time(), time.perf_counter()
        sent, took = await offer(poster, rate, step_seconds)
        ids = [o.id for _, o in sent if o.id]
        ended = await collect(reader, ids, max(10.0, 2 * step_seconds))
        wall = time.perf_counter() - cpu[2]
        db_after = await database.sample() if database is not None else {}
        step = msgspec.structs.replace(
            summarise(rate, step_seconds, sent, took, ended, p99_bound_ms),
            cpu_server=[
                (cpu_seconds(p.pid) - was) / wall for p, was in zip(procs, cpu[0], strict=True)
            ],
            cpu_generator=(time.process_time() - cpu[1]) / wall,
            cpu_database=(
                BackendCpu.spent(db_before, db_after) / wall if database is not None else None
            ),
        )
        steps.append(step)
        if not step.sustained:
            break  # saturated: higher rates only pile up a backlog
    return steps


def _result(
    backend: str,
    floor_ms: float,
    steps: list[Step],
    commands: list[list[str]],
    step_seconds: float,
    p99_bound_ms: float,
    concurrency: int,
) -> Result:
    best = max((s for s in steps if s.sustained), key=lambda s: s.offered_per_s, default=None)
    sustained = best.offered_per_s if best else 0.0
    figures = {
        "sustained_per_s": sustained,
        "max_achieved_per_s": max((s.achieved_per_s for s in steps), default=0.0),
    }
    if best is not None and best.p50_ms is not None and best.p99_ms is not None:
        figures["p50_at_sustained_ms"] = best.p50_ms
        figures["p99_at_sustained_ms"] = best.p99_ms
    result = Result(
        measure=THROUGHPUT,
        backend=backend,
        settings={
            "flow": "OutputValues then Log",
            "entry": "POST webhook",
            "step_seconds": step_seconds,
            "p99_bound_ms": p99_bound_ms,
            "keep_up": KEEP_UP,
            "worker_concurrency": concurrency,
            "processes": [" ".join(c[c.index("run") :]) for c in commands],
            "generator": (
                "bench.loadgen (keep-alive connections, open loop), in the harness's"
                " process on the same machine"
            ),
            "cpus": os.cpu_count(),
        },
        figures=figures,
        steps=steps,
    )
    result.floor_ms = floor_ms
    for step in steps:
        if step.p50_ms is not None and step.p99_ms is not None:
            rate = f"{step.offered_per_s:g}"
            result.ratios[f"p50_at_{rate}_floors"] = step.p50_ms / floor_ms
            result.ratios[f"p99_at_{rate}_floors"] = step.p99_ms / floor_ms
    if backend == "postgres":
        result.targets = [
            Target(
                name=f"sustained executions/s, p99 <= {p99_bound_ms:g} ms",
                figure="sustained_per_s",
                value=sustained,
                bound=THROUGHPUT_PER_S,
                direction="at_least",
                unit="/s",
            )
        ]
    return result
