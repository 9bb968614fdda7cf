"""kill -9 (or SIGTERM) of a whole `runtime run --all` process mid-run, then a
restart on the same SQLite file: every execution still ends SUCCESS, no task is
lost, and no task run records two successes. A task that was running at a kill -9
may run again after the restart (at least once), but never twice within one
process; after a SIGTERM, running tasks finish within the grace period instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest

from runtime.config import Config, load_config
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE
from services.client import LocalClient
from services.flows import deploy_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "faults"
FLOW_ID = "crashy"
TASK_IDS = ["first", "nap", "mark", "rest"]
EXECUTIONS = 10


def flow_source(marks: Path) -> str:
    # `mark` appends "<execution> <task run> <pid of the server running it>" and
    # then sleeps, so a kill soon after a line appears lands while it runs.
    return f"""
id: {FLOW_ID}
namespace: {NAMESPACE}
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ execution.id }}}}"
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT1S
  - id: mark
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - echo "{{{{ execution.id }}}} {{{{ taskrun.id }}}} $PPID" >> {marks}
      - sleep 1
  - id: rest
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT1S
"""


def runtime_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("runtime")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "services.cli", *args]


def server_environment(data: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RUNTIME_") and name != "PYTHONASYNCIODEBUG"
    }
    env["RUNTIME_DATA_DIR"] = str(data)
    # `run --all` serves the API too: on a free port, not whatever holds 8080
    env["RUNTIME_WEBSERVER_PORT"] = "0"
    return env


@contextmanager
def server_process(flows: Path, data: Path, log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`runtime run --all --flows DIR` in its own process; killed on the way out."""
    process = subprocess.Popen(
        runtime_command("run", "--all", "--flows", str(flows)),
        cwd=REPO,
        env=server_environment(data),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def until(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, log: Path
) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            tail = await asyncio.to_thread(log_tail, log)
            raise AssertionError(f"{what}: not within {within}s\nserver log tail:\n{tail}")
        await asyncio.sleep(0.05)


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def read_marks(marks: Path) -> list[tuple[str, str, int]]:
    if not marks.exists():
        return []
    out = []
    for line in marks.read_text().splitlines():
        execution_id, task_run_id, pid = line.split()
        out.append((execution_id, task_run_id, int(pid)))
    return out


def registered_queues(db: Path) -> set[str]:
    connection = sqlite3.connect(db)
    try:
        return {row[0] for row in connection.execute("SELECT queue FROM registered_queues")}
    finally:
        connection.close()


async def queue_depths(config: Config) -> tuple[int, int]:
    # A fresh backend: a SQLite backend only knows the queue tables that existed
    # when it started.
    async with LocalClient(config) as client:
        queues = client.backend.queues
        return await queues.depth(EXECUTOR_QUEUE), await queues.depth(WORKER_QUEUE)


def check_task_runs(execution: Execution) -> None:
    where = f"execution {execution.id}"
    assert execution.state.current is StateType.SUCCESS, where
    assert [run.task_id for run in execution.task_run_list] == TASK_IDS, where
    for run in execution.task_run_list:
        assert run.state.current is StateType.SUCCESS, (where, run.task_id)
        states = [attempt.state.current for attempt in run.attempts]
        # A re-run after the restart may add an attempt; only the last may succeed.
        assert states, (where, run.task_id)
        assert states[-1] is StateType.SUCCESS, (where, run.task_id, states)
        assert states.count(StateType.SUCCESS) == 1, (where, run.task_id, states)
        successes = [h for h in run.state.histories if h.state is StateType.SUCCESS]
        assert len(successes) == 1, (where, run.task_id, run.state.histories)


class Outcome(msgspec.Struct, kw_only=True):
    """What a stop-and-restart run left behind."""

    executions: list[Execution]
    #: the execution `runtime execute --wait --json` printed, started after the restart
    shown: dict[str, Any]
    #: `mark` task run id -> pids of the server processes that ran it, in order
    runs: dict[str, list[int]]
    stopped_pid: int
    stopped_code: int | None
    #: the executions' states right after the first server ended
    before: list[StateType]


async def stop_mid_run_and_restart(tmp_path: Path, sig: signal.Signals) -> Outcome:
    """Queue executions, send ``sig`` to the server once three `mark` tasks have
    started, restart it, and wait for every execution to end."""
    data, flows, marks = tmp_path / "data", tmp_path / "flows", tmp_path / "marks.txt"
    flows.mkdir()
    (flows / "crashy.yml").write_text(flow_source(marks))
    log_path = tmp_path / "server.log"
    config = load_config(None, {"RUNTIME_DATA_DIR": str(data)})
    ids: list[str] = []

    with log_path.open("wb") as log:
        async with LocalClient(config) as client:

            async def states() -> list[StateType]:
                return [(await client.get(i)).state.current for i in ids]

            async def started() -> bool:
                return StateType.RUNNING in await states()

            async def marking() -> bool:
                return len(read_marks(marks)) >= 3

            async def all_ended() -> bool:
                return all(s.terminated for s in await states())

            # Half queued before the server starts (a backlog), half while it runs.
            await deploy_file(client.backend.flows, flows / "crashy.yml")
            for _ in range(EXECUTIONS // 2):
                ids.append((await client.execute(NAMESPACE, FLOW_ID, {})).id)
            with server_process(flows, data, log) as first:
                await until(started, 15, "an execution started", log_path)
                for _ in range(EXECUTIONS - EXECUTIONS // 2):
                    ids.append((await client.execute(NAMESPACE, FLOW_ID, {})).id)
                await until(marking, 20, "three `mark` tasks started", log_path)
                first.send_signal(sig)
                await asyncio.to_thread(first.wait, 15)
            before = await states()

            with server_process(flows, data, log) as second:
                cli = await asyncio.create_subprocess_exec(
                    *runtime_command("execute", NAMESPACE, FLOW_ID, "--wait", "--json"),
                    cwd=REPO,
                    env=server_environment(data),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await cli.communicate()
                await until(all_ended, 30, "every execution ended", log_path)
                assert second.poll() is None, "the restarted server died"
                executions = [await client.get(i) for i in ids]

    assert cli.returncode == 0, err.decode()
    runs: dict[str, list[int]] = {}
    for _, run_id, pid in read_marks(marks):
        if pid not in (first.pid, second.pid):
            # The shell reads $PPID when it starts: one the first server forked just
            # before its kill -9 may start after its parent died, and then sees the
            # reaper (pid 1 or a subreaper). Only a killed server leaves such orphans,
            # and the restarted one was alive throughout, so it was the first server.
            assert sig is signal.SIGKILL, f"task run {run_id} ran in an unknown process {pid}"
            pid = first.pid
        runs.setdefault(run_id, []).append(pid)
    # The side effect ran only for task runs the engine knows.
    shown = json.loads(out)
    known = {e.runs_of("mark")[0].id for e in executions} | {shown["taskRunList"][2]["id"]}
    assert set(runs) == known
    assert {EXECUTOR_QUEUE, WORKER_QUEUE} <= await asyncio.to_thread(
        registered_queues, config.sqlite_path()
    )
    assert await queue_depths(config) == (0, 0), "something is left in the queues"
    return Outcome(
        executions=executions,
        shown=shown,
        runs=runs,
        stopped_pid=first.pid,
        stopped_code=first.returncode,
        before=before,
    )


def check_outcome(outcome: Outcome) -> None:
    assert any(not s.terminated for s in outcome.before), "stopped too late to matter"
    assert outcome.shown["state"]["current"] == "SUCCESS"
    assert [run["taskId"] for run in outcome.shown["taskRunList"]] == TASK_IDS
    for execution in outcome.executions:
        check_task_runs(execution)
    for run_id, pids in outcome.runs.items():
        assert len(pids) == len(set(pids)), f"task run {run_id} ran twice in one process: {pids}"
        # An orphaned shell of the stopped server may append its line after the
        # restarted server's: the order of the lines says nothing, who wrote them does.
        if len(pids) > 1:
            assert outcome.stopped_pid in pids, (run_id, pids)


@pytest.mark.asyncio
async def test_kill_9_mid_run_then_restart_loses_nothing_and_succeeds_once(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(55):
        outcome = await stop_mid_run_and_restart(tmp_path, signal.SIGKILL)
    assert outcome.stopped_code == -signal.SIGKILL
    check_outcome(outcome)
    # The kill came right after a `mark` started (it sleeps 1 s after its line): at
    # least that one ran again after the restart, so the at-least-once path was taken.
    assert any(len(pids) > 1 for pids in outcome.runs.values()), outcome.runs


@pytest.mark.asyncio
async def test_sigterm_mid_run_lets_running_tasks_finish_then_restart_completes(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(55):
        outcome = await stop_mid_run_and_restart(tmp_path, signal.SIGTERM)
    assert outcome.stopped_code == 0
    check_outcome(outcome)
    # Within the grace period (30 s by default) every running task finished: none
    # ran again.
    assert all(len(pids) == 1 for pids in outcome.runs.values()), outcome.runs
