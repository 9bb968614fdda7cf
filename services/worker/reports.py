"""The worker's reports: a job's end (its result, published together with its ack
and the log lines so far) written by group commit, and retried for as long as the
database is away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from backends.errors import Transient
from backends.protocols import Inbox, QueueMessage
from runtime.actors import ActorRef, BatchActor, SideActor
from runtime.log import get_logger
from runtime.messages import EXECUTOR_QUEUE, WorkerJob
from services.worker.context import LogBuffer

log = get_logger("services.worker")

#: a report the database refused is tried again after this many seconds, doubling up
#: to RESULT_RETRY_MAX, for as long as it takes
RESULT_RETRY_FIRST = 0.2
RESULT_RETRY_MAX = 5.0


class Report(NamedTuple):
    """A job's end, to publish with its ack."""

    message: QueueMessage
    job: WorkerJob
    result: bytes
    killed: bool


class ReportWriter(BatchActor[Report]):
    """Group commit of job reports, as an actor on a bounded mailbox: a report is
    written at once when no write is in flight; reports arriving during a write wait
    in the mailbox and go together in the next one. An idle worker's report waits for
    nothing, a busy worker's cost one transaction per group instead of one per job.

    A failed write answers its reports' senders and the writer goes on: each job
    decides, sending again after a :class:`Transient` refusal, failing its worker
    (through the job's settlement) on anything else, so one failure is reported
    once, by the job it concerns. The writer's own task fails only if the actor
    does, which its worker watches like its other side tasks."""

    answered_errors = (Exception,)

    def __init__(self, write: Callable[[list[Report]], Awaitable[None]], batch: int) -> None:
        self._write = write
        self.batch_size = batch

    async def receive_batch(self, messages: Sequence[Report]) -> None:
        await self._write(list(messages))


def start_report_writer(
    write: Callable[[list[Report]], Awaitable[None]], *, name: str, concurrency: int
) -> SideActor[Report]:
    """The writer of a worker running ``concurrency`` jobs: each job has at most one
    report in the mailbox, so it never blocks a sender, and one write takes them all."""
    size = max(1, concurrency) + 8  # jobs settled from outside after a cancellation
    return SideActor(name, ReportWriter(write, size), mailbox_size=size)


async def send_until_written(writer: ActorRef[Report], report: Report) -> None:
    """Send ``report``, however long the database is away: given up, the job would
    stay leased to this live worker (a day) and then run a second time."""
    attempt = 0
    while True:
        try:
            await writer.ask(report, timeout=None)
            return
        except Transient as exc:
            log.warning(
                "worker.result_retry",
                error=str(exc),
                attempt=attempt,
                task_run=report.job.task_run_id,
            )
            await asyncio.sleep(min(RESULT_RETRY_MAX, RESULT_RETRY_FIRST * 2 ** min(attempt, 8)))
            attempt += 1


async def write_reports(inbox: Inbox, logs: LogBuffer, reports: list[Report]) -> None:
    """One unit of work of the jobs' inbox: the log lines so far, the results, and the
    jobs' acks (and their kill requests, for jobs that ended KILLED)."""
    entries = logs.take()
    try:
        async with inbox.settle([r.message for r in reports]) as tx:
            if entries:
                await tx.logs.append(entries)
            await tx.queues.publish(
                EXECUTOR_QUEUE, [(r.job.execution_id, r.result) for r in reports]
            )
            killed = [r.job.task_run_id for r in reports if r.killed]
            if killed:
                await tx.kills.clear(killed)
    except BaseException:
        logs.entries[:0] = entries  # they go with the next write
        raise


__all__ = [
    "RESULT_RETRY_FIRST",
    "RESULT_RETRY_MAX",
    "Report",
    "ReportWriter",
    "send_until_written",
    "start_report_writer",
    "write_reports",
]
