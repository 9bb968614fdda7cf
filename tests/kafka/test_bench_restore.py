"""bench/kafka_restore.py on noida-db, small: both stores restore every running
execution written, and the figures are multiples of a raw consume of the same run."""

import pytest

from backends.kafka.testing import BrokerProcess
from bench import kafka_restore

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def test_restore_bench_reports_each_store_against_the_raw_consume(
    broker: BrokerProcess,
) -> None:
    figures = await kafka_restore.measure(broker.bootstrap_servers, count=300, repeat=1)
    assert figures["held"] == {"raw": 300, "memory": 300, "sqlite": 300}
    assert figures["bytes"] > 300 * 500
    for store in ("memory", "sqlite"):
        assert figures["times_raw"][store] == pytest.approx(
            figures["seconds"][store] / figures["seconds"]["raw"]
        )
        assert figures["seconds"][store] > 0
