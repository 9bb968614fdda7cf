"""A partition's producer revoked while a unit of work is inside its transaction
(a rebalance, e.g. after a broker restart) stops only once that unit is done."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from backends.kafka.members import Member
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import BrokerProcess
from backends.kafka.topics import ensure_topics, queue_spec, queue_topic

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def _ends(settings: KafkaSettings, tp: TopicPartition, isolation: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.servers, isolation_level=isolation)
    await consumer.start()
    try:
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_a_producer_revoked_inside_its_transaction_ends_it_first(
    broker: BrokerProcess,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{secrets.token_hex(4)}.",
        partitions=1,
    )
    await ensure_topics(settings, [queue_spec(settings, "out")])
    tp = TopicPartition(queue_topic(settings, "out"), 0)
    member = Member(settings, "in", lambda: datetime.now(UTC))
    try:
        async with asyncio.timeout(30):
            async with member.producer_in_use(0) as producer, producer.transaction():
                await producer.send(tp.topic, b"written", partition=0)
                await member.discard_producer(0)  # what a revocation does
            # committed, not left open: read_committed readers see past it
            committed = await _ends(settings, tp, "read_committed")
            assert committed == await _ends(settings, tp, "read_uncommitted")
            assert committed > 0
            # and the next unit of work gets a new producer
            async with member.producer_in_use(0) as again:
                assert again is not producer
    finally:
        await member.stop()
