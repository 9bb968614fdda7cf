"""One more feature of real Kafka, checked on each test broker (as test_brokers.py):
the transaction coordinator aborts a transaction left open past its timeout."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from backends.kafka.testing import NOIDA_DB, TANSU, BrokerProcess
from tests.kafka.helpers import on_brokers
from tests.kafka.test_brokers import STEP, _consumer, _name, _producer, _topic

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


@pytest.mark.parametrize(
    "broker",
    on_brokers(
        {
            NOIDA_DB: "an open transaction is never timed out (transaction.timeout.ms):"
            " its partitions stay hidden from read_committed readers until a producer"
            " with its transactional.id starts again",
            TANSU: "InitProducerId answers UNKNOWN_SERVER_ERROR: no transactional producer",
        }
    ),
    indirect=True,
)
async def test_an_abandoned_transaction_is_aborted_after_its_timeout(
    broker: BrokerProcess,
) -> None:
    topic = await _topic(broker, 1)
    tp = TopicPartition(topic, 0)
    async with asyncio.timeout(STEP + 15):
        async with _producer(
            broker, transactional_id=_name("gone"), transaction_timeout_ms=1000
        ) as gone:
            await gone.begin_transaction()
            await gone.send_and_wait(topic, b"never committed")
            async with _consumer(broker, isolation_level="read_committed") as reader:
                reader.assign([tp])

                async def stable() -> int:
                    return int((await reader.end_offsets([tp]))[tp])

                assert await stable() == 0

                # Kafka aborts it within its timeout plus one check (every 10 s)
                for _ in range(30):
                    if await stable() > 0:
                        break
                    await asyncio.sleep(0.5)
                assert await stable() > 0, "the abandoned transaction still holds the partition"
