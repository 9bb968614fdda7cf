"""The executor and the worker driven directly on the memory backend (no server
around them): what a flow's author and an operator see — end states, outputs, log
lines, kills, stops, the service registry — each in well under a second. These are
the per-mutant tests of the executor-worker mutation group (docs/testing.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from backends.errors import BackendError, Transient
from backends.memory import MemoryBackend
from runtime.flow.events import Kill, WorkerResult
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, WorkerJob, decode_event, encode_job
from services import executor as executor_module
from services.common import sleep_or_stop
from services.executor import send_event
from services.flows import deploy_source
from services.worker import worker as worker_module
from tests.services.direct_rig import rig
from tests.services.server_helpers import NS, ended, get, returns, running_task, start, until

S = StateType

pytestmark = pytest.mark.asyncio


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses of a second the executor and the worker take after a backend
    failure, recorded and shortened: the tests see them without waiting them out."""
    asked: list[float] = []

    async def quick(stopping: asyncio.Event, seconds: float) -> None:
        if seconds >= 1.0:
            asked.append(seconds)
            seconds /= 50
        await sleep_or_stop(stopping, seconds)

    monkeypatch.setattr(executor_module, "sleep_or_stop", quick)
    monkeypatch.setattr(worker_module, "sleep_or_stop", quick)
    return asked


async def deployed(backend: MemoryBackend, *sources: str) -> None:
    for source in sources:
        await deploy_source(backend.flows, source)


async def logs(backend: MemoryBackend, execution_id: str, task_id: str | None = None) -> list[Any]:
    entries = await backend.logs.query(execution_id)
    return [e for e in entries if task_id is None or e.task_id == task_id]


async def flushed(backend: MemoryBackend, execution_id: str, task_id: str, level: str) -> list[str]:
    """The messages of ``level`` the task logged, once the worker's flush wrote one."""

    async def written() -> bool:
        return any(e.level == level for e in await logs(backend, execution_id, task_id))

    await until(written, 2, f"a {level} line of {task_id}")
    return [e.message for e in await logs(backend, execution_id, task_id) if e.level == level]


def flow(flow_id: str, tasks: str, extra: str = "") -> str:
    return f"id: {flow_id}\nnamespace: {NS}\n{extra}tasks:\n{tasks}"


# -- a flow's run, end to end -----------------------------------------------------------------
CHAIN = flow(
    "chain",
    """  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "one"
  - id: second
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.first.value }}-two {{ taskrun.id }} {{ task.id }} {{ secret('TOKEN') }}"
""",
)


async def test_a_flow_runs_task_after_task_with_the_outputs_before_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, CHAIN)
        execution = await ended(r.backend, await start(r.backend, "chain"))
        assert execution.state.current is S.SUCCESS
        (second,) = execution.runs_of("second")
        assert second.outputs == {"value": f"one-two {second.id} second s3cret"}
        # each run's one attempt, run by this worker, from its start to its end
        for run in execution.task_run_list:
            (attempt,) = run.attempts
            assert attempt.state.current is S.SUCCESS
            assert attempt.worker_id == "worker-test"
            assert attempt.state.start_date <= attempt.state.end_date
        # the listeners saw each committed change, down to the end
        assert r.changed[-1].id == execution.id
        assert r.changed[-1].state.current is S.SUCCESS
        assert r.executor.processed >= 3  # created, and a result per task
        assert r.worker.completed == 2
        assert r.worker.slots() == (0, r.worker.settings.concurrency)


async def test_components_register_running_and_end_terminated(tmp_path: Path) -> None:
    backend = MemoryBackend()
    async with rig(tmp_path, backend, concurrency=3) as r:
        await deployed(backend, returns("plain"))
        await ended(backend, await start(backend, "plain"))

        async def beaten() -> bool:
            instances = await backend.services.list()
            later = [i for i in instances if i.heartbeat > i.started]
            return len(later) == 2 and all(i.info.get("processed") != 0 for i in later)

        await until(beaten, 2, "heartbeats after the execution")
        instances = {i.kind: i for i in await backend.services.list()}
        assert set(instances) == {"executor", "worker"}
        assert instances["executor"].id == "executor-test"
        assert instances["worker"].id == "worker-test"
        assert {i.state for i in instances.values()} == {"RUNNING"}
        assert instances["worker"].info == {"running": 0, "concurrency": 3}
        assert instances["executor"].info["batch"] == r.executor.settings.batch
        assert instances["executor"].info["processed"] >= 2
    # a graceful stop says so: nobody waits for a stopped worker's jobs
    states = {i.kind: i.state for i in await backend.services.list()}
    assert states == {"executor": "TERMINATED_GRACEFULLY", "worker": "TERMINATED_GRACEFULLY"}


# -- how a task ends ----------------------------------------------------------------------------
FAILING = flow(
    "failing",
    """  - id: boom
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: "no {{ 'luck' }}"
""",
)

BAD_TEMPLATE = flow(
    "bad_template",
    """  - id: render
    type: io.kestra.plugin.core.debug.Return
    format: "{{ nothing.here }}"
""",
)

TIMED_OUT = flow(
    "timed_out",
    """  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
    timeout: PT0.1S
""",
)


@pytest.mark.parametrize(
    ("source", "task", "message"),
    [
        (FAILING, "boom", "no luck"),
        (BAD_TEMPLATE, "render", "task 'render', property 'format': "),
        (TIMED_OUT, "nap", "task 'nap' timed out after 0:00:00.100000: killed"),
    ],
)
async def test_a_failing_task_ends_failed_and_says_why(
    tmp_path: Path, source: str, task: str, message: str
) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, source)
        execution = await ended(r.backend, await start(r.backend, source.split()[1]))
        assert execution.state.current is S.FAILED
        (run,) = execution.runs_of(task)
        assert run.state.current is S.FAILED
        assert run.attempts[-1].state.current is S.FAILED
        errors = await flushed(r.backend, execution.id, task, "ERROR")
        assert len(errors) == 1
        assert errors[0].startswith(message), errors


WARNS = flow(
    "warns",
    """  - id: wd
    type: io.kestra.plugin.core.flow.WorkingDirectory
    tasks:
      - id: bad
        type: io.kestra.plugin.core.execution.Fail
        allowFailure: true
      - id: after
        type: io.kestra.plugin.core.debug.Return
        format: "still"
""",
)


async def test_a_task_that_warns_ends_warning_with_its_outputs_and_the_reason(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, WARNS)
        execution = await ended(r.backend, await start(r.backend, "warns"))
        assert execution.state.current is S.WARNING
        (wd,) = execution.runs_of("wd")
        assert wd.state.current is S.WARNING
        assert execution.runs_of("after")[0].outputs == {"value": "still"}
        warnings = await flushed(r.backend, execution.id, "wd", "WARN")
        assert warnings == ["child task 'bad' failed and allowFailure is true"]


LONG = flow(
    "long",
    """  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.25S
""",
)


async def test_a_longer_task_is_reported_running_before_it_ends(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, LONG)
        execution_id = await start(r.backend, "long")
        await running_task(r.backend, execution_id, "nap")
        (nap,) = (await get(r.backend, execution_id)).runs_of("nap")
        assert nap.attempts[0].worker_id == "worker-test"
        execution = await ended(r.backend, execution_id)
        assert execution.state.current is S.SUCCESS
        (done,) = execution.runs_of("nap")
        # the start date of the RUNNING report is kept: the attempt lasted the sleep
        attempt = done.attempts[0].state
        assert (attempt.end_date - attempt.start_date).total_seconds() >= 0.24


async def test_a_short_task_reports_only_its_end(tmp_path: Path) -> None:
    async with rig(tmp_path, running_report_seconds=5.0) as r:
        await deployed(r.backend, LONG)
        execution_id = await start(r.backend, "long")
        await asyncio.sleep(0.15)
        # still running on the worker, but nobody was told
        assert len(r.worker.running) == 1
        (nap,) = (await get(r.backend, execution_id)).runs_of("nap")
        assert nap.state.current is not S.RUNNING
        execution = await ended(r.backend, execution_id)
        attempt = execution.runs_of("nap")[0].attempts[0].state
        # the end report carries the start date all the same
        assert (attempt.end_date - attempt.start_date).total_seconds() >= 0.24


# -- jobs the worker cannot or must not run -------------------------------------------------------
def job(execution: Execution, task_id: str, **changes: Any) -> WorkerJob:
    values: dict[str, Any] = {
        "execution_id": execution.id,
        "task_run_id": execution.runs_of(task_id)[0].id if execution.runs_of(task_id) else "x",
        "task_id": task_id,
        "attempt": 1,
        "namespace": NS,
        "flow_id": execution.flow_id,
        "flow_revision": 1,
        "variables": {},
        **changes,
    }
    return WorkerJob(**values)


async def results(backend: MemoryBackend) -> list[WorkerResult]:
    claimed = await backend.queues.claim(EXECUTOR_QUEUE, "peek", 100, 30)
    events = [decode_event(m.payload) for m in claimed]
    return [e for e in events if isinstance(e, WorkerResult)]


async def worker_alone_runs(tmp_path: Path, jobs: list[WorkerJob], **settings: Any) -> Any:
    """Publish ``jobs`` to a worker running alone; its results and log lines."""
    backend = MemoryBackend()
    await deployed(backend, CHAIN)
    async with rig(tmp_path, backend, executor=False, **settings) as r:
        await backend.queues.publish(WORKER_QUEUE, [(j.execution_id, encode_job(j)) for j in jobs])

        async def done() -> bool:
            return await backend.queues.depth(WORKER_QUEUE) == 0 and not r.worker.running

        await until(done, 3, "the jobs done")
    found = await results(backend)
    entries = [e for j in jobs for e in await backend.logs.query(j.execution_id)]
    return found, entries


async def test_a_job_for_a_task_its_flow_lacks_fails_and_names_it(tmp_path: Path) -> None:
    missing = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="nowhere",
        attempt=2,
        namespace=NS,
        flow_id="chain",
        flow_revision=1,
        variables={},
    )
    found, entries = await worker_alone_runs(tmp_path, [missing])
    (result,) = found
    assert (result.task_run_id, result.attempt, result.state) == ("r1", 2, S.FAILED)
    assert result.worker_id == "worker-test"
    assert [(e.level, e.message) for e in entries] == [
        ("ERROR", f"task 'nowhere' is not in {NS}.chain revision 1")
    ]
    assert (entries[0].task_run_id, entries[0].attempt) == ("r1", 2)


async def test_a_job_handed_back_too_often_fails_instead_of_running(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, CHAIN)
    poison = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="first",
        attempt=1,
        namespace=NS,
        flow_id="chain",
        flow_revision=1,
        variables={},
    )
    await backend.queues.publish(WORKER_QUEUE, [("e1", encode_job(poison))])
    for _ in range(2):  # two workers died with it
        claimed = await backend.queues.claim(WORKER_QUEUE, "dead", 1, 30)
        await backend.queues.nack(WORKER_QUEUE, [m.id for m in claimed], delay_seconds=0)
    async with rig(tmp_path, backend, executor=False, max_requeues=2) as r:

        async def done() -> bool:
            return await backend.queues.depth(WORKER_QUEUE) == 0 and not r.worker.running

        await until(done, 3, "the job done")
    (result,) = await results(backend)
    assert (result.task_run_id, result.state, result.outputs) == ("r1", S.FAILED, None)
    (entry,) = await backend.logs.query("e1")
    assert entry.level == "ERROR"
    assert entry.message.startswith("this task was handed back 2 times")


async def test_a_job_handed_back_fewer_times_than_allowed_runs(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, CHAIN)
    again = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="first",
        attempt=1,
        namespace=NS,
        flow_id="chain",
        flow_revision=1,
        variables={},
    )
    await backend.queues.publish(WORKER_QUEUE, [("e1", encode_job(again))])
    claimed = await backend.queues.claim(WORKER_QUEUE, "dead", 1, 30)
    await backend.queues.nack(WORKER_QUEUE, [m.id for m in claimed], delay_seconds=0)
    async with rig(tmp_path, backend, executor=False, max_requeues=2) as r:

        async def done() -> bool:
            return await backend.queues.depth(WORKER_QUEUE) == 0 and not r.worker.running

        await until(done, 3, "the job done")
    (result,) = await results(backend)
    assert (result.state, result.outputs) == (S.SUCCESS, {"value": "one"})


async def test_a_flowable_job_is_refused_by_the_worker(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, WAITS_FOR_CHILD)
    wrong = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="call",
        attempt=1,
        namespace=NS,
        flow_id="parent",
        flow_revision=1,
        variables={},
    )
    await backend.queues.publish(WORKER_QUEUE, [("e1", encode_job(wrong))])
    async with rig(tmp_path, backend, executor=False) as r:

        async def done() -> bool:
            return await backend.queues.depth(WORKER_QUEUE) == 0 and not r.worker.running

        await until(done, 3, "the job done")
    (result,) = await results(backend)
    assert result.state is S.FAILED
    (entry,) = await backend.logs.query("e1")
    assert entry.message.startswith("task 'call' of type io.kestra.plugin.core.flow.Subflow ")


# -- kills ----------------------------------------------------------------------------------------
NAPPER = flow(
    "napper",
    """  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
""",
)


async def test_a_kill_ends_a_running_task_killed_at_once_and_clears_the_request(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, NAPPER)
        execution_id = await start(r.backend, "napper")
        await running_task(r.backend, execution_id, "nap")
        (nap,) = (await get(r.backend, execution_id)).runs_of("nap")
        await send_event(r.backend, execution_id, Kill(at=r.backend.clock()))
        execution = await ended(r.backend, execution_id, within=2)
        assert execution.state.current is S.KILLED
        assert execution.runs_of("nap")[0].state.current is S.KILLED
        assert await r.backend.kills.requested([nap.id]) == set()
        assert await flushed(r.backend, execution_id, "nap", "WARN") == ["killed on request"]
        assert r.worker.running == {}
        assert r.worker.completed == 0  # killed, not completed


METRICS = flow(
    "metrics",
    """  - id: sh
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - echo '::{"metrics":[{"name":"rows","type":"counter","value":3}]}::'
""",
)


async def test_a_tasks_metrics_reach_its_task_run(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, METRICS)
        execution = await ended(r.backend, await start(r.backend, "metrics"))
        assert execution.state.current is S.SUCCESS
        (sh,) = execution.runs_of("sh")
        assert [(m.name, m.type, m.value) for m in sh.metrics] == [("rows", "counter", 3.0)]


async def test_a_job_killed_while_queued_ends_killed_without_running(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, NAPPER)
    async with rig(tmp_path, backend, worker=False):
        execution_id = await start(backend, "napper")
        await until(lambda: queued(backend), 2, "the job queued")
        (nap,) = (await get(backend, execution_id)).runs_of("nap")
        await backend.kills.request([nap.id])
    async with rig(tmp_path, backend) as r:
        execution = await ended(backend, execution_id, within=2)
        assert execution.state.current is S.KILLED
        assert await backend.kills.requested([nap.id]) == set()
        assert r.worker.completed == 0


# -- stopping the worker -------------------------------------------------------------------------
SHORT = flow(
    "short",
    """  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
""",
)


async def test_a_graceful_stop_lets_a_running_task_finish_within_the_grace(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deployed(backend, SHORT)
    async with rig(tmp_path, backend, worker=False):
        await start(backend, "short")
        await until(lambda: queued(backend), 2, "the job queued")
    async with rig(tmp_path, backend, executor=False, grace_seconds=5.0) as r:
        await until(lambda: _true(bool(r.worker.running)), 2, "the job running")
    # the stop waited for the task: its result was reported and the job acked
    assert await backend.queues.depth(WORKER_QUEUE) == 0
    ends = [e.state for e in await results(backend) if e.state is not S.RUNNING]
    assert ends == [S.SUCCESS]
    assert r.worker.completed == 1


async def test_a_draining_worker_says_it_is_terminating(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, SHORT)
    async with rig(tmp_path, backend, worker=False):
        await start(backend, "short")
        await until(lambda: queued(backend), 2, "the job queued")
    async with rig(tmp_path, backend, executor=False) as r:
        await until(lambda: _true(bool(r.worker.running)), 2, "the job running")
        stopping = asyncio.create_task(r.components["worker"].stop())

        async def terminating() -> bool:
            return await worker_states(backend) == ["TERMINATING"]

        await until(terminating, 2, "the worker's TERMINATING heartbeat")
        await stopping
    assert r.worker.completed == 1


async def test_an_immediate_stop_gives_the_running_jobs_back(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, NAPPER)
    async with rig(tmp_path, backend, worker=False):
        await start(backend, "napper")
        await until(lambda: queued(backend), 2, "the job queued")
    async with rig(tmp_path, backend, executor=False) as r:
        await until(lambda: _true(bool(r.worker.running)), 2, "the job running")
        worker = r.tasks["worker"]
        worker.cancel()  # a supervisor's kill, with no grace
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert r.worker.running == {}
    assert [e for e in await results(backend) if e.state is not S.RUNNING] == []
    (again,) = await backend.queues.claim(WORKER_QUEUE, "next", 5, 30)
    assert again.attempts == 1
    assert await worker_states(backend) == ["TERMINATED_GRACEFULLY"]


async def worker_states(backend: MemoryBackend) -> list[str]:
    return [i.state for i in await backend.services.list() if i.kind == "worker"]


async def queued(backend: MemoryBackend) -> bool:
    return await backend.queues.depth(WORKER_QUEUE) == 1


async def test_a_graceful_stop_gives_back_a_task_longer_than_the_grace(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, NAPPER)
    async with rig(tmp_path, backend, grace_seconds=0.1) as r:
        execution_id = await start(backend, "napper")
        await running_task(backend, execution_id, "nap")
    # given back, not failed: the next worker runs it
    assert r.worker.completed == 0
    assert [e for e in await results(backend) if e.state is not S.RUNNING] == []
    (again,) = await backend.queues.claim(WORKER_QUEUE, "next", 5, 30)
    assert again.attempts == 1


async def _true(value: bool) -> bool:
    return value


# -- the worker's concurrency --------------------------------------------------------------------
NAPS = flow(
    "naps",
    """  - id: all
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
"""
    + "".join(
        f"""      - id: nap{i}
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.1S
"""
        for i in range(3)
    ),
)


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_worker_runs_as_many_jobs_at_once_as_its_concurrency_and_no_more(
    tmp_path: Path, concurrency: int
) -> None:
    async with rig(tmp_path, concurrency=concurrency) as r:
        await deployed(r.backend, NAPS)
        execution_id = await start(r.backend, "naps")
        most = 0
        while not (await get(r.backend, execution_id)).state.terminated:
            most = max(most, len(r.worker.running))
            busy, free = r.worker.slots()
            assert busy + free == concurrency
            await asyncio.sleep(0.005)
        assert most == concurrency
        assert (await get(r.backend, execution_id)).state.current is S.SUCCESS


# -- a worker whose side task dies fails, for its supervisor to restart it -----------------------
async def test_a_worker_whose_log_writes_break_for_good_fails_loudly(tmp_path: Path) -> None:
    backend = MemoryBackend()

    async def broken(entries: Any) -> None:
        raise ValueError("log store broken")

    async def run_until_it_fails() -> None:
        async with rig(tmp_path, backend, executor=False) as r:
            backend.logs.append = broken  # type: ignore[method-assign]
            r.worker._logs.add(_entry())
            await until(lambda: _true(r.tasks["worker"].done()), 2, "the worker failed")

    with pytest.raises(RuntimeError, match=r"side task worker-test\.logs died: ValueError"):
        await run_until_it_fails()


def _entry(message: str = "m") -> Any:
    from datetime import UTC, datetime

    from runtime.messages import LogEntry

    return LogEntry(
        execution_id="e1",
        namespace=NS,
        flow_id="chain",
        timestamp=datetime.now(UTC),
        level="INFO",
        message=message,
    )


async def test_log_lines_survive_a_log_store_that_is_briefly_away(tmp_path: Path) -> None:
    backend = MemoryBackend()
    refusals = 3
    real = backend.logs.append

    async def flaky(entries: Any) -> None:
        nonlocal refusals
        if refusals > 0:
            refusals -= 1
            if refusals == 2:
                r.worker._logs.add(_entry("n"))  # tasks go on logging meanwhile
            raise Transient("log store restarting")
        await real(entries)

    async with rig(tmp_path, backend, executor=False) as r:
        backend.logs.append = flaky  # type: ignore[method-assign]
        r.worker._logs.add(_entry())

        async def written() -> bool:
            return len(await backend.logs.query("e1")) == 2

        await until(written, 2, "the lines written")
    assert refusals == 0
    # nothing lost, nothing reordered
    assert [e.message for e in await backend.logs.query("e1")] == ["m", "n"]


# -- the executor's loop -------------------------------------------------------------------------
RETRIED = flow(
    "retried",
    """  - id: boom
    type: io.kestra.plugin.core.execution.Fail
    retry:
      type: constant
      interval: PT0.2S
      maxAttempt: 2
""",
)


async def test_a_retry_runs_when_its_delay_is_due_not_before(tmp_path: Path) -> None:
    async with rig(tmp_path, idle_wait=3.0) as r:
        await deployed(r.backend, RETRIED)
        execution = await ended(r.backend, await start(r.backend, "retried"), within=3)
        assert execution.state.current is S.FAILED
        (run,) = execution.runs_of("boom")
        first, second = run.attempts
        gap = (second.state.start_date - first.state.end_date).total_seconds()
        assert 0.19 <= gap < 2.5  # woken for the due date, not at the next idle poll


@pytest.mark.parametrize("error", [Transient("away"), BackendError("a bad statement")])
async def test_the_executor_goes_on_after_the_backend_fails_a_batch(
    tmp_path: Path, error: BackendError, pauses: list[float]
) -> None:
    backend = MemoryBackend()
    failures: list[BaseException] = [error]
    async with rig(tmp_path, backend) as r:
        real = r.executor.inbox.batch

        def flaky(size: int) -> Any:
            if failures:
                raise failures.pop(0)
            return real(size)

        r.executor.inbox.batch = flaky  # type: ignore[method-assign]
        await deployed(backend, returns("plain"))
        execution = await ended(backend, await start(backend, "plain"), within=4)
        assert execution.state.current is S.SUCCESS
        assert failures == []
        assert pauses == [1.0]  # it paused before claiming again


async def test_a_failing_listener_spares_the_others(tmp_path: Path) -> None:
    seen: list[str] = []

    def bad(execution: Execution) -> None:
        raise RuntimeError("listener bug")

    async with rig(tmp_path) as r:
        r.executor.listeners[:0] = [bad]
        r.executor.listeners.append(lambda e: seen.append(e.state.current.value))
        await deployed(r.backend, returns("plain"))
        await ended(r.backend, await start(r.backend, "plain"))
        await until(lambda: _true(bool(seen) and seen[-1] == "SUCCESS"), 1, "the end seen")
        assert seen[0] == "RUNNING"


async def test_an_event_for_an_unknown_execution_is_dropped(tmp_path: Path) -> None:
    async with rig(tmp_path, worker=False) as r:
        await send_event(r.backend, "nobody", Kill(at=r.backend.clock()))

        async def drained() -> bool:
            return await r.backend.queues.depth(EXECUTOR_QUEUE) == 0

        await until(drained, 2, "the event consumed")
        assert r.changed == []
        assert r.executor.processed == 1


# -- subflows and flow triggers ----------------------------------------------------------------
CHILD = flow(
    "child",
    """  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{ inputs.n }}"
""",
    extra="inputs:\n  - {id: n, type: INT}\noutputs:\n  - {id: got, type: STRING, value: "
    '"{{ outputs.hello.value }}"}\n',
)

WAITS_FOR_CHILD = flow(
    "parent",
    f"""  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: {NS}
    flowId: child
    wait: true
    transmitFailed: true
    inputs:
      n: 7
""",
)


async def test_a_subflow_returns_its_childs_outputs_to_the_parent(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, CHILD, WAITS_FOR_CHILD)
        parent = await ended(r.backend, await start(r.backend, "parent"))
        assert parent.state.current is S.SUCCESS
        (call,) = parent.runs_of("call")
        child = await get(r.backend, (call.memo or {})["executionId"])
        assert child.state.current is S.SUCCESS
        assert (child.parent_id, child.parent_task_run_id) == (parent.id, call.id)
        assert call.outputs is not None
        assert call.outputs["outputs"] == {"got": "7"}


SLEEPY_CHILD = flow(
    "child",
    """  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
""",
)


async def test_killing_a_parent_kills_its_running_child(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, SLEEPY_CHILD, WAITS_FOR_CHILD.replace("      n: 7\n", "")[:-12])
        parent_id = await start(r.backend, "parent")
        await running_task(r.backend, parent_id, "call")
        (call,) = (await get(r.backend, parent_id)).runs_of("call")
        child_id = (call.memo or {})["executionId"]
        await running_task(r.backend, child_id, "nap")
        await send_event(r.backend, parent_id, Kill(at=r.backend.clock()))
        assert (await ended(r.backend, parent_id, within=2)).state.current is S.KILLED
        assert (await ended(r.backend, child_id, within=2)).state.current is S.KILLED


DOWNSTREAM = flow(
    "downstream",
    """  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{ trigger.executionId }}"
""",
    extra=f"""triggers:
  - id: after
    type: io.kestra.plugin.core.trigger.Flow
    conditions:
      - type: io.kestra.plugin.core.condition.ExecutionFlow
        namespace: {NS}
        flowId: plain
""",
)


async def test_a_flow_trigger_starts_one_downstream_execution_per_upstream_end(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, returns("plain"), DOWNSTREAM)
        upstream = await ended(r.backend, await start(r.backend, "plain"))

        async def triggered() -> bool:
            found = await r.backend.executions.search(namespace=NS, flow_id="downstream")
            return bool(found) and all(e.state.terminated for e in found)

        await until(triggered, 3, "the downstream execution ended")
        (downstream,) = await r.backend.executions.search(namespace=NS, flow_id="downstream")
        assert downstream.state.current is S.SUCCESS
        assert downstream.runs_of("hello")[0].outputs == {"value": upstream.id}


LIMITED = flow(
    "limited",
    """  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.1S
""",
    extra="concurrency:\n  limit: 1\n",
)


async def test_a_concurrency_limit_queues_the_next_execution_until_one_ends(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await deployed(r.backend, LIMITED)
        first_id = await start(r.backend, "limited")
        await running_task(r.backend, first_id, "nap")
        second_id = await start(r.backend, "limited")

        async def queued() -> bool:
            return (await get(r.backend, second_id)).state.current is S.QUEUED

        await until(queued, 2, "the second execution queued")
        first = await ended(r.backend, first_id)
        second = await ended(r.backend, second_id)
        assert (first.state.current, second.state.current) == (S.SUCCESS, S.SUCCESS)
        assert second.runs_of("nap")[0].state.start_date >= first.state.end_date


# -- what the components do when a part of the backend fails ------------------------------------
async def test_a_backlog_larger_than_a_batch_is_consumed_without_idle_waits(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deployed(backend, returns("plain"))
    ids = [await start(backend, "plain") for _ in range(4)]
    async with rig(tmp_path, backend, worker=False, idle_wait=5.0) as r:
        r.executor.settings = r.executor.settings.__class__(
            batch=1, idle_wait_seconds=5.0, heartbeat_seconds=0.05
        )

        async def all_running() -> bool:
            return all([(await get(backend, i)).state.current is S.RUNNING for i in ids])

        # a full batch claims again at once; only a partial one waits for a publish
        await until(all_running, 3, "every execution started")


async def test_failed_heartbeats_are_retried_at_the_next_beat(tmp_path: Path) -> None:
    backend = MemoryBackend()
    real = backend.services.heartbeat
    calls = 0

    async def flaky(instance: Any) -> None:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 5:  # after the worker's first beat, which it needs to start
            raise (Transient if calls % 2 else RuntimeError)("registry away")
        await real(instance)

    backend.services.heartbeat = flaky  # type: ignore[method-assign]
    async with rig(tmp_path, backend) as r:

        async def beating_again() -> bool:
            return calls > 8 and len(await backend.services.list()) == 2

        await until(beating_again, 3, "heartbeats after the failures")
        assert not r.tasks["executor"].done()
        assert not r.tasks["worker"].done()


async def test_a_job_whose_report_cannot_be_written_fails_the_worker_and_goes_back(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deployed(backend, CHAIN)
    first = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="first",
        attempt=1,
        namespace=NS,
        flow_id="chain",
        flow_revision=1,
        variables={},
    )

    async def run_until_it_fails() -> None:
        async with rig(tmp_path, backend, executor=False) as r:

            def refused(messages: Any) -> Any:
                raise ValueError("constraint violated")

            r.worker.inbox.settle = refused  # type: ignore[method-assign]
            await backend.queues.publish(WORKER_QUEUE, [("e1", encode_job(first))])
            await until(lambda: _true(r.tasks["worker"].done()), 3, "the worker failed")

    with pytest.raises(RuntimeError, match=r"side task job settlement died: .*job r1 could not be"):
        await run_until_it_fails()
    # the job is back in the queue for the next worker, not lost with this one
    (again,) = await backend.queues.claim(WORKER_QUEUE, "next", 5, 30)
    assert again.attempts == 1
    assert await results(backend) == []


async def test_a_worker_goes_on_receiving_after_the_queue_was_briefly_away(
    tmp_path: Path, pauses: list[float]
) -> None:
    backend = MemoryBackend()
    await deployed(backend, returns("plain"))
    async with rig(tmp_path, backend) as r:
        real = r.worker.inbox.receive
        failures = [Transient("away")]

        async def flaky(limit: int) -> Any:
            if failures:
                raise failures.pop()
            return await real(limit)

        r.worker.inbox.receive = flaky  # type: ignore[method-assign]
        execution = await ended(backend, await start(backend, "plain"), within=4)
        assert execution.state.current is S.SUCCESS
        assert failures == []
        assert pauses == [1.0]  # it paused before claiming again


async def test_a_worker_sends_one_killed_report_for_a_killed_job(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, NAPPER)
    nap = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="nap",
        attempt=1,
        namespace=NS,
        flow_id="napper",
        flow_revision=1,
        variables={},
    )
    async with rig(tmp_path, backend, executor=False) as r:
        await backend.queues.publish(WORKER_QUEUE, [("e1", encode_job(nap))])

        async def began() -> bool:
            return any(record.ctx is not None for record in r.worker.running.values())

        await until(began, 2, "the job running")
        await backend.kills.request(["r1"])
        await until(lambda: _true(not r.worker.running), 2, "the job killed")
        await asyncio.sleep(0.05)  # any second report would be out by now
    ends = [e for e in await results(backend) if e.state is not S.RUNNING]
    assert [(e.task_run_id, e.state) for e in ends] == [("r1", S.KILLED)]
    assert await backend.queues.depth(WORKER_QUEUE) == 0
    assert await backend.kills.requested(["r1"]) == set()


async def test_a_job_runs_the_task_of_its_own_flow_revision(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deployed(backend, CHAIN, CHAIN.replace('format: "one"', 'format: "uno"'))
    first = WorkerJob(
        execution_id="e1",
        task_run_id="r1",
        task_id="first",
        attempt=1,
        namespace=NS,
        flow_id="chain",
        flow_revision=1,
        variables={},
    )
    found, _ = await worker_alone_runs_deployed(tmp_path, backend, [first])
    assert [(e.state, e.outputs) for e in found] == [(S.SUCCESS, {"value": "one"})]


async def worker_alone_runs_deployed(
    tmp_path: Path, backend: MemoryBackend, jobs: list[WorkerJob], **settings: Any
) -> Any:
    async with rig(tmp_path, backend, executor=False, **settings) as r:
        await backend.queues.publish(WORKER_QUEUE, [(j.execution_id, encode_job(j)) for j in jobs])

        async def done() -> bool:
            return await backend.queues.depth(WORKER_QUEUE) == 0 and not r.worker.running

        await until(done, 3, "the jobs done")
    found = await results(backend)
    entries = [e for j in jobs for e in await backend.logs.query(j.execution_id)]
    return found, entries


WHERE = flow(
    "where",
    """  - id: sh
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - echo "::{\\"outputs\\":{\\"dir\\":\\"$PWD\\"}}::"
""",
)


async def test_task_working_directories_are_made_where_the_worker_is_told(tmp_path: Path) -> None:
    parent = tmp_path / "work"
    parent.mkdir()
    async with rig(tmp_path, workdir=str(parent)) as r:
        await deployed(r.backend, WHERE)
        execution = await ended(r.backend, await start(r.backend, "where"))
    assert execution.state.current is S.SUCCESS
    (sh,) = execution.runs_of("sh")
    assert sh.outputs is not None
    assert Path(sh.outputs["vars"]["dir"]).parent == parent
