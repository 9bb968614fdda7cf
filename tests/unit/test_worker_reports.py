"""The worker's group commit of job reports (services.worker.reports): an actor on a
bounded mailbox, run as a side task of its worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends.errors import Transient
from backends.protocols import QueueMessage
from runtime.actors import SideActor
from runtime.messages import WorkerJob
from services.worker.reports import Report, start_report_writer


async def settle() -> None:
    """Let the tasks started so far run until they wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def report(n: int) -> Report:
    job = WorkerJob(
        execution_id=f"e{n}",
        task_run_id=f"r{n}",
        task_id="t",
        attempt=1,
        namespace="ns",
        flow_id="f",
        flow_revision=1,
        variables={},
    )
    message = QueueMessage(id=n, queue="worker", key=None, payload=b"")
    return Report(message, job, f"result {n}".encode(), killed=False)


class Reports:
    """A writer as its worker holds one, for the tests to send and stop."""

    def __init__(self, write: Any) -> None:
        self.writer: SideActor[Report] = start_report_writer(write, name="w.reports", concurrency=8)

    async def send(self, report: Report) -> None:
        await self.writer.ref.ask(report, timeout=None)


@pytest.mark.asyncio
async def test_reports_arriving_during_a_write_share_the_next_one() -> None:
    groups: list[list[int]] = []
    release = asyncio.Event()

    async def write(reports: list[Report]) -> None:
        groups.append([r.message.id for r in reports])
        if len(groups) == 1:
            await release.wait()  # the first write is slow

    reports = Reports(write)
    first = asyncio.create_task(reports.send(report(1)))
    await settle()
    assert groups == [[1]]  # written at once: nothing to wait for
    later = [asyncio.create_task(reports.send(report(n))) for n in (2, 3, 4)]
    await settle()
    assert not first.done()
    release.set()
    await asyncio.gather(first, *later)
    assert groups == [[1], [2, 3, 4]]
    await reports.send(report(5))
    assert groups == [[1], [2, 3, 4], [5]]
    await reports.writer.stop(within=1.0)


@pytest.mark.asyncio
async def test_a_failed_write_fails_each_report_of_its_group_only() -> None:
    calls = 0

    async def write(reports: list[Report]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0)
            raise Transient("database restarting")

    reports = Reports(write)
    failing = [asyncio.create_task(reports.send(report(n))) for n in (1, 2)]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(r) for r in results] == [Transient, Transient]
    await reports.send(report(3))  # the next write succeeds
    assert calls == 2
    assert not reports.writer.task.done(), "a refused write does not stop the writer"
    await reports.writer.stop(within=1.0)


@pytest.mark.asyncio
async def test_a_sender_cancelled_while_waiting_leaves_the_write_going() -> None:
    written: list[int] = []
    release = asyncio.Event()

    async def write(reports: list[Report]) -> None:
        await release.wait()
        written.extend(r.message.id for r in reports)

    reports = Reports(write)
    sender = asyncio.create_task(reports.send(report(1)))
    await settle()
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    release.set()
    await reports.send(report(2))
    # the cancelled sender's report was written anyway: a result is never dropped
    assert written == [1, 2]
    await reports.writer.stop(within=1.0)


@pytest.mark.asyncio
async def test_a_write_failing_otherwise_answers_its_senders_and_the_writer_goes_on() -> None:
    """The job whose report it was fails its worker (through its settlement): one
    failure, reported once, by the job it concerns."""
    calls = 0

    async def write(reports: list[Report]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug in the write")

    reports = Reports(write)
    with pytest.raises(ValueError, match="a bug"):
        await reports.send(report(1))
    await reports.send(report(2))
    assert not reports.writer.task.done()
    await reports.writer.stop(within=1.0)


@pytest.mark.asyncio
async def test_stopping_the_writer_writes_what_its_mailbox_holds_first() -> None:
    written: list[list[int]] = []
    release = asyncio.Event()

    async def write(reports: list[Report]) -> None:
        await release.wait()
        written.append([r.message.id for r in reports])

    reports = Reports(write)
    senders = [asyncio.create_task(reports.send(report(1)))]
    await settle()  # 1 is being written
    senders += [asyncio.create_task(reports.send(report(n))) for n in (2, 3)]
    await settle()  # 2 and 3 wait in the mailbox
    stopping = asyncio.create_task(reports.writer.stop(within=5.0))
    await settle()
    release.set()
    await stopping
    await asyncio.gather(*senders)
    assert written == [[1], [2, 3]]
    assert reports.writer.task.done()
    assert reports.writer.task.exception() is None


@pytest.mark.asyncio
async def test_a_report_is_retried_for_as_long_as_the_database_is_away(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Given up, a finished job would stay leased to the live worker and run again."""
    from contextlib import asynccontextmanager

    from backends.memory import MemoryBackend
    from backends.storage_local import LocalStorage
    from runtime.flow.events import WorkerResult
    from runtime.flow.states import StateType
    from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_event
    from services.flows import FlowCache
    from services.worker import Worker
    from services.worker import reports as reports_module

    monkeypatch.setattr(reports_module, "RESULT_RETRY_FIRST", 0.001)
    monkeypatch.setattr(reports_module, "RESULT_RETRY_MAX", 0.002)
    backend = MemoryBackend()
    await backend.start()
    await backend.queues.publish(WORKER_QUEUE, [(None, b"job")])
    (message,) = await backend.queues.claim(WORKER_QUEUE, "w", 1, 60)
    refusals = 40  # far more than any fixed number of tries would have covered
    real_transaction = backend.transaction

    @asynccontextmanager
    async def flaky_transaction() -> Any:
        nonlocal refusals
        if refusals > 0:
            refusals -= 1
            raise Transient("database restarting")
        async with real_transaction() as tx:
            yield tx

    monkeypatch.setattr(backend, "transaction", flaky_transaction)
    worker = Worker(backend, LocalStorage(tmp_path), FlowCache(backend), worker_id="w")
    job = report(1).job
    await worker._finish(message, job, StateType.SUCCESS, {"value": 1})
    assert refusals == 0
    (result,) = await backend.queues.claim(EXECUTOR_QUEUE, "executor", 5, 60)
    event = decode_event(result.payload)
    assert isinstance(event, WorkerResult)
    assert (result.key, event.state) == ("e1", StateType.SUCCESS)
    assert await backend.queues.depth(WORKER_QUEUE) == 0  # the job is acked with it
    assert worker._reports is not None  # the first report started the writer
    await worker._reports.stop(within=1.0)
    await worker.pool.stop()
    await backend.stop()


@pytest.mark.asyncio
async def test_a_job_cancelled_before_it_started_is_given_back_or_killed(
    tmp_path: Any,
) -> None:
    """A task cancelled before its first step never runs its own handlers: the job
    would stay leased to this live worker. It is given back (a stop) or ends KILLED."""
    from backends.memory import MemoryBackend
    from backends.storage_local import LocalStorage
    from runtime.flow.events import WorkerResult
    from runtime.flow.states import StateType
    from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_event
    from services.flows import FlowCache
    from services.worker import Worker

    backend = MemoryBackend()
    await backend.start()
    worker = Worker(backend, LocalStorage(tmp_path), FlowCache(backend), worker_id="w")
    await backend.queues.publish(WORKER_QUEUE, [(None, b"stopped"), (None, b"killed")])
    stopped, killed = await backend.queues.claim(WORKER_QUEUE, "w", 2, 60)
    first, second = report(1).job, report(2).job
    worker._start(stopped, first)
    worker._start(killed, second)
    worker.running[second.task_run_id].killed = True
    for record in list(worker.running.values()):
        record.task.cancel()  # before either ran a line
    await settle()
    await asyncio.wait(list(worker._settling), timeout=5.0)
    # the stopped one is back in the queue, claimable by another worker
    (again,) = await backend.queues.claim(WORKER_QUEUE, "other", 5, 60)
    assert again.id == stopped.id
    # the killed one is acked, and its KILLED result is on its way to the executor
    (result,) = await backend.queues.claim(EXECUTOR_QUEUE, "executor", 5, 60)
    event = decode_event(result.payload)
    assert isinstance(event, WorkerResult)
    assert (event.task_run_id, event.state) == ("r2", StateType.KILLED)
    assert worker.running == {}
    assert worker._reports is not None  # the first report started the writer
    await worker._reports.stop(within=1.0)
    await worker.pool.stop()
    await backend.stop()


@pytest.mark.asyncio
async def test_a_refused_report_is_retried_with_a_doubling_delay_up_to_a_ceiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Soon after a short outage, without hammering a database that stays away."""
    from services.worker import reports as reports_module

    refusals = 12
    sent: list[int] = []

    async def write(group: list[Report]) -> None:
        nonlocal refusals
        if refusals > 0:
            refusals -= 1
            raise Transient("database restarting")
        sent.extend(r.message.id for r in group)

    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(reports_module.asyncio, "sleep", sleep)
    reports = Reports(write)
    await reports_module.send_until_written(reports.writer.ref, report(7))
    assert sent == [7]
    await reports.writer.stop(within=1.0)
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]


@pytest.mark.asyncio
async def test_log_lines_of_a_failed_report_write_go_first_in_the_next_one() -> None:
    """Nothing lost, nothing reordered: lines logged while the write failed follow."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from datetime import UTC, datetime

    from runtime.messages import LogEntry
    from services.worker.context import LogBuffer
    from services.worker.reports import write_reports

    def line(message: str) -> LogEntry:
        return LogEntry(
            execution_id="e1",
            namespace="ns",
            flow_id="f",
            timestamp=datetime.now(UTC),
            level="INFO",
            message=message,
        )

    buffer = LogBuffer()
    buffer.add(line("a"))
    buffer.add(line("b"))

    class Refusing:
        @asynccontextmanager
        async def settle(self, messages: Any) -> AsyncIterator[Any]:
            buffer.add(line("meanwhile 1"))  # tasks go on logging during the write
            buffer.add(line("meanwhile 2"))
            raise Transient("database restarting")
            yield

    with pytest.raises(Transient):
        await write_reports(Refusing(), buffer, [report(1)])  # type: ignore[arg-type]
    assert [e.message for e in buffer.take()] == ["a", "b", "meanwhile 1", "meanwhile 2"]
