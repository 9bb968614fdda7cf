"""The one-process server (executor, worker, scheduler, liveness, flow deployer) on
the memory backend: bad flow files, kills, timeouts, dead workers and stops, as a user
of `runtime run` sees them."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.memory import MemoryBackend
from backends.protocols import Backend, ServiceInstance
from backends.storage_local import LocalStorage
from runtime.flow.events import Kill, WorkerResult
from runtime.flow.parse import file_problems
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_job, encode_event
from services import standalone
from services.executor import Executor, send_event
from services.flows import FlowCache, deploy_folder, deploy_source
from services.standalone import Server
from tests.services.server_helpers import (
    NS,
    S,
    alive,
    dead,
    drained,
    ended,
    get,
    pid_in,
    returns,
    running,
    running_task,
    settings,
    shell,
    start,
    task_state,
    text_of,
    until,
)

# -- bad input -----------------------------------------------------------------------------
BROKEN = """id: broken
namespace: srv
tasks:
  - id: a
    type: [io.kestra.plugin.core.log.Log
    message: hi
"""
TYPO = """id: typo
namespace: srv
tasks:
  - id: a
    type: io.kestra.plugin.core.log.Log
    mesage: hi
"""


class RecordingLog:
    """Stands in for a module's structlog logger; keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def record(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return record


@pytest.mark.asyncio
async def test_invalid_flow_files_are_reported_with_file_line_column_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flows = tmp_path / "flows"
    (flows / "nested").mkdir(parents=True)
    (flows / "good.yml").write_text(returns("good"))
    (flows / "broken.yml").write_text(BROKEN)
    (flows / "nested" / "typo.yaml").write_text(TYPO)

    deployed, problems = await deploy_folder(MemoryBackend().flows, flows)
    assert [r.id for r in deployed] == ["good"]
    broken, typo = flows / "broken.yml", flows / "nested" / "typo.yaml"
    assert [re.match(r"(.*):(\d+):(\d+): ", p).groups() for p in problems] == [  # type: ignore[union-attr]
        (str(broken), "6", "12"),
        (str(typo), "4", "5"),
        (str(typo), "6", "5"),
    ]
    assert "invalid YAML" in problems[0]
    assert "missing required field `message`" in problems[1]
    assert "unknown field `mesage`" in problems[2]

    # The server reports the same lines, deploys the rest, and runs it.
    log = RecordingLog()
    monkeypatch.setattr(standalone, "log", log)
    backend = MemoryBackend()
    async with asyncio.timeout(10), running(tmp_path, backend, flows_dir=flows):
        assert [(f.namespace, f.id) for f in await backend.flows.list()] == [(NS, "good")]
        execution = await ended(backend, await start(backend, "good"))
        assert execution.state.current is S.SUCCESS
    reported = [fields["problem"] for level, event, fields in log.records if level == "error"]
    assert reported == problems
    [summary] = [fields for _, event, fields in log.records if event == "flows.folder_deployed"]
    assert (summary["flows"], summary["invalid_files"]) == (1, 2)


@pytest.mark.asyncio
async def test_a_flow_file_that_is_not_utf8_is_reported_and_skipped(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "good.yml").write_text(returns("good"))
    (flows / "latin1.yml").write_bytes(returns("latin", value="caf\xe9").encode("latin-1"))
    backend = MemoryBackend()
    deployed, problems = await deploy_folder(backend.flows, flows)
    assert [r.id for r in deployed] == ["good"]
    [problem] = problems
    assert re.match(rf"{re.escape(str(flows / 'latin1.yml'))}:\d+:\d+: .*UTF-8", problem)
    # The server starts all the same, and runs the good flow.
    async with asyncio.timeout(10), running(tmp_path, backend, flows_dir=flows):
        assert (await ended(backend, await start(backend, "good"))).state.current is S.SUCCESS


@pytest.mark.asyncio
async def test_a_flow_file_that_is_not_utf8_is_reported_where_validate_reports_it(
    tmp_path: Path,
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    latin = flows / "latin1.yml"
    latin.write_bytes(returns("latin", value="caf\xe9").encode("latin-1"))
    _, problems = await deploy_folder(MemoryBackend().flows, flows)
    assert problems == [p.render(str(latin)) for p in file_problems(latin)]


# -- kill ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_kill_ends_a_long_sleep_killed_at_once(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deploy_source(
        backend.flows,
        f"""
id: napper
namespace: {NS}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
  - id: never
    type: io.kestra.plugin.core.debug.Return
    format: no
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        execution_id = await start(backend, "napper")
        await running_task(backend, execution_id, "nap")
        killed_at = time.monotonic()
        await send_event(backend, execution_id, Kill(at=backend.clock()))
        execution = await ended(backend, execution_id, within=3)
        assert time.monotonic() - killed_at < 2
    assert execution.state.current is S.KILLED
    assert [(r.task_id, r.state.current) for r in execution.task_run_list] == [("nap", S.KILLED)]
    assert S.KILLING in [h.state for h in execution.state.histories]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_kill_ends_a_shell_task_and_its_processes(tmp_path: Path) -> None:
    backend = MemoryBackend()
    pid_file = tmp_path / "pid"
    await deploy_source(
        backend.flows, shell("sleeper", [f"sleep 30 & echo $! > {pid_file}", "wait"])
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        execution_id = await start(backend, "sleeper")
        pid = await pid_in(pid_file)
        assert alive(pid)
        await send_event(backend, execution_id, Kill(at=backend.clock()))
        execution = await ended(backend, execution_id, within=3)
        await dead(pid)
    assert execution.state.current is S.KILLED
    assert execution.task_run_list[0].state.current is S.KILLED


@pytest.mark.asyncio
async def test_killing_a_parent_kills_its_running_subflow(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deploy_source(
        backend.flows,
        f"""
id: slow_child
namespace: {NS}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
""",
    )
    await deploy_source(
        backend.flows,
        f"""
id: parent
namespace: {NS}
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: {NS}
    flowId: slow_child
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        parent_id = await start(backend, "parent")

        async def child_sleeping() -> bool:
            found = await backend.executions.search(namespace=NS, flow_id="slow_child")
            return bool(found) and await task_state(backend, found[0].id, "nap") is S.RUNNING

        await until(child_sleeping, 5, "the child's sleep started")
        [child] = await backend.executions.search(namespace=NS, flow_id="slow_child")
        await send_event(backend, parent_id, Kill(at=backend.clock()))
        parent = await ended(backend, parent_id, within=3)
        child = await ended(backend, child.id, within=3)
    assert (parent.state.current, child.state.current) == (S.KILLED, S.KILLED)
    assert child.parent_id == parent_id


# -- timeouts --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_task_timeout_fails_a_long_sleep(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deploy_source(
        backend.flows,
        f"""
id: too_long
namespace: {NS}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
    timeout: PT0.5S
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        began = time.monotonic()
        execution = await ended(backend, await start(backend, "too_long"), within=3)
        took = time.monotonic() - began
    assert execution.state.current is S.FAILED
    assert execution.task_run_list[0].state.current is S.FAILED
    assert 0.5 <= took < 2
    logs = await backend.logs.query(execution.id)
    assert any("timed out" in entry.message and entry.level == "ERROR" for entry in logs), logs


@pytest.mark.slow
@pytest.mark.asyncio
async def test_task_timeout_fails_a_shell_task_and_ends_its_processes(tmp_path: Path) -> None:
    backend = MemoryBackend()
    pid_file = tmp_path / "pid"
    await deploy_source(
        backend.flows,
        shell(
            "too_long_sh",
            [f"sleep 30 & echo $! > {pid_file}", "wait"],
            task="    timeout: PT0.5S",
        ),
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        execution = await ended(backend, await start(backend, "too_long_sh"), within=3)
        await dead(await pid_in(pid_file))
    assert execution.state.current is S.FAILED


# -- liveness ----------------------------------------------------------------------------------
async def dispatch_job(backend: Backend, flow_id: str) -> tuple[str, str]:
    """Start an execution and let an executor (not the server's) dispatch its first job;
    returns (execution id, task run id)."""
    execution_id = await start(backend, flow_id)
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-setup")
    assert await executor.step() == 1
    execution = await get(backend, execution_id)
    [run] = execution.task_run_list
    return execution_id, run.id


async def claim_as(backend: Backend, worker_id: str, task_run_id: str) -> None:
    [message] = await backend.queues.claim(WORKER_QUEUE, worker_id, 1, 24 * 3600)
    assert decode_job(message.payload).task_run_id == task_run_id


async def register(
    backend: Backend, worker_id: str, silent_for: float, kind: str = "worker"
) -> None:
    now = backend.clock()
    await backend.services.heartbeat(
        ServiceInstance(
            id=worker_id,
            kind=kind,
            state="RUNNING",
            host="elsewhere",
            pid=1,
            started=now - timedelta(hours=1),
            heartbeat=now - timedelta(seconds=silent_for),
        )
    )


@pytest.mark.parametrize("when", ["before-start", "while-running"])
@pytest.mark.asyncio
async def test_jobs_of_a_dead_worker_are_requeued_and_run_by_a_live_one(
    tmp_path: Path, when: str
) -> None:
    """before-start: a worker of a previous process (released at start-up);
    while-running: a worker that stopped heartbeating (released after the timeout)."""
    backend = MemoryBackend()
    await deploy_source(backend.flows, returns("one"))
    # Both jobs are dispatched and leased before the server's own worker could race
    # for them; nobody is registered yet, so start-up recovery leaves them alone.
    execution_id, run_id = await dispatch_job(backend, "one")
    await claim_as(backend, "worker-dead", run_id)
    other_id, other_run = await dispatch_job(backend, "one")
    await claim_as(backend, "worker-alive", other_run)
    if when == "before-start":
        await register(backend, "worker-dead", silent_for=60)
    async with asyncio.timeout(10), running(tmp_path, backend) as server:
        assert server.worker is not None
        if when == "while-running":
            await register(backend, "worker-alive", silent_for=0)
            await register(backend, "worker-dead", silent_for=60)
        execution = await ended(backend, execution_id, within=5)
        assert execution.state.current is S.SUCCESS
        [attempt] = execution.task_run_list[0].attempts
        assert attempt.worker_id == server.worker.id
        assert "worker-dead" not in {i.id for i in await backend.services.list()}
        if when == "while-running":
            # A foreign worker that still heartbeats keeps its job.
            assert (await get(backend, other_id)).state.current is S.RUNNING
            assert await task_state(backend, other_id, "hello") is S.CREATED

        # The dead worker's late result changes nothing.
        late = WorkerResult(
            at=backend.clock(),
            task_run_id=run_id,
            attempt=1,
            state=S.FAILED,
            worker_id="worker-dead",
        )
        await backend.queues.publish(EXECUTOR_QUEUE, [(execution_id, encode_event(late))])
        await drained(backend)
        assert await get(backend, execution_id) == execution


# -- graceful stop ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.asyncio
async def test_graceful_stop_lets_a_running_task_finish_within_the_grace(tmp_path: Path) -> None:
    backend = MemoryBackend()
    marks = tmp_path / "marks"
    await deploy_source(
        backend.flows,
        shell("drain", [f"echo started >> {marks}", "sleep 1", f"echo finished >> {marks}"]),
    )
    config = settings(grace_seconds=5.0)
    async with asyncio.timeout(15):
        server = Server(config, backend=backend, storage=LocalStorage(tmp_path / "storage"))
        await server.start()
        try:
            execution_id = await start(backend, "drain")

            async def started() -> bool:
                return "started" in text_of(marks)

            await until(started, 5, "the task started")
            began = time.monotonic()
        finally:
            await server.stop()
        took = time.monotonic() - began
        assert 0.5 < took < 5, took
        assert marks.read_text().split() == ["started", "finished"]
        assert await backend.queues.depth(WORKER_QUEUE) == 0

        # The next server takes the execution up where it was: the task is not re-run.
        async with running(tmp_path, backend, config):
            execution = await ended(backend, execution_id)
    assert execution.state.current is S.SUCCESS
    assert marks.read_text().split() == ["started", "finished"]
    [attempt] = execution.task_run_list[0].attempts
    assert attempt.state.current is S.SUCCESS


@pytest.mark.slow
@pytest.mark.asyncio
async def test_graceful_stop_gives_back_a_task_longer_than_the_grace(tmp_path: Path) -> None:
    backend = MemoryBackend()
    pid_file = tmp_path / "pid"
    await deploy_source(
        backend.flows, shell("endless", [f"sleep 30 & echo $! > {pid_file}", "wait"])
    )
    async with asyncio.timeout(15):
        server = Server(
            settings(grace_seconds=0.3), backend=backend, storage=LocalStorage(tmp_path / "s")
        )
        await server.start()
        try:
            execution_id = await start(backend, "endless")
            pid = await pid_in(pid_file)
            await running_task(backend, execution_id, "sh")
            began = time.monotonic()
        finally:
            await server.stop()
        took = time.monotonic() - began
        assert took < 3, took
        await dead(pid)
    execution = await get(backend, execution_id)
    [run] = execution.task_run_list
    assert run.state.current is S.RUNNING
    # Nothing accepted is lost: the job can be claimed again, by the next worker.
    [message] = await backend.queues.claim(WORKER_QUEUE, "next-worker", 10, 60)
    job = decode_job(message.payload)
    assert (job.execution_id, job.task_run_id, job.attempt) == (execution_id, run.id, 1)


def worker_tasks(worker_id: str) -> list[asyncio.Task[Any]]:
    """The tasks a worker created: its claim loop, side loops and jobs."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith((f"{worker_id}.", "job.")) and not task.done()
    ]


async def cancel_all(worker_id: str) -> None:
    for _ in range(10):
        tasks = worker_tasks(worker_id)
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_immediate_stop_leaves_no_worker_task_behind(tmp_path: Path) -> None:
    backend = MemoryBackend()
    pid_file = tmp_path / "pid"
    await deploy_source(
        backend.flows, shell("endless", [f"sleep 30 & echo $! > {pid_file}", "wait"])
    )
    server = Server(settings(), backend=backend, storage=LocalStorage(tmp_path / "s"))
    try:
        async with asyncio.timeout(15):
            await server.start()
            assert server.worker is not None
            try:
                execution_id = await start(backend, "endless")
                pid = await pid_in(pid_file)
                await running_task(backend, execution_id, "sh")
            finally:
                await server.stop(graceful=False)  # a second Ctrl-C
            left = [task.get_name() for task in worker_tasks(server.worker.id)]
            assert left == []
            await dead(pid)
    finally:
        if server.worker is not None:
            await cancel_all(server.worker.id)


@pytest.mark.asyncio
async def test_a_long_silent_executor_leaves_the_registry_a_recent_one_stays(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    async with asyncio.timeout(10), running(tmp_path, backend) as server:
        assert server.executor is not None
        await register(backend, "executor-gone", silent_for=3600, kind="executor")
        await register(backend, "executor-late", silent_for=3, kind="executor")

        async def gone() -> bool:
            return "executor-gone" not in {i.id for i in await backend.services.list()}

        await until(gone, 5, "the long-silent executor removed")
        ids = {i.id for i in await backend.services.list()}
        # silent 3 s, under 4 worker timeouts (2 s here): kept; this server's own beats
        assert "executor-late" in ids
        assert server.executor.id in ids
