"""Fixtures for the Kafka tests: a fresh test broker per test.

Parametrize with ``@pytest.mark.parametrize("broker", on_brokers(...), indirect=True)``
(``tests.kafka.helpers``) to run a test on each broker kind, marking what a broker lacks.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.kafka.testing import BROKERS, BrokerProcess, running_broker


@pytest.fixture
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerProcess]:
    """A fresh broker (of the kind in ``request.param``, default noida-db) on a free port."""
    kind = getattr(request, "param", BROKERS[0])
    with running_broker(kind, data_dir=tmp_path / kind) as started:
        yield started
