"""The backend conformance suite on the Kafka backend, on a noida-db broker this
module starts (one per module, a topic prefix per test).

Executions, flows, triggers and KV are global tables (``backends.kafka.tables``),
logs a topic keyed by execution id, the leader lock leases on a one-partition
topic. The queues run on one partition here: the suite checks the publication order
of unkeyed messages across a whole queue, which Kafka keeps per partition only (the
spread over partitions is tested in ``tests/kafka/test_backend.py``).
Tansu cannot run any of this: it has no transactional producer (see
``tests/kafka/test_backend.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import NOIDA_DB, BrokerProcess, running_broker
from backends.protocols import Backend, Clock
from backends.testing import BackendConformance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def noida_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(NOIDA_DB, data_dir=tmp_path_factory.mktemp("noida-db")) as broker:
        yield broker


class TestKafka(BackendConformance):
    @pytest.fixture(autouse=True)
    def _broker(self, noida_db: BrokerProcess) -> None:
        self.broker = noida_db

    async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
        settings = KafkaSettings(
            bootstrap_servers=self.broker.bootstrap_servers,
            topic_prefix=f"t{secrets.token_hex(4)}.",
            partitions=1,
        )
        backend: Backend = KafkaBackend(settings, clock=clock)  # type: ignore[assignment]
        return backend
