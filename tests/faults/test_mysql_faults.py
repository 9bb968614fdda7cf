"""Faults of a distributed deployment on MySQL / MariaDB: each component in its own
process (`runtime run executor`, `runtime run worker`, `runtime run scheduler`) on one
database, then kill -9 of a worker and of the executor, a restart of the server under
them, and kill -9 of the leading scheduler.

Nothing is lost (every execution ends SUCCESS, each task run succeeds exactly once,
the queues drain) and no schedule date fires twice or is skipped. The server is
restarted with ``mariadb-admin shutdown`` and started again by ``.ci/services``, the
script CI relies on to have it running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from backends.errors import Transient
from backends.mysql import MysqlBackend
from backends.mysql.connection import run
from backends.mysql.testing import admin_connection, fresh_database
from runtime.config import load_config
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE
from services.client import LocalClient
from services.flows import deploy_source
from tests.faults.standby import standby_takes_over
from tests.faults.test_postgres_faults import (
    EXECUTIONS,
    NAMESPACE,
    REPO,
    WORK_FLOW,
    check_task_runs,
    flow_executions,
    mark_count,
    processes,
    stuck,
    until,
    work_flow,
)

pytestmark = pytest.mark.slow


def component_environment(dsn: str, data: Path, **settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RUNTIME_") and name != "PYTHONASYNCIODEBUG"
    }
    env.update(RUNTIME_BACKEND_TYPE="mysql", RUNTIME_BACKEND_DSN=dsn, RUNTIME_DATA_DIR=str(data))
    env.update({f"RUNTIME_{name.upper()}": value for name, value in settings.items()})
    return env


def admin_tool() -> str:
    tool = shutil.which("mariadb-admin") or shutil.which("mysqladmin")
    assert tool is not None, "mariadb-admin (or mysqladmin) is needed to restart the server"
    return tool


async def server_answers() -> bool:
    ping = await asyncio.create_subprocess_exec(
        admin_tool(),
        "-h",
        "127.0.0.1",
        "-u",
        "root",
        "ping",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await ping.wait() == 0


async def server_process_alive() -> bool:
    pidof = await asyncio.create_subprocess_exec(
        "pidof", "mariadbd", "mysqld", stdout=asyncio.subprocess.DEVNULL
    )
    return await pidof.wait() == 0


async def restart_mariadb() -> None:
    """Shut the server down, wait until it is gone, start it the way CI does."""
    shutdown = await asyncio.create_subprocess_exec(
        admin_tool(),
        "-h",
        "127.0.0.1",
        "-u",
        "root",
        "shutdown",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await shutdown.communicate()
    assert shutdown.returncode == 0, out.decode(errors="replace")
    deadline = time.monotonic() + 30
    # gone, not only deaf: .ci/services starts nothing while a mariadbd still exits
    while await server_answers() or await server_process_alive():
        assert time.monotonic() < deadline, "MariaDB did not stop within 30 s"
        await asyncio.sleep(0.2)
    start = await asyncio.create_subprocess_exec(
        "bash",
        str(REPO / ".ci" / "services"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await start.communicate()
    assert start.returncode == 0, out.decode(errors="replace")
    deadline = time.monotonic() + 30
    while not await server_answers():
        assert time.monotonic() < deadline, "MariaDB did not come back within 30 s"
        await asyncio.sleep(0.2)


# -- kills and a database restart ---------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.timeout(170)
async def test_kills_and_a_database_restart_lose_nothing(tmp_path: Path) -> None:
    data, marks = tmp_path / "data", tmp_path / "marks.txt"
    data.mkdir()
    async with asyncio.timeout(160), fresh_database("myfaults") as dsn:
        env = component_environment(
            dsn,
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
                async with MysqlBackend(dsn) as probe:
                    kinds = Counter(s.kind for s in await probe.services.list())
                return kinds["worker"] >= 2

            await until(components_up, 30, "both workers running", group)
            # Mid-naps, kill -9 a worker holding sleeping jobs.
            await asyncio.sleep(2.5)
            await asyncio.to_thread(group.kill, workers[0])
            killed_at_marks = mark_count(marks)
            # Then restart the database under every component.
            await restart_mariadb()
            # Let them reconnect, then kill -9 the executor and start another.
            await asyncio.sleep(1.5)
            await asyncio.to_thread(group.kill, executor)
            killed_executor_at = mark_count(marks)
            group.start("executor-2", "run", "executor")

            async with MysqlBackend(dsn) as reader:

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
                assert group.logged('"event": "liveness.instance_dead"'), group.tails()
                executions = await flow_executions(reader, WORK_FLOW)
                for name, process, _ in group.started[1:]:
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
@pytest.mark.asyncio
async def test_a_standby_scheduler_takes_over_without_double_fires(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with asyncio.timeout(90), fresh_database("mysched") as dsn:
        env = component_environment(
            dsn, data, scheduler_leader_ttl_seconds="3", scheduler_tick_seconds="0.5"
        )
        async with processes(tmp_path, env) as group, MysqlBackend(dsn) as backend:
            # the killed leader's GET_LOCK goes with its connection: the standby takes
            # over at its next tick, well before the lease's TTL would have run out
            await standby_takes_over(group, backend)


# -- the transaction of a connection the server ended -------------------------------------
@pytest.mark.asyncio
async def test_a_transaction_whose_connection_the_server_ended_raises_transient() -> None:
    """The caller must see Transient (and retry), not a driver error."""
    async with (
        asyncio.timeout(20),
        fresh_database("mylost") as dsn,
        MysqlBackend(dsn) as backend,
    ):
        admin = await admin_connection()
        raised: BaseException | None = None
        try:
            async with backend.transaction() as tx:
                session = tx.executions._s  # type: ignore[attr-defined]
                [(connection_id,)] = await session.select("SELECT CONNECTION_ID()")

                async def kill() -> None:
                    await asyncio.sleep(0.3)
                    await run(admin, f"KILL {int(connection_id)}")

                await asyncio.gather(session.select("SELECT SLEEP(5)"), kill())
        except Exception as exc:
            raised = exc
        finally:
            admin.close()
        assert isinstance(raised, Transient), repr(raised)
        # The pool is still usable afterwards.
        assert await backend.executions.get("nothing") is None
