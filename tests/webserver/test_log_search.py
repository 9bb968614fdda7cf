"""``GET /api/v1/logs/search`` and the log deletions over plain HTTP, on SQLite: the
old query parameters and Kestra 1.x's ``filters[...]``, both path forms, and the 400s
that name the parameter at fault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.webserver.helpers import NS, api, flow

pytestmark = pytest.mark.asyncio

TALK = flow(
    "talk",
    """  - id: first
    type: io.kestra.plugin.core.log.Log
    message: hello from first
  - id: second
    type: io.kestra.plugin.core.log.Log
    level: WARN
    message: careful in second
""",
)
OTHER = TALK.replace(f"namespace: {NS}", f"namespace: {NS}.team").replace("id: talk", "id: other")


async def test_search_over_executions_filters_paging_and_both_paths(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TALK)
        await a.deploy(OTHER)
        talks = [await a.execute("talk", params={"wait": "true"}) for _ in range(2)]
        other = (
            await a.client.post(f"/api/v1/executions/{NS}.team/other", params={"wait": "true"})
        ).json()

        async def search(path: str = "/api/v1/logs/search", **params: str) -> dict:
            answer = await a.client.get(path, params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

        # three lines per execution: the executor's "Flow started", then its two tasks'
        every = await search()
        assert every["total"] == 9
        assert every["type"] == "OFFSET"
        stamps = [e["timestamp"] for e in every["results"]]
        assert stamps == sorted(stamps, reverse=True)
        assert every["results"][0]["executionId"] == other["id"]
        # the tenant path is the same search
        assert await search("/api/v1/main/logs/search") == every
        page2 = await search(page="2", size="4")
        assert (page2["total"], page2["results"]) == (9, every["results"][4:8])

        # a namespace takes those below it; filters[namespace][EQUALS] only itself
        assert (await search(namespace=NS))["total"] == 9
        assert (await search(namespace=f"{NS}.team"))["total"] == 3
        assert (await search(**{"filters[namespace][EQUALS]": NS}))["total"] == 6
        assert (await search(**{"filters[namespace][PREFIX]": NS}))["total"] == 9
        assert (await search(flowId="talk"))["total"] == 6
        assert (await search(executionId=talks[0]["id"]))["total"] == 3
        assert (await search(taskId="second", minLevel="WARN"))["total"] == 3
        assert (await search(minLevel="ERROR"))["total"] == 0
        warn = await search(**{"filters[level][EQUALS]": "WARNING"})
        assert {e["level"] for e in warn["results"]} == {"WARN"}
        assert warn["total"] == 3
        assert (await search(q="CAREFUL"))["total"] == 3
        assert (await search(**{"filters[q][CONTAINS]": "hello from"}))["total"] == 3
        assert (await search(triggerId="daily"))["total"] == 0
        # dates: from the past to the future holds everything, from the future nothing
        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await search(startDate=past, endDate=future))["total"] == 9
        assert (await search(startDate=future))["total"] == 0
        assert (await search(endDate=past))["total"] == 0
        assert (await search(**{"filters[startDate][GREATER_THAN]": future}))["total"] == 0
        assert (await search(timeRange="PT1H"))["total"] == 9


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"minLevel": "LOUD"}, "`minLevel`"),
        ({"filters[level][EQUALS]": "LOUD"}, "`level`"),
        ({"startDate": "yesterday"}, "`startDate`"),
        ({"endDate": "2024-13-45T00:00:00Z"}, "`endDate`"),
        ({"filters[startDate][GREATER_THAN]": "soon"}, "`startDate`"),
        ({"filters[labels][EQUALS][a]": "b"}, "`labels`"),
        ({"timeRange": "a while"}, "`timeRange`"),
        ({"sort": "message:asc"}, "`sort`"),
        ({"size": "0"}, "`size`"),
    ],
)
async def test_bad_search_parameters_are_400_naming_them(
    tmp_path: Path, params: dict[str, str], named: str
) -> None:
    async with api(tmp_path, components=()) as a:
        for path in ("/api/v1/logs/search", "/api/v1/main/logs/search"):
            answer = await a.client.get(path, params=params)
            assert answer.status_code == 400, answer.text
            assert named in answer.json()["message"]


async def test_delete_logs_of_an_execution_and_of_a_flow(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TALK)
        await a.deploy(OTHER)
        one, two = [await a.execute("talk", params={"wait": "true"}) for _ in range(2)]
        other = (
            await a.client.post(f"/api/v1/executions/{NS}.team/other", params={"wait": "true"})
        ).json()

        async def messages(execution_id: str) -> list[str]:
            """Oldest first; through the search, which needs no execution."""
            found = await a.client.get(
                "/api/v1/logs/search", params={"executionId": execution_id, "size": "100"}
            )
            assert found.status_code == 200, found.text
            return [e["message"] for e in reversed(found.json()["results"])]

        gone = await a.client.delete(f"/api/v1/logs/{one['id']}", params={"minLevel": "WARN"})
        assert gone.status_code == 204
        assert await messages(one["id"]) == ["Flow started", "hello from first"]
        gone = await a.client.delete(f"/api/v1/main/logs/{one['id']}", params={"taskId": "first"})
        assert gone.status_code == 204
        assert await messages(one["id"]) == ["Flow started"]
        assert len(await messages(two["id"])) == 3
        bad = await a.client.delete(f"/api/v1/logs/{two['id']}", params={"minLevel": "LOUD"})
        assert bad.status_code == 400
        assert "`minLevel`" in bad.json()["message"]
        assert len(await messages(two["id"])) == 3
        # deleteLogs=false: an execution's logs outlive it, and can be deleted after it
        kept = await a.client.delete(f"/api/v1/executions/{two['id']}?deleteLogs=false")
        assert kept.status_code == 204
        assert len(await messages(two["id"])) == 3
        assert (await a.client.delete(f"/api/v1/logs/{two['id']}")).status_code == 204
        # what is left of the flow's: the first execution's "Flow started"
        left = await a.client.get("/api/v1/logs/search", params={"flowId": "talk"})
        assert [e["message"] for e in left.json()["results"]] == ["Flow started"]
        # as Kestra, deleting an execution deletes its logs by default (in bulk too)
        three, four = [await a.execute("talk", params={"wait": "true"}) for _ in range(2)]
        assert (await a.client.delete(f"/api/v1/executions/{three['id']}")).status_code == 204
        assert await messages(three["id"]) == []
        bulk = await a.client.request("DELETE", "/api/v1/executions/by-ids", json=[four["id"]])
        assert bulk.status_code == 200, bulk.text
        assert await messages(four["id"]) == []

        # by flow: a trigger's own logs are not stored, so that deletes nothing
        hook = await a.client.delete(f"/api/v1/logs/{NS}.team/other", params={"triggerId": "t"})
        assert hook.status_code == 204
        assert len(await messages(other["id"])) == 3
        # the parent namespace's flow of the same id is another flow: nothing goes
        assert (await a.client.delete(f"/api/v1/logs/{NS}/other")).status_code == 204
        assert len(await messages(other["id"])) == 3
        assert (await a.client.delete(f"/api/v1/main/logs/{NS}.team/other")).status_code == 204
        assert await messages(other["id"]) == []
