"""/api/v1/logs, /api/v1/triggers, /api/v1/namespaces (and KV), /api/v1/stats and the
health checks, on SQLite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.webserver.helpers import NS, RETURN, api, flow, sse_events

pytestmark = pytest.mark.asyncio

LOGS = flow(
    "logs",
    """  - id: first
    type: io.kestra.plugin.core.log.Log
    message: hello from first
  - id: second
    type: io.kestra.plugin.core.log.Log
    level: WARN
    message: careful in second
""",
)
SCHEDULED = flow(
    "scheduled",
    RETURN,
    """triggers:
  - id: daily
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "0 9 * * *"
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: k
""",
)


async def test_logs_of_an_execution_filtered_by_task_and_level(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(LOGS)
        ex = await a.execute("logs", params={"wait": "true"})
        url = f"/api/v1/logs/{ex['id']}"
        every = (await a.client.get(url)).json()
        messages = [e["message"] for e in every]
        assert "hello from first" in messages
        assert "careful in second" in messages
        assert all(e["executionId"] == ex["id"] for e in every)
        by_task = (await a.client.get(url, params={"taskId": "first"})).json()
        assert {e["taskId"] for e in by_task} == {"first"}
        warnings = (await a.client.get(url, params={"minLevel": "WARN"})).json()
        assert [e["message"] for e in warnings] == ["careful in second"]
        assert warnings[0]["level"] == "WARN"
        run_id = by_task[0]["taskRunId"]
        by_run = (await a.client.get(url, params={"taskRunId": run_id})).json()
        assert {e["taskRunId"] for e in by_run} == {run_id}
        first_attempt = (await a.client.get(url, params={"attempt": 1})).json()
        assert len(first_attempt) == len([e for e in every if e["attemptNumber"] == 1]) > 0
        assert (await a.client.get(url, params={"attempt": 7})).json() == []
        bad = await a.client.get(url, params={"minLevel": "LOUD"})
        assert bad.status_code == 400
        assert (await a.client.get("/api/v1/logs/nope")).status_code == 404


async def test_log_download_and_follow(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(LOGS)
        ex = await a.execute("logs")
        followed = await a.client.get(f"/api/v1/logs/{ex['id']}/follow")
        assert followed.status_code == 200
        events = [json.loads(e["data"]) for e in sse_events(followed.text)]
        stored = (await a.client.get(f"/api/v1/logs/{ex['id']}")).json()
        assert [e["index"] for e in events] == [e["index"] for e in stored]
        assert "careful in second" in [e["message"] for e in events]
        resumed = await a.client.get(
            f"/api/v1/logs/{ex['id']}/follow",
            headers={"last-event-id": str(stored[0]["index"])},
        )
        rest = [json.loads(e["data"])["index"] for e in sse_events(resumed.text)]
        assert rest == [e["index"] for e in stored[1:]]
        only_second = await a.client.get(
            f"/api/v1/logs/{ex['id']}/follow", params={"taskId": "second"}
        )
        second = [json.loads(e["data"])["message"] for e in sse_events(only_second.text)]
        assert second == ["careful in second"]
        download = await a.client.get(f"/api/v1/logs/{ex['id']}/download")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/plain")
        lines = download.text.splitlines()
        assert len(lines) == len(stored)
        assert any("WARN" in line and "[second] careful in second" in line for line in lines)
        assert (await a.client.get("/api/v1/logs/nope/download")).status_code == 404
        assert (await a.client.get("/api/v1/logs/nope/follow")).status_code == 404


async def test_triggers_with_their_next_date_disable_and_enable(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(SCHEDULED)
        listed = await a.client.get("/api/v1/triggers/search", params={"namespace": NS})
        assert listed.status_code == 200
        items = {i["triggerContext"]["triggerId"]: i for i in listed.json()["results"]}
        assert set(items) == {"daily", "hook"}
        next_date = datetime.fromisoformat(items["daily"]["triggerContext"]["nextExecutionDate"])
        assert (next_date.hour, next_date.minute) == (9, 0)
        assert next_date > datetime.now(UTC)
        assert items["hook"]["triggerContext"]["nextExecutionDate"] is None
        assert items["daily"]["abstractTrigger"]["cron"] == "0 9 * * *"
        body = {"namespace": NS, "flowId": "scheduled", "triggerId": "daily", "disabled": True}
        disabled = await a.client.put("/api/v1/triggers", json=body)
        assert disabled.status_code == 200
        context = disabled.json()["triggerContext"]
        assert (context["disabled"], context["nextExecutionDate"]) == (True, None)
        many = {
            "triggers": [{"namespace": NS, "flowId": "scheduled", "triggerId": "daily"}],
            "disabled": False,
        }
        enabled = await a.client.post("/api/v1/triggers/set-disabled/by-triggers", json=many)
        assert enabled.json() == {"count": 1}
        again = await a.client.get("/api/v1/triggers/search", params={"q": "daily"})
        assert again.json()["results"][0]["triggerContext"]["disabled"] is False
        unknown = await a.client.put("/api/v1/triggers", json={**body, "triggerId": "nope"})
        assert unknown.status_code == 404
        no_flow = await a.client.put("/api/v1/triggers", json={**body, "flowId": "nope"})
        assert no_flow.status_code == 404
        assert (await a.client.put("/api/v1/triggers", json={"x": 1})).status_code == 400


async def test_backfill_creates_one_execution_per_past_date(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(SCHEDULED)
        start = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0)
        end = start + timedelta(days=2)
        body = {
            "namespace": NS,
            "flowId": "scheduled",
            "triggerId": "daily",
            "backfill": {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "labels": {"backfill": "yes"},
            },
        }
        response = await a.client.put("/api/v1/triggers", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["backfill"] == {"executions": 2}
        again = await a.client.put("/api/v1/triggers", json=body)
        assert again.json()["backfill"] == {"executions": 0}
        found = await a.client.get("/api/v1/executions/search", params={"labels": "backfill:yes"})
        assert found.json()["total"] == 2
        for execution in found.json()["results"]:
            assert (await a.ended(execution["id"]))["state"]["current"] == "SUCCESS"
        hook = await a.client.put("/api/v1/triggers", json={**body, "triggerId": "hook"})
        assert hook.status_code == 422
        backwards = {**body["backfill"], "start": end.isoformat(), "end": start.isoformat()}
        reversed_range = await a.client.put(
            "/api/v1/triggers", json={**body, "backfill": backwards}
        )
        assert reversed_range.status_code == 422
        huge = {**body["backfill"], "start": "2000-01-01T00:00:00Z"}
        too_many = await a.client.put("/api/v1/triggers", json={**body, "backfill": huge})
        assert too_many.status_code == 422
        assert "split the range" in too_many.json()["message"]
        year_one = {**body["backfill"], "start": "0001-01-01T00:00:00Z"}
        out_of_range = await a.client.put("/api/v1/triggers", json={**body, "backfill": year_one})
        assert out_of_range.status_code == 422


async def test_namespaces(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(flow("one", RETURN).replace(f"namespace: {NS}", "namespace: co.team.a"))
        listed = await a.client.get("/api/v1/namespaces/search")
        assert [n["id"] for n in listed.json()["results"]] == ["co", "co.team", "co.team.a"]
        found = await a.client.get("/api/v1/namespaces/search", params={"q": "TEAM", "size": 1})
        assert found.json()["total"] == 2
        assert [n["id"] for n in found.json()["results"]] == ["co.team"]
        assert (await a.client.get("/api/v1/namespaces/co.team")).json()["id"] == "co.team"
        assert (await a.client.get("/api/v1/namespaces/nope")).status_code == 404


async def test_kv_set_get_list_delete(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        base = f"/api/v1/namespaces/{NS}/kv"
        assert (await a.client.put(f"{base}/count", content="42")).status_code == 204
        assert (await a.client.put(f"{base}/name", content="Ada Lovelace")).status_code == 204
        assert (await a.client.put(f"{base}/conf", json={"a": [1, 2]})).status_code == 204
        short = await a.client.put(f"{base}/short", content='"x"', headers={"ttl": "PT1H"})
        assert short.status_code == 204
        assert (await a.client.get(f"{base}/count")).json() == {"type": "NUMBER", "value": 42}
        assert (await a.client.get(f"{base}/name")).json() == {
            "type": "STRING",
            "value": "Ada Lovelace",
        }
        assert (await a.client.get(f"{base}/conf")).json() == {
            "type": "JSON",
            "value": {"a": [1, 2]},
        }
        listed = (await a.client.get(base)).json()
        assert [e["key"] for e in listed] == ["conf", "count", "name", "short"]
        assert listed[3]["expirationDate"] is not None
        assert (await a.client.delete(f"{base}/count")).status_code == 204
        assert (await a.client.get(f"{base}/count")).status_code == 404
        assert (await a.client.delete(f"{base}/count")).status_code == 404
        bad_ttl = await a.client.put(f"{base}/x", content="1", headers={"ttl": "soon"})
        assert bad_ttl.status_code == 400
        assert "ttl" in bad_ttl.json()["message"]


async def test_daily_stats_count_every_state_of_every_day(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(flow("ok", RETURN))
        await a.deploy(flow("ko", "  - id: f\n    type: io.kestra.plugin.core.execution.Fail\n"))
        for flow_id in ("ok", "ok", "ko"):
            await a.execute(flow_id, params={"wait": "true"})
        today = datetime.now(UTC).date()
        body = {"startDate": f"{today - timedelta(days=2)}T00:00:00Z", "namespace": NS}
        response = await a.client.post("/api/v1/stats/executions/daily", json=body)
        assert response.status_code == 200
        days = response.json()
        assert [d["startDate"] for d in days] == [str(today - timedelta(days=i)) for i in (2, 1, 0)]
        assert days[-1]["executionCounts"]["SUCCESS"] == 2
        assert days[-1]["executionCounts"]["FAILED"] == 1
        assert sum(days[0]["executionCounts"].values()) == 0
        only_ko = await a.client.post(
            "/api/v1/stats/executions/daily", json={**body, "flowId": "ko"}
        )
        assert only_ko.json()[-1]["executionCounts"]["SUCCESS"] == 0
        default = await a.client.post("/api/v1/stats/executions/daily")
        assert len(default.json()) == 30
        backwards = {"startDate": "2024-02-01T00:00:00Z", "endDate": "2024-01-01T00:00:00Z"}
        assert (
            await a.client.post("/api/v1/stats/executions/daily", json=backwards)
        ).status_code == 422
        years = {"startDate": "2000-01-01T00:00:00Z"}
        too_long = await a.client.post("/api/v1/stats/executions/daily", json=years)
        assert too_long.status_code == 422
        year_one = {"endDate": "0001-01-01T00:00:00Z"}
        far = await a.client.post("/api/v1/stats/executions/daily", json=year_one)
        assert far.status_code == 422
        garbage = await a.client.post("/api/v1/stats/executions/daily", content=b"[1")
        assert garbage.status_code == 400


async def test_health_readiness_and_the_openapi_document(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        assert (await a.client.get("/health")).json() == {"status": "UP"}
        assert (await a.client.get("/health/ready")).json() == {"status": "UP"}
        document = (await a.client.get("/api/v1/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        assert "/api/v1/executions/webhook/{namespace}/{id}/{key}" in document["paths"]
        unknown = await a.client.get("/api/v1/nothing-here")
        assert unknown.status_code == 404
        assert unknown.json()["message"].startswith("no such endpoint")
        wrong_method = await a.client.patch("/api/v1/flows/search")
        assert wrong_method.status_code == 405


async def test_a_long_log_is_streamed_whole_across_pages(tmp_path: Path) -> None:
    """An execution's log has no bound: the list is streamed (no content-length, so
    never built whole in memory), across the store's pages of 1000, and stays JSON."""
    from runtime.messages import LogEntry

    async with api(tmp_path) as a:
        await a.deploy(LOGS)
        ex = await a.execute("logs", params={"wait": "true"})
        before = len((await a.client.get(f"/api/v1/logs/{ex['id']}")).json())
        at = datetime.now(UTC)
        await a.backend.logs.append(
            [
                LogEntry(
                    execution_id=ex["id"],
                    namespace=NS,
                    flow_id="logs",
                    timestamp=at,
                    level="INFO",
                    message=f"line {i} " + "x" * 100,
                )
                for i in range(2500)
            ]
        )
        response = await a.client.get(f"/api/v1/logs/{ex['id']}")
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert response.headers["content-type"] == "application/json"
        entries = response.json()
        assert len(entries) == before + 2500
        indexes = [e["index"] for e in entries]
        assert indexes == sorted(set(indexes))
        assert entries[-1]["message"].startswith("line 2499 ")
        # a filter that keeps nothing is still a JSON array
        assert (await a.client.get(f"/api/v1/logs/{ex['id']}", params={"taskId": "x"})).json() == []
