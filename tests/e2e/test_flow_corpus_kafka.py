"""The same end-to-end corpus, on the Kafka backend instead of the memory backend.

Every flow runs on a noida-db broker this module starts (the broker with
transactions; Tansu has none, see tests/kafka), each under a topic prefix of its
own, with the executor, the worker and the scheduler in one process as
``runtime run --all`` runs them. Two partitions per topic, so an execution's events
and the others' are spread as in production.

Without asyncio's debug mode (on for every other test, ``tests/conftest.py``): it
records a stack for every future created, and aiokafka creates many per request,
so a task-to-task hop here took ~250-300 ms with it against ~35 ms without, past
the corpus's timing-bound flows (kv_store's key lives 0.2 s). The Kafka backend's
own tests (``tests/kafka``, the conformance suite) keep debug mode on.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import NOIDA_DB, BrokerProcess, running_broker
from services import flow_test
from tests.e2e.helpers import run_in_process
from tests.e2e.test_flow_corpus import (
    CASES,
    FLOWS,
    SUBFLOWS,
    _inputs,
    _params,
    assert_case,
    http_base_url,  # noqa: F401 - a fixture the inputs use
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def noida_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(NOIDA_DB, data_dir=tmp_path_factory.mktemp("noida-db")) as broker:
        yield broker


@pytest.fixture
def on_kafka(noida_db: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    settings = KafkaSettings(
        bootstrap_servers=noida_db.bootstrap_servers,
        topic_prefix=f"e2e{secrets.token_hex(4)}.",
        partitions=2,
    )
    monkeypatch.setattr(flow_test, "BACKEND_FACTORY", lambda: KafkaBackend(settings))
    # read by each new event loop (asyncio.run in `flow test`); see the module doc
    monkeypatch.delenv("PYTHONASYNCIODEBUG", raising=False)
    return settings


@pytest.mark.parametrize("stem", list(_params()))
def test_flow_on_kafka(
    stem: str, request: pytest.FixtureRequest, tmp_path: Path, on_kafka: KafkaSettings
) -> None:
    case = CASES[stem]
    run = run_in_process(
        FLOWS / f"{stem}.yml",
        _inputs(case, request, tmp_path),
        SUBFLOWS if case.subflows else None,
    )
    assert_case(run, case)
    # ran on Kafka, not on the memory backend `flow test` falls back to
    assert stored(on_kafka, run.execution["id"]), "the execution is not on Kafka"


def stored(settings: KafkaSettings, execution_id: str) -> bool:
    async def get() -> bool:
        backend = KafkaBackend(settings)
        await backend.start()
        try:
            return await backend.executions.get(execution_id) is not None
        finally:
            await backend.stop()

    return asyncio.run(get())
