"""How long an executor takes to restore one partition of running executions from the
executions changelog (issue 22), against a raw consume of the same records.

One partition of a fresh changelog topic gets ``count`` running executions (each a
few task runs, about 1.5 KB encoded), written in transactions as the executor
writes them. Then, in the same run and on the same broker:

- *raw*: a bare ``read_committed`` aiokafka consumer reads the partition from its
  start to its end offset into a dict of bytes: the floor under any restore;
- *memory* and *sqlite*: ``ExecutionState.assign`` restores the partition into the
  store of that setting, the path an executor takes when the group gives it the
  partition (the fence of the previous owner excluded: it is one InitProducerId).

Each figure is the median of ``repeat`` runs; the restores are reported as
multiples of the raw consume. Run ``python -m bench.kafka_restore`` with
``RUNTIME_BENCH_KAFKA_BOOTSTRAP_SERVERS`` naming a broker with transactions.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from bench.kafka import BOOTSTRAP_VARIABLE, bootstrap_servers


def _execution(index: int) -> Any:
    from runtime.flow.execution import Attempt, TaskRun, new_execution
    from runtime.flow.states import State, StateType

    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=index)
    base = new_execution(
        id=f"exec-{index:06d}-{secrets.token_hex(6)}",
        namespace="company.team",
        flow_id="restore-bench",
        flow_revision=1,
        at=at,
        inputs={"day": "2026-01-01", "customer": f"c-{index % 97}"},
    )
    runs = tuple(
        TaskRun(
            id=f"tr-{index}-{n}",
            execution_id=base.id,
            namespace=base.namespace,
            flow_id=base.flow_id,
            task_id=f"step{n}",
            state=State.new(StateType.SUCCESS, at),
            attempts=(Attempt(state=State.new(StateType.SUCCESS, at), worker_id="w-1"),),
            outputs={"value": f"output of step {n}"},
        )
        for n in range(3)
    )
    return msgspec.structs.replace(
        base, state=base.state.to(StateType.RUNNING, at), task_run_list=runs
    )


async def _fill(servers: str, topic: str, count: int) -> int:
    """Write ``count`` running executions to partition 0; the bytes written."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})],
            timeout_ms=10_000,
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, transactional_id=f"{topic}-fill", linger_ms=5
    )
    encode = msgspec.json.Encoder().encode
    written = 0
    await producer.start()
    try:
        for start in range(0, count, 1000):
            async with producer.transaction():
                for index in range(start, min(start + 1000, count)):
                    execution = _execution(index)
                    value = encode(execution)
                    written += len(value)
                    await producer.send(topic, value, key=execution.id.encode(), partition=0)
    finally:
        await producer.stop()
    return written


async def _raw(servers: str, topic: str) -> tuple[float, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        consumer.assign([partition])
        started = time.perf_counter()
        end = (await consumer.end_offsets([partition]))[partition]
        values: dict[bytes, bytes] = {}
        while await consumer.position(partition) < end:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.value is not None:
                        values[record.key] = record.value
        return time.perf_counter() - started, len(values)
    finally:
        await consumer.stop()


async def _restore(servers: str, prefix: str, store: str) -> tuple[float, int]:
    from backends.kafka.settings import KafkaSettings
    from backends.kafka.state import ExecutionState

    with tempfile.TemporaryDirectory() as folder:
        settings = KafkaSettings(
            bootstrap_servers=servers,
            topic_prefix=prefix,
            partitions=1,
            state_store=store,
            state_dir=folder,
        )
        state = ExecutionState(settings)
        try:
            started = time.perf_counter()
            await state.assign([0])
            took = time.perf_counter() - started
            return took, await state.store.count(0)
        finally:
            await state.stop()


async def measure(servers: str, *, count: int = 10_000, repeat: int = 3) -> dict[str, Any]:
    """The figures of one run (seconds, and multiples of the raw consume)."""
    prefix = f"bench-restore-{secrets.token_hex(4)}."
    topic = f"{prefix}t.executions"
    written = await _fill(servers, topic, count)
    runs: dict[str, list[float]] = {"raw": [], "memory": [], "sqlite": []}
    held: dict[str, int] = {}
    for _ in range(repeat):
        # interleaved, so a slow moment of the shared machine hits each alike
        took, held["raw"] = await _raw(servers, topic)
        runs["raw"].append(took)
        for store in ("memory", "sqlite"):
            took, held[store] = await _restore(servers, prefix, store)
            runs[store].append(took)
    medians = {name: statistics.median(times) for name, times in runs.items()}
    return {
        "executions": count,
        "bytes": written,
        "held": held,
        "seconds": medians,
        "times_raw": {name: medians[name] / medians["raw"] for name in ("memory", "sqlite")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_restore", description=__doc__)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    servers = bootstrap_servers()
    if servers is None:
        print(f"not configured: set {BOOTSTRAP_VARIABLE} to a Kafka broker with transactions")
        return 2
    figures = asyncio.run(measure(servers, count=args.executions, repeat=args.repeat))
    seconds = figures["seconds"]
    print(
        f"restore of one partition of {figures['executions']} running executions"
        f" ({figures['bytes'] / 1e6:.1f} MB), median of {args.repeat}:"
    )
    print(f"  raw consume   {seconds['raw'] * 1e3:8.0f} ms")
    for store in ("memory", "sqlite"):
        print(
            f"  {store:<13} {seconds[store] * 1e3:8.0f} ms"
            f"  ({figures['times_raw'][store]:.2f}x raw, holds {figures['held'][store]})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
