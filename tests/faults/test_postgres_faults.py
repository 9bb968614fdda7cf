"""Faults of a distributed deployment on PostgreSQL: each component in its own
process (`runtime run executor`, `runtime run worker`, `runtime run scheduler`) on
one schema, then kill -9 of a worker and of the executor, a restart of the
PostgreSQL server under them, and kill -9 of the leading scheduler.

Nothing is lost (every execution ends SUCCESS, each task run succeeds exactly once,
the queues drain) and no schedule date fires twice or is skipped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import pytest

from backends.errors import Transient
from backends.postgres import PostgresBackend
from backends.postgres.connection import close_quietly
from backends.postgres.testing import admin_connection, server_dsn
from backends.protocols import Backend
from runtime.config import load_config
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE
from services.client import LocalClient
from services.flows import deploy_source

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "pgfaults"


# -- processes ---------------------------------------------------------------------------
def runtime_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("runtime")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "services.cli", *args]


def component_environment(schema: str, data: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RUNTIME_") and name != "PYTHONASYNCIODEBUG"
    }
    env.update(
        RUNTIME_BACKEND_TYPE="postgres",
        RUNTIME_BACKEND_DSN=server_dsn(),
        RUNTIME_BACKEND_SCHEMA=schema,
        RUNTIME_DATA_DIR=str(data),
    )
    env.update({f"RUNTIME_{name.upper()}": value for name, value in settings.items()})
    return env


class Processes:
    """Server components started by a test; every one is killed on the way out."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            runtime_command(*args),
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append((name, process, log))
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        for _, process, log in self.started:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=10)
            finally:
                log.close()

    def logged(self, text: str) -> bool:
        """Whether a component's output holds ``text``."""
        return any(
            text in (self.logs / f"{name}.log").read_text(errors="replace")
            for name, _, _ in self.started
        )

    def tails(self) -> str:
        out = []
        for name, process, _ in self.started:
            path = self.logs / f"{name}.log"
            text = path.read_text(errors="replace")[-2500:] if path.exists() else ""
            out.append(f"--- {name} (pid {process.pid}, exit {process.poll()}) ---\n{text}")
        return "\n".join(out)


@asynccontextmanager
async def processes(logs: Path, env: dict[str, str]) -> AsyncIterator[Processes]:
    group = Processes(logs, env)
    try:
        yield group
    except BaseException:
        group.close()
        print(group.tails())
        raise
    finally:
        group.close()


@asynccontextmanager
async def schema_for_test(prefix: str) -> AsyncIterator[str]:
    """A fresh schema, dropped afterwards over a new connection (the server may have
    been restarted in between, which ends every connection opened before)."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = await admin_connection()
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await close_quietly(admin)
    try:
        yield schema
    finally:
        admin = await admin_connection()
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await close_quietly(admin)


async def until(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, group: Processes
) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if await predicate():
                return
        except Transient:
            pass  # the server is restarting: ask again
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s\n{group.tails()}")
        await asyncio.sleep(0.1)


async def restart_postgres() -> None:
    versions = os.listdir("/etc/postgresql")
    assert len(versions) == 1, versions
    restart = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        versions[0],
        "main",
        "restart",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await restart.communicate()
    assert restart.returncode == 0, out.decode(errors="replace")
    deadline = time.monotonic() + 30
    while True:
        ready = await asyncio.create_subprocess_exec(
            "pg_isready", "-q", "-h", "127.0.0.1", stdout=asyncio.subprocess.DEVNULL
        )
        if await ready.wait() == 0:
            return
        assert time.monotonic() < deadline, "PostgreSQL did not come back within 30 s"
        await asyncio.sleep(0.2)


async def flow_executions(backend: Backend, flow_id: str) -> list[Execution]:
    return await backend.executions.search(namespace=NAMESPACE, flow_id=flow_id, limit=10_000)


# -- kills and a database restart ---------------------------------------------------------
WORK_FLOW = "work"
TASK_IDS = ["first", "nap", "mark", "done"]
EXECUTIONS = 200


def work_flow(marks: Path) -> str:
    return f"""
id: {WORK_FLOW}
namespace: {NAMESPACE}
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ execution.id }}}}"
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
  - id: mark
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - echo "{{{{ execution.id }}}} {{{{ taskrun.id }}}} $PPID" >> {marks}
  - id: done
    type: io.kestra.plugin.core.log.Log
    message: "done {{{{ execution.id }}}}"
"""


def mark_count(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


def check_task_runs(execution: Execution) -> None:
    where = f"execution {execution.id}"
    assert execution.state.current is StateType.SUCCESS, (where, execution.state.current)
    assert [run.task_id for run in execution.task_run_list] == TASK_IDS, where
    for run in execution.task_run_list:
        assert run.state.current is StateType.SUCCESS, (where, run.task_id)
        states = [attempt.state.current for attempt in run.attempts]
        assert states, (where, run.task_id)
        assert states[-1] is StateType.SUCCESS, (where, run.task_id, states)
        assert states.count(StateType.SUCCESS) == 1, (where, run.task_id, states)
        successes = [h for h in run.state.histories if h.state is StateType.SUCCESS]
        assert len(successes) == 1, (where, run.task_id, run.state.histories)


async def stuck(reader: Backend) -> str:
    """What the executions that did not end are waiting for."""
    executions = await flow_executions(reader, WORK_FLOW)
    states = Counter(e.state.current.value for e in executions)
    waiting = [
        (e.id, [(r.task_id, r.state.current.value) for r in e.task_run_list])
        for e in executions
        if not e.state.terminated
    ]
    depths = (
        await reader.queues.depth(EXECUTOR_QUEUE),
        await reader.queues.depth(WORKER_QUEUE),
    )
    return f"states {dict(states)}; queue depths {depths}; not ended: {waiting[:10]}"


@pytest.mark.asyncio
@pytest.mark.timeout(170)
async def test_kills_and_a_database_restart_lose_nothing(tmp_path: Path) -> None:
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    data.mkdir()
    async with asyncio.timeout(160), schema_for_test("pgfaults") as schema:
        env = component_environment(
            schema,
            data,
            liveness_worker_timeout_seconds="3",
            liveness_interval_seconds="0.5",
            worker_heartbeat_seconds="0.5",
            worker_concurrency="3",
            log_level="INFO",
        )
        config = load_config(None, env)
        ids: list[str] = []
        async with processes(tmp_path, env) as group:
            async with LocalClient(config) as client:
                await deploy_source(client.backend.flows, work_flow(marks))
                # A backlog, so the faults below land while there is work in flight.
                for _ in range(EXECUTIONS):
                    ids.append((await client.execute(NAMESPACE, WORK_FLOW, {})).id)
            executor = group.start("executor-1", "run", "executor")
            workers = [group.start(f"worker-{n}", "run", "worker") for n in (1, 2)]
            group.start("scheduler", "run", "scheduler")

            async def components_up() -> bool:
                async with PostgresBackend(server_dsn(), schema=schema) as probe:
                    kinds = Counter(s.kind for s in await probe.services.list())
                return kinds["worker"] >= 2

            await until(components_up, 30, "both workers running", group)
            # The executor handles the backlog breadth first: every `first`, then every
            # `nap` (200 x 0.3 s on 2 x 3 slots, ~10 s), then the `mark`s. Mid-naps,
            # kill -9 a worker holding sleeping jobs.
            await asyncio.sleep(2.5)
            await asyncio.to_thread(group.kill, workers[0])
            killed_at_marks = mark_count(marks)
            # Then restart the database under every component.
            await restart_postgres()
            # Let them reconnect, then kill -9 the executor and start another.
            await asyncio.sleep(1.5)
            await asyncio.to_thread(group.kill, executor)
            killed_executor_at = mark_count(marks)
            group.start("executor-2", "run", "executor")

            async with PostgresBackend(server_dsn(), schema=schema) as reader:

                async def all_ended() -> bool:
                    executions = await flow_executions(reader, WORK_FLOW)
                    return len(executions) == EXECUTIONS and all(
                        e.state.terminated for e in executions
                    )

                try:
                    await until(all_ended, 60, "every execution ended", group)
                except AssertionError as exc:
                    raise AssertionError(f"{await stuck(reader)}\n{exc}") from None

                async def queues_empty() -> bool:
                    return (
                        await reader.queues.depth(EXECUTOR_QUEUE),
                        await reader.queues.depth(WORKER_QUEUE),
                    ) == (0, 0)

                await until(queues_empty, 10, "the queues drained", group)
                # The killed worker was found dead (its jobs given back) by a survivor.
                assert group.logged('"event": "liveness.instance_dead"'), group.tails()
                executions = await flow_executions(reader, WORK_FLOW)
                for survivor in group.started[1:]:
                    name, process, _ = survivor
                    if process is not workers[0] and process is not executor:
                        assert process.poll() is None, f"{name} died\n{group.tails()}"

    assert killed_at_marks < EXECUTIONS, "the worker was killed after the work was done"
    assert killed_executor_at < EXECUTIONS, "the executor was killed after the work was done"
    assert sorted(e.id for e in executions) == sorted(ids)
    for execution in executions:
        check_task_runs(execution)
    # Every `mark` the engine knows ran at least once (a re-run may add a line).
    lines = marks.read_text().splitlines()
    ran = {line.split()[1] for line in lines}
    assert ran == {e.runs_of("mark")[0].id for e in executions}


# -- a standby scheduler ------------------------------------------------------------------
TICK_FLOW = "ticking"


def tick_flow() -> str:
    return f"""
id: {TICK_FLOW}
namespace: {NAMESPACE}
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: tick
triggers:
  - id: every_second
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "*/1 * * * * *"
    withSeconds: true
"""


@pytest.mark.asyncio
async def test_a_standby_scheduler_takes_over_without_double_fires(tmp_path: Path) -> None:
    from tests.faults.standby import standby_takes_over

    data = tmp_path / "data"
    data.mkdir()
    async with asyncio.timeout(90), schema_for_test("pgsched") as schema:
        env = component_environment(
            schema, data, scheduler_leader_ttl_seconds="3", scheduler_tick_seconds="0.5"
        )
        async with (
            processes(tmp_path, env) as group,
            PostgresBackend(server_dsn(), schema=schema) as backend,
        ):
            await standby_takes_over(group, backend)


# -- the transaction of a connection the server ended -------------------------------------
async def run_a_transaction_the_server_ends(backend: PostgresBackend) -> BaseException | None:
    """A transaction whose connection the server ends while a statement runs (what a
    restart does to a transaction in flight); what the caller sees."""
    admin = await admin_connection()
    try:
        async with backend.transaction() as tx:
            session = tx.executions._s  # type: ignore[attr-defined]
            pid = await session.connection.fetchval("SELECT pg_backend_pid()")

            async def terminate() -> None:
                await asyncio.sleep(0.3)
                await admin.execute("SELECT pg_terminate_backend($1)", pid)

            await asyncio.gather(session.fetch("SELECT pg_sleep(5)"), terminate())
    except Exception as exc:
        return exc
    finally:
        await close_quietly(admin)
    return None


@pytest.mark.asyncio
async def test_a_transaction_whose_connection_the_server_ended_raises_transient() -> None:
    """The caller must see Transient (and retry), not a driver error."""
    async with (
        asyncio.timeout(20),
        schema_for_test("pglost") as schema,
        PostgresBackend(server_dsn(), schema=schema, listen=False) as backend,
    ):
        raised = await run_a_transaction_the_server_ends(backend)
        assert isinstance(raised, Transient), repr(raised)
        # The pool is still usable afterwards.
        assert await backend.executions.get("nothing") is None
