"""``backend.exactly_once: false``: a plain producer and offset commits after the
outputs are acknowledged, so the backend runs on a broker without transactions
(Tansu). What it keeps: a batch whose handler raised comes back, one that returned
does not, and its outputs are there. What it gives up (see docs/architecture.md):
a crash between the outputs and the commit hands the batch out again, which the
engine's dedup absorbs."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import BROKERS, BrokerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

IN, OUT = "in", "out"


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
async def test_at_least_once_commits_only_what_was_handled(broker: BrokerProcess) -> None:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"a{secrets.token_hex(4)}.",
        partitions=1,
        exactly_once=False,
    )
    first = KafkaBackend(settings)
    await first.start()
    try:
        await first.queues.publish(IN, [("e1", b"handled"), ("e2", b"failed")])
        inbox = first.inbox(IN, "executor", lease_seconds=30)

        async def fail() -> None:
            async with inbox.batch(1) as batch:
                assert [m.payload for m in batch.messages] == [b"failed"]
                raise ZeroDivisionError

        async with asyncio.timeout(60):
            async with inbox.batch(1) as batch:
                assert [m.payload for m in batch.messages] == [b"handled"]
                await batch.stores.queues.publish(OUT, [("e1", b"out")])
            with pytest.raises(ZeroDivisionError):
                await fail()
    finally:
        await first.stop()
    second = KafkaBackend(settings)
    await second.start()
    try:
        async with asyncio.timeout(60):
            again = await second.queues.claim(IN, "executor", limit=10, lease_seconds=30)
            assert [m.payload for m in again] == [b"failed"]
            outputs = await second.queues.claim(OUT, "reader", limit=10, lease_seconds=30)
            assert [m.payload for m in outputs] == [b"out"]
    finally:
        await second.stop()
