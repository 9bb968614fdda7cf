"""The Kafka floor: one exactly-once hop on bare aiokafka clients.

A hop is what the executor's unit of work costs at the very least on Kafka: a
``read_committed`` consumer receives a record, and one producer transaction writes
the next record and the consumed offset (``send_offsets_to_transaction``), then
commits. The record written is the one the consumer receives next, so the time
between two receipts is one hop: consume, transactional produce, commit, and the
commit becoming visible to a ``read_committed`` reader. The chain starts from one
record written by a plain producer. The Kafka figures of issue 22 are multiples
of this hop, measured in the same run against the same broker.

It runs only when ``RUNTIME_BENCH_KAFKA_BOOTSTRAP_SERVERS`` names a broker
(``host:port``, comma-separated); otherwise the floor is reported as not measured.
A broker without transactions (Tansu) is reported as not measured, with the error.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import secrets
import statistics
import time
from typing import Any

from bench.model import Result, percentile
from bench.targets import FLOOR

BOOTSTRAP_VARIABLE = "RUNTIME_BENCH_KAFKA_BOOTSTRAP_SERVERS"
_PAYLOAD = b"x" * 200
#: a broker that answers does so well within this; one that does not is reported
_TIMEOUT_S = 15.0


def bootstrap_servers() -> str | None:
    return os.environ.get(BOOTSTRAP_VARIABLE) or None


async def unavailable() -> str | None:
    """Why the Kafka floor cannot be measured here, or None when it can."""
    servers = bootstrap_servers()
    if servers is None:
        return f"not configured: set {BOOTSTRAP_VARIABLE} to a Kafka broker (host:port)"
    if importlib.util.find_spec("aiokafka") is None:
        return "not available: aiokafka is not installed (pip install -e '.[kafka]')"
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.describe_cluster()
    except Exception as exc:
        return f"not available: no Kafka broker answers at {servers}: {exc!r}"
    finally:
        await admin.close()
    return None


async def floor_samples(
    servers: str, *, rounds: int, warmup: int
) -> tuple[list[float], dict[str, Any]]:
    """Seconds per hop for ``rounds`` hops after ``warmup`` ones, and the settings."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-floor-{secrets.token_hex(4)}"
    group = f"{topic}-group"
    partition = TopicPartition(topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, transactional_id=f"{topic}-tx", linger_ms=0
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    samples: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        # every client is stopped, even one whose start failed half-way
        stack.push_async_callback(admin.close)
        stack.push_async_callback(consumer.stop)
        stack.push_async_callback(producer.stop)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=10_000)
        stack.push_async_callback(admin.delete_topics, [topic])
        await producer.start()
        await consumer.start()
        consumer.assign([partition])
        async with producer.transaction():
            await producer.send(topic, _PAYLOAD, key=b"hop")
        received = time.perf_counter()
        for i in range(warmup + rounds + 1):
            record = await consumer.getone()
            now = time.perf_counter()
            if i > warmup:
                samples.append(now - received)
            received = now
            async with producer.transaction():
                await producer.send(topic, record.value, key=record.key)
                await producer.send_offsets_to_transaction({partition: record.offset + 1}, group)
    settings = {
        "bootstrap_servers": servers,
        "driver": "aiokafka",
        "aiokafka": importlib.metadata.version("aiokafka"),
        "isolation_level": "read_committed",
        "acks": "all",
        "partitions": 1,
    }
    return samples, settings


async def floor(*, rounds: int = 500, warmup: int = 50) -> Result:
    """The Kafka floor as a harness result (skipped, with the reason, when it cannot run)."""
    why = await unavailable()
    if why is not None:
        return Result(measure=FLOOR, backend="kafka", skipped=why)
    servers = bootstrap_servers()
    assert servers is not None
    from aiokafka.errors import KafkaError

    try:
        samples, settings = await floor_samples(servers, rounds=rounds, warmup=warmup)
    except KafkaError as exc:
        # Tansu answers InitProducerId with an error: no transactions, no exactly-once hop
        return Result(
            measure=FLOOR,
            backend="kafka",
            skipped=f"not available: the broker at {servers} refused a transactional hop: {exc!r}",
        )
    hop_ms = statistics.median(samples) * 1e3
    p90 = percentile(samples, 0.90)
    assert p90 is not None, "no kafka floor samples"
    return Result(
        measure=FLOOR,
        backend="kafka",
        settings={"rounds": len(samples), **settings},
        figures={"hop_ms": hop_ms, "hop_p90_ms": p90 * 1e3, "hops_per_s": 1e3 / hop_ms},
        floor_ms=hop_ms,
    )
