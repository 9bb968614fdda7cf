"""Two schedulers on Kafka, each its own `runtime run scheduler` process: kill -9 of
the leader; the standby fires the next ticks, no date twice, none skipped.

On noida-db: the scheduler writes its trigger state and executions in transactions,
which Tansu lacks. The leader lock itself needs neither transactions nor the broker
expiring a dead member (tests/kafka/test_leader.py runs it on both brokers): the
killed leader's lease runs out after its TTL.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import NOIDA_DB, running_broker
from tests.faults.standby import standby_takes_over
from tests.faults.test_postgres_faults import processes

pytestmark = pytest.mark.slow


@pytest.mark.asyncio
async def test_a_standby_scheduler_takes_over_without_double_fires(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with running_broker(NOIDA_DB, data_dir=tmp_path / "noida-db") as broker:
        settings = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=f"sched{secrets.token_hex(4)}.",
            partitions=2,
        )
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("RUNTIME_") and name != "PYTHONASYNCIODEBUG"
        }
        env.update(
            RUNTIME_BACKEND_TYPE="kafka",
            RUNTIME_BACKEND_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
            RUNTIME_BACKEND_TOPIC_PREFIX=settings.topic_prefix,
            RUNTIME_BACKEND_PARTITIONS=str(settings.partitions),
            RUNTIME_DATA_DIR=str(data),
            RUNTIME_SCHEDULER_LEADER_TTL_SECONDS="3",
            RUNTIME_SCHEDULER_TICK_SECONDS="0.5",
        )
        backend = KafkaBackend(settings)
        await backend.start()
        try:
            async with asyncio.timeout(120), processes(tmp_path, env) as group:
                await standby_takes_over(group, backend)
        finally:
            await backend.stop()
