"""schemathesis over the OpenAPI document on the high-availability deployment (Kafka,
the indexer, the webserver reading Elasticsearch; noida-db): whatever a client
sends, no 5xx and no response that breaks the documented schema. The same fuzzing
as tests/webserver/test_openapi.py, on this deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.elasticsearch.testing import SearchServer
from backends.storage_local import LocalStorage
from runtime.config import Config
from services.standalone import Server
from tests.search.helpers import ha_config, names
from tests.webserver.test_openapi import CHECKS, Running, fuzz_every_operation, seeded_schema


@pytest.fixture(scope="module")
def ha_schema(
    search_server: SearchServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    kafka, search = names(search_server)

    def build(tmp: Path, config: Config) -> Server:
        return Server(
            ha_config(config, kafka, search),
            components=("executor", "worker", "indexer", "webserver"),
            storage=LocalStorage(tmp / "storage"),
            watch=False,
        )

    yield from seeded_schema(Running(tmp_path_factory.mktemp("openapi-ha"), build), 60.0)


@pytest.mark.slow
# The server runs in another thread of this process, and the Kafka client there draws
# from the `random` module (broker choice, backoff jitter) while hypothesis generates
# cases; hypothesis takes that for a strategy using `random` and warns. Reproducibility
# of the cases is not at stake: the server's draws do not feed them.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.timeout(600)
def test_api_conforms_to_its_openapi_document_on_kafka_and_elasticsearch(ha_schema: Any) -> None:
    fuzz_every_operation(ha_schema, CHECKS)
