"""Conformance of ``Backend.transaction()``: all or nothing, isolation, row locks."""

from __future__ import annotations

import asyncio
import time

import pytest

from backends.protocols import Backend, TriggerState
from backends.testing.base import (
    ConformanceBase,
    cancel_quietly,
    make_execution,
    make_log,
    payloads,
    with_state,
)
from backends.testing.clock import ManualClock
from runtime.flow.execution import Execution
from runtime.flow.states import StateType

EVENTS = "conformance-events"
JOBS = "conformance-jobs"


class Boom(Exception):
    """Raised inside a transaction to make it roll back."""


class TransactionConformance(ConformanceBase):
    """Transactions: the executor's outbox (lock, save, publish, ack) is all or nothing."""

    async def _outbox(self, backend: Backend, execution: Execution, event_id: int) -> None:
        """What the executor does in one transaction, for one execution."""
        async with backend.transaction() as tx:
            assert await tx.executions.get_for_update(execution.id) is None
            await tx.executions.save(execution)
            await tx.queues.publish(JOBS, [(None, b"job-1"), (None, b"job-2")])
            await tx.queues.ack(EVENTS, [event_id])

    async def _outbox_then_fail(
        self, backend: Backend, execution: Execution, event_id: int
    ) -> None:
        async with backend.transaction() as tx:
            await tx.executions.save(execution)
            await tx.queues.publish(JOBS, [(None, b"job-1")])
            await tx.queues.ack(EVENTS, [event_id])
            raise Boom

    @pytest.mark.asyncio
    async def test_transaction_commit_applies_every_write(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.queues.publish(EVENTS, [("e1", b"created")])
        [event] = await backend.queues.claim(EVENTS, "executor", limit=10, lease_seconds=30)
        execution = make_execution("e1", clock(), StateType.RUNNING)
        await self._outbox(backend, execution, event.id)
        assert await backend.executions.get("e1") == execution
        assert await backend.queues.depth(EVENTS) == 0
        jobs = await backend.queues.claim(JOBS, "worker", limit=10, lease_seconds=30)
        assert payloads(jobs) == [b"job-1", b"job-2"]

    @pytest.mark.asyncio
    async def test_transaction_exception_rolls_back_every_write(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.queues.publish(EVENTS, [("e1", b"created")])
        [event] = await backend.queues.claim(EVENTS, "executor", limit=10, lease_seconds=30)
        with pytest.raises(Boom):
            await self._outbox_then_fail(backend, make_execution("e1", clock()), event.id)
        assert await backend.executions.get("e1") is None
        assert await backend.queues.depth(JOBS) == 0
        assert await backend.queues.depth(EVENTS) == 1  # the ack was undone too
        assert await backend.queues.requeue_consumer("executor") == 1
        [again] = await backend.queues.claim(EVENTS, "executor", limit=10, lease_seconds=30)
        assert again.payload == b"created"

    @pytest.mark.asyncio
    async def test_transaction_rollback_covers_every_store(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        before = make_execution("kept", clock())
        await backend.executions.save(before)
        await backend.executions.save(make_execution("doomed", clock()))

        async def fail() -> None:
            async with backend.transaction() as tx:
                await tx.executions.save(with_state(before, StateType.RUNNING, clock()))
                await tx.executions.delete("doomed")
                await tx.flows.deploy("ns", "f", "id: f")
                await tx.triggers.save(TriggerState(namespace="ns", flow_id="f", trigger_id="t"))
                await tx.kv.set("ns", "k", "v")
                await tx.logs.append([make_log("kept", "hello", clock())])
                await tx.kills.request(["tr-1"])
                raise Boom

        with pytest.raises(Boom):
            await fail()
        assert await backend.executions.get("kept") == before
        assert await backend.executions.get("doomed") is not None
        assert await backend.flows.get("ns", "f") is None
        assert await backend.flows.revisions("ns", "f") == []
        assert await backend.triggers.get("ns", "f", "t") is None
        assert await backend.kv.get("ns", "k") is None
        assert await backend.logs.query("kept") == []
        assert await backend.kills.requested(["tr-1"]) == set()

    @pytest.mark.asyncio
    async def test_transaction_publish_invisible_until_commit(self, backend: Backend) -> None:
        async with backend.transaction() as tx:
            await tx.queues.publish(JOBS, [(None, b"job")])
            assert await backend.queues.depth(JOBS) == 0
            assert await backend.queues.next_available(JOBS) is None
        assert await backend.queues.depth(JOBS) == 1
        jobs = await backend.queues.claim(JOBS, "worker", limit=10, lease_seconds=30)
        assert payloads(jobs) == [b"job"]

    @pytest.mark.asyncio
    async def test_transaction_wakes_waiters_on_commit_only(self, backend: Backend) -> None:
        waiter = asyncio.create_task(backend.queues.wait(JOBS, at_most=10))
        try:
            await asyncio.sleep(0.05)
            async with backend.transaction() as tx:
                await tx.queues.publish(JOBS, [(None, b"job")])
                await asyncio.sleep(0.1)
                assert not waiter.done(), "wait() woke before the publish committed"
            committed = time.monotonic()
            await asyncio.wait_for(waiter, timeout=5)
            assert time.monotonic() - committed < 1.0
        finally:
            await cancel_quietly(waiter)

    @pytest.mark.asyncio
    async def test_transaction_reads_its_own_writes(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        execution = make_execution("e1", clock())
        async with backend.transaction() as tx:
            await tx.executions.save(execution)
            assert await tx.executions.get("e1") == execution
            record = await tx.flows.deploy("ns", "f", "id: f")
            assert await tx.flows.get("ns", "f") == record
            await tx.kv.set("ns", "k", 1)
            entry = await tx.kv.get("ns", "k")
            assert entry is not None
            assert entry.value == 1
            await tx.logs.append([make_log("e1", "one", clock())])
            assert [e.seq for e in await tx.logs.query("e1")] == [1]
            await tx.queues.publish(JOBS, [(None, b"job")])
            assert await tx.queues.depth(JOBS) == 1
        assert await backend.executions.get("e1") == execution

    @pytest.mark.asyncio
    async def test_get_for_update_returns_saved_execution(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        execution = make_execution("e1", clock(), StateType.RUNNING)
        await backend.executions.save(execution)
        async with backend.transaction() as tx:
            assert await tx.executions.get_for_update("e1") == execution
            assert await tx.executions.get_for_update("missing") is None
            changed = with_state(execution, StateType.SUCCESS, clock())
            await tx.executions.save(changed)
            assert await tx.executions.get_for_update("e1") == changed
        assert await backend.executions.get("e1") == changed

    @pytest.mark.asyncio
    async def test_get_for_update_serialises_transactions(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await backend.executions.save(make_execution("e1", clock()))
        locked = asyncio.Event()
        release = asyncio.Event()
        seen_by_second: list[StateType] = []

        async def first() -> None:
            async with backend.transaction() as tx:
                execution = await tx.executions.get_for_update("e1")
                assert execution is not None
                locked.set()
                await release.wait()
                await tx.executions.save(with_state(execution, StateType.RUNNING, clock()))

        async def second() -> None:
            await locked.wait()
            async with backend.transaction() as tx:
                execution = await tx.executions.get_for_update("e1")
                assert execution is not None
                seen_by_second.append(execution.state.current)

        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        try:
            await asyncio.wait_for(locked.wait(), timeout=5)
            await asyncio.sleep(0.1)
            assert seen_by_second == [], "a second transaction read a locked execution"
            release.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
            assert seen_by_second == [StateType.RUNNING]
        finally:
            for task in tasks:
                await cancel_quietly(task)

    @pytest.mark.asyncio
    async def test_transaction_cancelled_rolls_back(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        inside = asyncio.Event()

        async def body() -> None:
            async with backend.transaction() as tx:
                await tx.executions.save(make_execution("e1", clock()))
                await tx.queues.publish(JOBS, [(None, b"job")])
                inside.set()
                await asyncio.Event().wait()  # cancelled here

        task = asyncio.create_task(body())
        await asyncio.wait_for(inside.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await backend.executions.get("e1") is None
        assert await backend.queues.depth(JOBS) == 0
        # The backend is usable afterwards: the cancelled transaction let go of its locks.
        execution = make_execution("e2", clock())
        async with asyncio.timeout(5), backend.transaction() as tx:
            await tx.executions.save(execution)
        assert await backend.executions.get("e2") == execution
