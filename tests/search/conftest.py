"""One noida-db (Kafka and Elasticsearch) per test module; each test names its own
topics and indices (``tests.search.helpers.names``)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.elasticsearch.testing import SearchServer, running_search_server
from backends.kafka.testing import BrokerUnavailable
from tests.requirements import missing


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchServer]:
    data: Path = tmp_path_factory.mktemp("noida-es")
    try:
        with running_search_server(data_dir=data) as server:
            yield server
    except BrokerUnavailable as exc:
        missing(str(exc))
