"""Executor and worker rules no other test pinned (each was changed by a mutation and
every test still passed), checked through what the components do on the memory
backend: the queues, the stored executions, the kill requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends.memory import MemoryBackend
from backends.storage_local import LocalStorage
from runtime.flow.events import ExecutionCreated, Kill, Restart
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_job
from services.executor import MAX_EVENT_ATTEMPTS, Executor, send_event, submit
from services.flows import FlowCache, deploy_source
from tests.services.direct_rig import rig
from tests.services.server_helpers import (
    NS,
    ended,
    returns,
    running,
    running_task,
    settings,
    start,
)

S = StateType


class Clock:
    """A clock the test moves: the queues' delays without waiting for them."""

    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def submitted(backend: MemoryBackend, flow_id: str) -> str:
    record = await backend.flows.get(NS, flow_id)
    assert record is not None
    execution = new_execution(
        id=new_id(),
        namespace=NS,
        flow_id=flow_id,
        flow_revision=record.revision,
        at=backend.clock(),
    )
    await submit(backend, execution)
    return execution.id


async def stored(backend: MemoryBackend, execution_id: str) -> Execution:
    execution = await backend.executions.get(execution_id)
    assert execution is not None, execution_id
    return execution


async def settle(executor: Executor) -> None:
    """Let the executor consume what is due on its queue."""
    for _ in range(20):
        if await executor.step() == 0:
            return
    raise AssertionError("the executor queue never emptied")


async def jobs_for(backend: MemoryBackend, execution_id: str) -> list[str]:
    """The task ids of the worker jobs queued for ``execution_id`` (left queued)."""
    claimed = await backend.queues.claim(WORKER_QUEUE, "peek", 100, 30)
    await backend.queues.nack(WORKER_QUEUE, [m.id for m in claimed], delay_seconds=0)
    jobs = [decode_job(m.payload) for m in claimed]
    return [job.task_id for job in jobs if job.execution_id == execution_id]


# -- the executor ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_poison_event_is_dropped_after_exactly_the_allowed_attempts() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    await deploy_source(backend.flows, returns("plain"))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    execution_id = await submitted(backend, "plain")
    await settle(executor)
    running_before = await stored(backend, execution_id)
    assert running_before.state.current is S.RUNNING

    # The engine refuses to restart a running execution: each try fails.
    await send_event(backend, execution_id, Restart(at=clock()))
    deliveries = 0
    while await backend.queues.depth(EXECUTOR_QUEUE) > 0:
        assert deliveries <= MAX_EVENT_ATTEMPTS, "the poison event is never dropped"
        deliveries += await executor.step()
        clock.advance(5)  # past the delay of the retry
    assert deliveries == MAX_EVENT_ATTEMPTS
    # dropped, not applied: the execution is as it was, its job still queued
    assert await stored(backend, execution_id) == running_before
    assert await jobs_for(backend, execution_id) == ["hello"]


PARENT = f"""
id: parent
namespace: {NS}
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: {NS}
    flowId: child
    wait: WAIT
"""


async def started_child(wait: bool) -> tuple[MemoryBackend, Executor, Execution, Execution]:
    backend = MemoryBackend()
    await deploy_source(backend.flows, returns("child"))
    await deploy_source(backend.flows, PARENT.replace("WAIT", str(wait).lower()))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    parent_id = await submitted(backend, "parent")
    await settle(executor)
    parent = await stored(backend, parent_id)
    (call,) = parent.runs_of("call")
    child_id = (call.memo or {})["executionId"]
    return backend, executor, parent, await stored(backend, child_id)


@pytest.mark.asyncio
async def test_a_subflow_child_created_again_by_a_redelivery_is_left_as_it_is() -> None:
    backend, executor, parent, child = await started_child(wait=True)
    assert child.state.current is S.RUNNING
    assert await jobs_for(backend, child.id) == ["hello"]
    parent_before = await backend.executions.get(parent.id)
    assert parent_before is not None

    # The parent's start delivered again to its state before the child existed (a
    # batch whose commit was lost after the child's): CreateSubflow is carried out twice.
    created = parent.task_run_list[0].state.histories[0].date
    fresh = new_execution(
        id=parent.id,
        namespace=NS,
        flow_id="parent",
        flow_revision=parent.flow_revision,
        at=created,
    )
    await backend.executions.save(fresh)
    await send_event(backend, parent.id, ExecutionCreated(at=created))
    await settle(executor)

    again = await stored(backend, parent.id)
    assert again.runs_of("call")[0].memo == parent.runs_of("call")[0].memo  # the same child
    assert await stored(backend, child.id) == child  # not reset to CREATED, not restarted
    assert await jobs_for(backend, child.id) == ["hello"]  # its task not queued twice


@pytest.mark.asyncio
async def test_a_child_the_parent_does_not_wait_for_carries_no_parent_ids() -> None:
    _, _, parent, child = await started_child(wait=False)
    assert (child.parent_id, child.parent_task_run_id) == (None, None)
    assert parent.state.current is S.SUCCESS  # it did not wait
    assert parent.runs_of("call")[0].outputs == {"executionId": child.id}


@pytest.mark.asyncio
async def test_a_child_the_parent_waits_for_names_the_parent_and_its_task_run() -> None:
    _, _, parent, child = await started_child(wait=True)
    (call,) = parent.runs_of("call")
    assert (child.parent_id, child.parent_task_run_id) == (parent.id, call.id)
    assert parent.state.current is S.RUNNING


# -- the worker ------------------------------------------------------------------------------
NAPPER = f"""
id: napper
namespace: {NS}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
"""


@pytest.mark.asyncio
async def test_a_killed_report_clears_the_kill_request(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, NAPPER)
    async with asyncio.timeout(10), rig(tmp_path, backend):
        execution_id = await start(backend, "napper")
        await running_task(backend, execution_id, "nap")
        (nap,) = (await stored(backend, execution_id)).runs_of("nap")
        await send_event(backend, execution_id, Kill(at=backend.clock()))
        execution = await ended(backend, execution_id)
        assert execution.state.current is S.KILLED
        # the worker's KILLED report and the clearing are one write: no lingering request
        assert await backend.kills.requested([nap.id]) == set()


NAPS = f"""
id: naps
namespace: {NS}
tasks:
  - id: all
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
""" + "".join(
    f"""      - id: nap{i}
        type: io.kestra.plugin.core.flow.Sleep
        duration: PT0.3S
"""
    for i in range(5)
)


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("concurrency", [1, 2])
async def test_a_worker_never_runs_more_jobs_at_once_than_its_concurrency(
    tmp_path: Path, concurrency: int
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, NAPS)
    config = settings(concurrency=concurrency)
    async with asyncio.timeout(20), running(tmp_path, backend, config):
        execution = await ended(backend, await start(backend, "naps"), within=15)
    assert execution.state.current is S.SUCCESS
    # each attempt's RUNNING and end dates, as the worker reported them
    spans = [
        (run.attempts[0].state.start_date, run.attempts[0].state.end_date)
        for run in execution.task_run_list
        if run.task_id.startswith("nap")
    ]
    assert len(spans) == 5
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    at_once, most = 0, 0
    for _, step in edges:  # an end sorts before a start at the same instant
        at_once += step
        most = max(most, at_once)
    assert most == concurrency


# -- what a task run writes: its log lines, its template services ----------------------------
LOGS_AND_SERVICES = f"""
id: chatty
namespace: {NS}
tasks:
  - id: say
    type: io.kestra.plugin.core.log.Log
    level: LEVEL
    message: hello
  - id: use
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ secret('TOKEN') }}}} {{{{ kv('colour') }}}} {{{{ read('FILE') }}}}"
"""


@pytest.mark.asyncio
@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARN", "ERROR"])
async def test_task_log_lines_name_their_run_and_the_services_answer_templates(
    tmp_path: Path, level: str
) -> None:
    backend = MemoryBackend()  # the rig's worker has the secret TOKEN: s3cret
    storage = LocalStorage(tmp_path / "storage")  # the worker's storage folder
    # not UTF-8: read() replaces what it cannot decode rather than failing the task
    uri = await storage.put(NS, "notes/a.txt", b"from storage \xff")
    await backend.kv.set(NS, "colour", "blue")
    flow = LOGS_AND_SERVICES.replace("LEVEL", level).replace("FILE", uri)
    await deploy_source(backend.flows, flow)
    async with asyncio.timeout(10), rig(tmp_path, backend):
        execution = await ended(backend, await start(backend, "chatty"))
        await asyncio.sleep(0.1)  # past the worker's log flush
        entries = await backend.logs.query(execution.id)
    assert execution.state.current is S.SUCCESS
    (say,) = execution.runs_of("say")
    lines = [e for e in entries if e.task_id == "say"]
    assert [(e.level, e.message) for e in lines] == [(level, "hello")]
    line = lines[0]
    assert (line.execution_id, line.namespace, line.flow_id) == (execution.id, NS, "chatty")
    assert (line.task_run_id, line.attempt) == (say.id, 1)
    assert execution.runs_of("use")[0].outputs == {"value": "s3cret blue from storage \ufffd"}


MISSING = f"""
id: missing
namespace: {NS}
tasks:
  - id: use
    type: io.kestra.plugin.core.debug.Return
    format: "WHAT"
"""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("what", "error"),
    [
        (
            "{{ secret('NOPE') }}",
            "secret 'NOPE' is not set: export SECRET_NOPE=<base64 of the value> "
            "in the worker's environment",
        ),
        ("{{ kv('nothing') }}", f"no KV entry 'nothing' in namespace '{NS}'"),
    ],
)
async def test_a_missing_secret_or_kv_entry_fails_the_task_and_says_which(
    tmp_path: Path, what: str, error: str
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, MISSING.replace("WHAT", what))
    async with asyncio.timeout(10), rig(tmp_path, backend):
        execution = await ended(backend, await start(backend, "missing"))
        await asyncio.sleep(0.1)  # past the worker's log flush
        entries = await backend.logs.query(execution.id)
    assert execution.state.current is S.FAILED
    messages = [e.message for e in entries if e.task_id == "use" and e.level == "ERROR"]
    assert any(error in m for m in messages), messages


# -- the executor's own log lines and subflow requests ------------------------------------------
@pytest.mark.asyncio
async def test_an_engine_log_line_is_stored_with_its_execution_and_task() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, PARENT.replace("WAIT", "true").replace("child", "absent"))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    parent_id = await submitted(backend, "parent")
    await settle(executor)
    parent = await stored(backend, parent_id)
    assert parent.state.current is S.FAILED
    (call,) = parent.runs_of("call")
    entries = await backend.logs.query(parent_id)
    errors = [e for e in entries if e.level == "ERROR"]
    assert len(errors) == 1, entries
    (error,) = errors
    assert error.message.startswith("subflow: ")
    assert "absent" in error.message
    assert (error.execution_id, error.namespace, error.flow_id) == (parent_id, NS, "parent")
    assert error.task_run_id == call.id


@pytest.mark.asyncio
async def test_a_subflow_child_runs_the_revision_asked_for_with_its_labels() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, returns("child", value="first"))
    await deploy_source(backend.flows, returns("child", value="second"))
    parent = PARENT.replace("WAIT", "true") + "    revision: 1\n    labels:\n      from: parent\n"
    await deploy_source(backend.flows, parent)
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    await submitted(backend, "parent")
    await settle(executor)
    (child,) = await backend.executions.search(namespace=NS, flow_id="child")
    assert child.flow_revision == 1
    assert [lb for lb in child.labels if not lb["key"].startswith("system.")] == [
        {"key": "from", "value": "parent"}
    ]


@pytest.mark.asyncio
async def test_a_subflow_child_whose_inputs_are_refused_fails_the_task_and_says_why() -> None:
    backend = MemoryBackend()
    child = returns("child", extra="inputs:\n  - {id: n, type: INT}\n")
    await deploy_source(backend.flows, child)
    parent = PARENT.replace("WAIT", "true") + "    inputs:\n      n: not-a-number\n"
    await deploy_source(backend.flows, parent)
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    parent_id = await submitted(backend, "parent")
    await settle(executor)
    assert (await stored(backend, parent_id)).state.current is S.FAILED
    errors = [e for e in await backend.logs.query(parent_id) if e.level == "ERROR"]
    assert [e.message.split(":")[0] for e in errors] == [f"subflow {NS}.child"]
    assert await backend.executions.search(namespace=NS, flow_id="child") == []


WORKDIR = f"""
id: workdir
namespace: {NS}
tasks:
  - id: wd
    type: io.kestra.plugin.core.flow.WorkingDirectory
    tasks:
      - {{id: first, type: io.kestra.plugin.core.debug.Return, format: "a"}}
      - id: second
        type: io.kestra.plugin.core.debug.Return
        format: "{{{{ outputs.first.value }}}}-b {{{{ flow.id }}}}"
"""


@pytest.mark.asyncio
async def test_a_working_directory_child_sees_the_outputs_before_it_and_the_flow(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, WORKDIR)
    async with asyncio.timeout(10), rig(tmp_path, backend):
        execution = await ended(backend, await start(backend, "workdir"))
    assert execution.state.current is S.SUCCESS
    assert execution.runs_of("second")[0].outputs == {"value": "a-b workdir"}


# -- the executor's extras: traces, idle waits, quarantine ---------------------------------------
ABSENT_CHILD = PARENT.replace("WAIT", "true").replace("child", "absent")


@pytest.mark.asyncio
async def test_an_ended_execution_is_traced_once_with_its_task_types() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, ABSENT_CHILD)
    traced: list[tuple[str, StateType, dict[str, str]]] = []
    executor = Executor(
        backend,
        FlowCache(backend),
        consumer_id="executor-test",
        tracer=lambda e, types: traced.append((e.id, e.state.current, types)),
    )
    parent_id = await submitted(backend, "parent")
    await settle(executor)
    assert traced == [(parent_id, S.FAILED, {"call": "io.kestra.plugin.core.flow.Subflow"})]


@pytest.mark.asyncio
async def test_a_failing_trace_costs_the_trace_only() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, ABSENT_CHILD)
    seen: list[StateType] = []

    def broken(execution: Execution, types: dict[str, str]) -> None:
        raise RuntimeError("exporter down")

    executor = Executor(
        backend,
        FlowCache(backend),
        consumer_id="executor-test",
        tracer=broken,
        listeners=[lambda e: seen.append(e.state.current)],
    )
    parent_id = await submitted(backend, "parent")
    await settle(executor)
    assert (await stored(backend, parent_id)).state.current is S.FAILED
    assert seen[-1] is S.FAILED


@pytest.mark.asyncio
async def test_the_idle_wait_lasts_until_the_next_delayed_event_at_most() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    most = executor.settings.idle_wait_seconds
    assert executor._idle_wait() == most  # nothing delayed
    executor._next_due = clock() + timedelta(seconds=most / 4)
    assert executor._idle_wait() == pytest.approx(most / 4)
    executor._next_due = clock() + timedelta(seconds=most * 10)
    assert executor._idle_wait() == most
    executor._next_due = clock() - timedelta(seconds=5)  # overdue: claim at once
    assert executor._idle_wait() == 0.0


@pytest.mark.asyncio
async def test_an_execution_whose_events_keep_failing_is_quarantined_failed() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    await deploy_source(backend.flows, returns("plain"))
    changed: list[Execution] = []
    executor = Executor(
        backend, FlowCache(backend), consumer_id="executor-test", listeners=[changed.append]
    )

    def broken(*args: object) -> None:
        raise RuntimeError("a bug while dispatching")

    executor._job = broken  # type: ignore[assignment,method-assign]
    execution_id = await submitted(backend, "plain")
    deliveries = 0
    while await backend.queues.depth(EXECUTOR_QUEUE) > 0:
        assert deliveries <= MAX_EVENT_ATTEMPTS
        deliveries += await executor.step()
        clock.advance(5)
        if deliveries < MAX_EVENT_ATTEMPTS:
            assert changed == []  # retried, nothing saved yet
    assert deliveries == MAX_EVENT_ATTEMPTS
    execution = await stored(backend, execution_id)
    assert execution.state.current is S.FAILED
    assert [e.id for e in changed] == [execution_id]
    (line,) = [e for e in await backend.logs.query(execution_id) if e.level == "ERROR"]
    assert "(RuntimeError: a bug while dispatching)" in line.message
    assert line.message.startswith("execution quarantined: ")
    assert await jobs_for(backend, execution_id) == []
    assert executor.processed == 1  # handled once: the retries were not


@pytest.mark.asyncio
async def test_an_execution_whose_flow_is_gone_is_quarantined_with_its_log_line() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    await deploy_source(backend.flows, returns("plain"))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    orphan = new_execution(id=new_id(), namespace=NS, flow_id="plain", flow_revision=99, at=clock())
    await submit(backend, orphan)
    for _ in range(MAX_EVENT_ATTEMPTS):
        await executor.step()
        clock.advance(5)
    assert await backend.queues.depth(EXECUTOR_QUEUE) == 0
    assert (await stored(backend, orphan.id)).state.current is S.FAILED
    (line,) = await backend.logs.query(orphan.id)
    assert "(FlowNotFoundError: " in line.message
    assert line.level == "ERROR"


@pytest.mark.asyncio
async def test_a_subflow_childs_template_defaults_see_the_time_of_the_call() -> None:
    clock = Clock()  # 2024-01-01, far from the wall clock
    backend = MemoryBackend(clock)
    child = returns(
        "child", extra='inputs:\n  - {id: when, type: STRING, defaults: "{{ now() }}"}\n'
    )
    await deploy_source(backend.flows, child)
    await deploy_source(backend.flows, PARENT.replace("WAIT", "true"))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    await submitted(backend, "parent")
    await settle(executor)
    (created,) = await backend.executions.search(namespace=NS, flow_id="child")
    assert str(created.inputs["when"]).startswith("2024-01-01")


@pytest.mark.asyncio
async def test_every_event_of_a_batch_counts_as_processed_once() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, returns("plain"))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    for _ in range(3):
        await submitted(backend, "plain")
    assert await executor.step() == 3
    assert executor.processed == 3  # what the instance page shows


@pytest.mark.asyncio
async def test_an_event_that_changes_nothing_is_not_reported_to_listeners() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, ABSENT_CHILD)
    changed: list[Execution] = []
    executor = Executor(
        backend, FlowCache(backend), consumer_id="executor-test", listeners=[changed.append]
    )
    parent_id = await submitted(backend, "parent")
    await settle(executor)
    assert changed[-1].state.current is S.FAILED
    seen = len(changed)
    await send_event(backend, parent_id, Kill(at=backend.clock()))  # it has ended already
    await settle(executor)
    assert len(changed) == seen


@pytest.mark.asyncio
async def test_a_failing_event_is_retried_a_second_later() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    await deploy_source(backend.flows, returns("plain"))
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    orphan = new_execution(id=new_id(), namespace=NS, flow_id="plain", flow_revision=99, at=clock())
    await submit(backend, orphan)
    await executor.step()
    assert await backend.queues.next_available(EXECUTOR_QUEUE) == clock() + timedelta(seconds=1)
