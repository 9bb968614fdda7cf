"""The executor's execution state per owned partition (``backends.kafka.state``), on
noida-db (exactly once) and on Tansu (at least once, ``exactly_once: false``: it has
no transactions): restored from the changelog when the executor queue's partitions are
assigned, tailed for other processes' writes, dropped on revocation; an ended
execution leaves the store but stays readable by id through the global reader."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.state import partition_for
from backends.kafka.testing import BROKERS, TANSU, BrokerProcess
from backends.testing.base import make_execution, with_state
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PARTITIONS = 4


#: every broker; Tansu without transactions
ON_EACH = pytest.mark.parametrize("broker", BROKERS, indirect=True)


def _settings(broker: BrokerProcess, prefix: str, **more: object) -> KafkaSettings:
    return msgspec.convert(
        {
            "bootstrap_servers": broker.bootstrap_servers,
            "topic_prefix": prefix,
            "partitions": PARTITIONS,
            "exactly_once": broker.kind != TANSU,
            **more,
        },
        KafkaSettings,
    )


@asynccontextmanager
async def _backend(settings: KafkaSettings) -> AsyncIterator[KafkaBackend]:
    backend = KafkaBackend(settings)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


def _files(folder: Path) -> list[Path]:
    return list(folder.glob("*.db*"))


async def _own_executor_partitions(backend: KafkaBackend) -> None:
    """Join the executor queue's group (as the executor's inbox does) and settle."""
    async with backend.inbox(EXECUTOR_QUEUE, "executor", lease_seconds=30).batch(0):
        pass


@ON_EACH
@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_an_executor_restores_its_partitions_running_executions_only(
    broker: BrokerProcess, tmp_path: Path, store: str
) -> None:
    prefix = f"s{secrets.token_hex(4)}."
    running = [make_execution(f"run-{i}", AT, StateType.RUNNING) for i in range(40)]
    ended = [make_execution(f"end-{i}", AT, StateType.SUCCESS) for i in range(10)]
    async with _backend(_settings(broker, prefix)) as webserver, webserver.transaction() as tx:
        for execution in running + ended:
            await tx.executions.save(execution)

    settings = _settings(broker, prefix, state_store=store, state_dir=str(tmp_path))
    async with _backend(settings) as executor:
        await _own_executor_partitions(executor)
        state = executor.state
        assert state.owned == set(range(PARTITIONS))
        counts = [await state.store.count(p) for p in range(PARTITIONS)]
        assert sum(counts) == len(running), "the store holds what runs, not what ended"
        for partition, count in enumerate(counts):
            expected = sum(1 for e in running if partition_for(e.id, PARTITIONS) == partition)
            assert count == expected
            assert state.restored[partition][1] == expected
        async with executor.transaction() as tx:
            found = await tx.executions.get_for_update("run-7")
        assert found == running[7]
        # the executor's own partitions were read from its store: the global reader
        # of the whole changelog never started
        assert executor._executions._consumer is None
        if store == "sqlite":
            assert _files(tmp_path), "the sqlite store is a file in state_dir"

        # another process's write (a restart, a new submission) is tailed into it
        async with (
            _backend(_settings(broker, prefix)) as webserver,
            webserver.transaction() as tx,
        ):
            await tx.executions.save(make_execution("new", AT, StateType.CREATED))
        assert await executor.executions.get_for_update("new") is not None

        # ending: written once more, then out of the store; readable by id still
        async with executor.transaction() as tx:
            await tx.executions.save(with_state(running[7], StateType.SUCCESS, AT))
        partition = partition_for("run-7", PARTITIONS)
        await state.catch_up([partition])
        assert await state.store.get(partition, "run-7") is None
        again = await executor.executions.get("run-7")
        assert again is not None
        assert again.state.current is StateType.SUCCESS
    if store == "sqlite":
        assert not _files(tmp_path), "the store's file goes with the process"


@ON_EACH
async def test_partitions_move_with_their_state_and_a_delete_removes_everywhere(
    broker: BrokerProcess,
) -> None:
    prefix = f"m{secrets.token_hex(4)}."
    settings = _settings(broker, prefix)
    executions = [make_execution(f"e-{i}", AT, StateType.RUNNING) for i in range(24)]
    async with _backend(settings) as first:
        async with first.transaction() as tx:
            for execution in executions:
                await tx.executions.save(execution)
        await _own_executor_partitions(first)
        assert first.state.owned == set(range(PARTITIONS))
        async with _backend(settings) as second:
            # the second member joins; the first hands partitions over on its next poll
            for _ in range(60):
                await _own_executor_partitions(second)
                await _own_executor_partitions(first)
                if second.state.owned and first.state.owned:
                    break
            assert first.state.owned | second.state.owned == set(range(PARTITIONS))
            assert not first.state.owned & second.state.owned
            await first.state.catch_up(range(PARTITIONS))
            await second.state.catch_up(range(PARTITIONS))
            for owner, other in ((first, second), (second, first)):
                for execution in executions:
                    partition = partition_for(execution.id, PARTITIONS)
                    held = await owner.state.store.get(partition, execution.id)
                    assert (held is not None) == (partition in owner.state.owned)
                    assert (await other.state.store.get(partition, execution.id) is None) == (
                        partition not in other.state.owned
                    )
            # a delete is a plain tombstone: gone from the owner and the global readers
            victim = executions[0].id
            owner = first if first.state.owns(victim) else second
            assert await owner.executions.delete(victim)
            assert await first.executions.get(victim) is None
            assert await second.executions.get(victim) is None
