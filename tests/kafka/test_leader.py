"""The leader lock on Kafka between independent clients (each its own connections,
as separate processes would have), on both brokers: it needs neither transactions
(Tansu has none) nor the broker expiring a dead group member (noida-db does not)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from backends.kafka.leader import KafkaLeader
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import BrokerProcess
from backends.testing.clock import ManualClock
from tests.kafka.helpers import on_brokers

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


@pytest.mark.parametrize("broker", on_brokers(), indirect=True)
async def test_a_silent_leader_loses_the_lock_to_the_standby_and_a_newcomer_agrees(
    broker: BrokerProcess,
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"t{secrets.token_hex(4)}."
    )
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    a, b = KafkaLeader(settings, clock), KafkaLeader(settings, clock)
    try:
        assert await a.acquire("scheduler", "a", ttl_seconds=10) is True
        assert await b.acquire("scheduler", "b", ttl_seconds=10) is False
        clock.advance(6)
        assert await a.acquire("scheduler", "a", ttl_seconds=10) is True  # renewed to 16
        clock.advance(6)
        assert await b.acquire("scheduler", "b", ttl_seconds=10) is False
        # a dies here: it stops renewing, nothing tells the broker
        await a.stop()
        clock.advance(5)
        assert await b.acquire("scheduler", "b", ttl_seconds=10) is True
        # a process started now replays the whole log to the same verdicts
        late = KafkaLeader(settings, clock)
        try:
            assert await late.acquire("scheduler", "late", ttl_seconds=10) is False
            await b.release("scheduler", "b")
            assert await late.acquire("scheduler", "late", ttl_seconds=10) is True
            assert await b.acquire("scheduler", "b", ttl_seconds=10) is False
            clock.advance(11)
            assert await b.acquire("scheduler", "b", ttl_seconds=10) is True
        finally:
            await late.stop()
    finally:
        await a.stop()
        await b.stop()
