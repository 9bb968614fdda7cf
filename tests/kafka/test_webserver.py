"""The API on the Kafka backend (noida-db): what Kafka serves by itself — create,
get by id, follow, resume, kill, an execution's logs — and the lists, which read
the whole executions table in this process until the search store exists
(Elasticsearch, issue 14)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import NOIDA_DB, BrokerProcess, running_broker
from tests.webserver.helpers import api, sse_events
from tests.webserver.test_executions import PAUSE, SLEEP, TYPED

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


@pytest.fixture(scope="module")
def noida_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(NOIDA_DB, data_dir=tmp_path_factory.mktemp("noida-db")) as broker:
        yield broker


def _backend(broker: BrokerProcess) -> KafkaBackend:
    return KafkaBackend(
        KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=f"web{secrets.token_hex(4)}.",
            partitions=2,
        )
    )


async def test_create_get_follow_logs_and_search(tmp_path: Path, noida_db: BrokerProcess) -> None:
    async with api(tmp_path, backend=_backend(noida_db)) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        followed = await a.client.get(f"/api/v1/executions/{ex['id']}/follow")
        states = [json.loads(e["data"])["state"]["current"] for e in sse_events(followed.text)]
        assert states[0] == "CREATED"
        assert states[-1] == "SUCCESS"
        got = await a.client.get(f"/api/v1/executions/{ex['id']}")
        assert got.status_code == 200
        assert got.json()["taskRunList"][0]["outputs"]["value"] == "Ada x1"
        lines = (await a.client.get(f"/api/v1/logs/{ex['id']}")).json()
        assert [line["index"] for line in lines] == list(range(1, len(lines) + 1))
        assert "Flow started" in [line["message"] for line in lines]
        found = await a.client.get("/api/v1/executions/search", params={"flowId": "typed"})
        assert found.status_code == 200
        assert [e["id"] for e in found.json()["results"]] == [ex["id"]]
        assert (await a.client.get("/api/v1/executions/nope")).status_code == 404


async def test_resume_and_kill(tmp_path: Path, noida_db: BrokerProcess) -> None:
    async with api(tmp_path, backend=_backend(noida_db)) as a:
        await a.deploy(PAUSE)
        await a.deploy(SLEEP)
        paused = await a.execute("pause")
        await a.in_state(paused["id"], "PAUSED")
        resumed = await a.client.post(
            f"/api/v1/executions/{paused['id']}/resume", data={"ok": "true"}
        )
        assert resumed.status_code < 300, resumed.text
        assert (await a.ended(paused["id"]))["state"]["current"] == "SUCCESS"
        sleeping = await a.execute("sleep")
        await a.in_state(sleeping["id"], "RUNNING")
        killed = await a.client.delete(f"/api/v1/executions/{sleeping['id']}/kill")
        assert killed.status_code == 202
        assert (await a.ended(sleeping["id"]))["state"]["current"] == "KILLED"
