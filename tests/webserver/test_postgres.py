"""The API's main paths again on PostgreSQL (a fresh schema per test): flows,
executions with inputs and files, search, follow, kill, webhook, logs, stats."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.webserver.helpers import NS, RETURN, api, flow, sse_events

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

TYPED = flow(
    "typed",
    RETURN.replace("inputs.name ?? 'world'", "inputs.name ~ ' ' ~ read(inputs.data)"),
    "labels:\n  team: data\ninputs:\n  - id: name\n    type: STRING\n"
    "  - id: data\n    type: FILE\n    required: false\n",
)
HOOK = flow(
    "hook",
    "  - id: echo\n    type: io.kestra.plugin.core.debug.Return\n"
    '    format: "{{ trigger.body.n }}"\n',
    "triggers:\n  - id: in\n    type: io.kestra.plugin.core.trigger.Webhook\n    key: k\n",
)
SLEEP = flow(
    "sleep", "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT60S\n"
)


async def test_flows_and_executions(tmp_path: Path) -> None:
    async with api(tmp_path, kind="postgres") as a:
        created = await a.deploy(TYPED)
        assert created["revision"] == 1
        search = await a.client.get("/api/v1/flows/search", params={"labels": "team:data"})
        assert [f["id"] for f in search.json()["results"]] == ["typed"]
        invalid = await a.client.post(f"/api/v1/executions/{NS}/typed", data={})
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["input"] == "name"
        response = await a.client.post(
            f"/api/v1/executions/{NS}/typed?wait=true",
            data={"name": "Ada"},
            files={"data": ("d.txt", b"and a file")},
        )
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["taskRunList"][0]["outputs"] == {"value": "Ada and a file"}
        found = await a.client.get(
            "/api/v1/executions/search", params={"namespace": NS, "state": "SUCCESS"}
        )
        assert [e["id"] for e in found.json()["results"]] == [done["id"]]
        followed = sse_events((await a.client.get(f"/api/v1/executions/{done['id']}/follow")).text)
        states = [json.loads(e["data"])["state"]["current"] for e in followed]
        assert states == [h["state"] for h in done["state"]["histories"]]
        logs = await a.client.get(f"/api/v1/logs/{done['id']}")
        assert logs.status_code == 200
        today = datetime.now(UTC).date().isoformat()
        stats = await a.client.post(
            "/api/v1/stats/executions/daily", json={"startDate": f"{today}T00:00:00Z"}
        )
        assert stats.json()[-1]["executionCounts"]["SUCCESS"] == 1
        assert (await a.client.get("/api/v1/executions/nope")).status_code == 404
        assert (await a.client.delete(f"/api/v1/executions/{done['id']}")).status_code == 204


async def test_kill_and_webhook(tmp_path: Path) -> None:
    async with api(tmp_path, kind="postgres") as a:
        await a.deploy(SLEEP)
        await a.deploy(HOOK)
        ex = await a.execute("sleep")
        await a.in_state(ex["id"], "RUNNING")
        assert (await a.client.delete(f"/api/v1/executions/{ex['id']}/kill")).status_code == 202
        assert (await a.ended(ex["id"]))["state"]["current"] == "KILLED"
        assert (await a.client.delete(f"/api/v1/executions/{ex['id']}/kill")).status_code == 409
        hooked = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/k", json={"n": 5})
        assert hooked.status_code == 200
        assert (await a.ended(hooked.json()["id"]))["taskRunList"][0]["outputs"] == {"value": "5"}
        wrong = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/x", json={})
        assert wrong.status_code == 404
        kv = f"/api/v1/namespaces/{NS}/kv/k"
        assert (await a.client.put(kv, content="[1, 2]")).status_code == 204
        assert (await a.client.get(kv)).json() == {"type": "JSON", "value": [1, 2]}


async def test_a_nul_character_is_a_400_not_a_database_error(tmp_path: Path) -> None:
    from tests.webserver.test_hostile_requests import HOOK as HOOK_K
    from tests.webserver.test_hostile_requests import nul_refusals

    async with api(tmp_path, kind="postgres") as a:
        await a.deploy(HOOK_K)
        await nul_refusals(a)
