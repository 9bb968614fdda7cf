"""Task metrics: a script's ``::{"metrics": [...]}::`` lines stored with its task run
and served at Kestra's /api/v1/metrics paths (by execution, names, tasks, aggregates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, api, flow

ROWS = (
    '{"name": "rows", "type": "counter", "value": 3, "tags": {"table": "a"}}, '
    '{"name": "load", "type": "timer", "value": 0.25}'
)
BAD = '{"name": "bad", "type": "gauge", "value": 1}'
MEASURED = flow(
    "measured",
    f"""  - id: count
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - 'echo ''::{{"metrics": [{ROWS}]}}::'''
      - 'echo ''::{{"metrics": [{BAD}]}}::'''
  - id: quiet
    type: io.kestra.plugin.core.log.Log
    message: nothing measured
""",
)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_script_metrics_are_stored_and_served(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(MEASURED)
        ids = []
        for _ in range(2):
            done = await a.ended((await a.execute("measured"))["id"])
            assert done["state"]["current"] == "SUCCESS", done
            ids.append(done["id"])
        first = ids[0]

        page = (await a.client.get(f"/api/v1/metrics/{first}", params={"sort": "name"})).json()
        assert page["total"] == 2
        by_name = {m["name"]: m for m in page["results"]}
        assert [m["name"] for m in page["results"]] == ["load", "rows"]
        rows = by_name["rows"]
        assert (rows["type"], rows["value"], rows["tags"]) == ("counter", 3.0, {"table": "a"})
        assert (rows["namespace"], rows["flowId"], rows["taskId"]) == (NS, "measured", "count")
        assert rows["executionId"] == first
        assert rows["taskRunId"]
        assert (by_name["load"]["type"], by_name["load"]["value"]) == ("timer", 0.25)
        # filters, paging and the tenant form
        only = await a.client.get(f"/api/v1/main/metrics/{first}", params={"taskId": "quiet"})
        assert only.json() == {"results": [], "total": 0}
        one = (await a.client.get(f"/api/v1/metrics/{first}", params={"size": 1})).json()
        assert (len(one["results"]), one["total"]) == (1, 2)
        run = await a.client.get(
            f"/api/v1/metrics/{first}", params={"taskRunId": rows["taskRunId"]}
        )
        assert run.json()["total"] == 2
        # the metric of an unknown type is refused with a warning, the rest kept
        logs = (await a.client.get(f"/api/v1/logs/{first}")).json()
        assert any("'bad'" in line["message"] and line["level"] == "WARN" for line in logs)

        names = await a.client.get(f"/api/v1/metrics/names/{NS}/measured")
        assert names.json() == ["load", "rows"]
        assert (await a.client.get(f"/api/v1/metrics/names/{NS}/measured/quiet")).json() == []
        assert (await a.client.get(f"/api/v1/metrics/tasks/{NS}/measured")).json() == ["count"]

        total = (await a.client.get(f"/api/v1/metrics/aggregates/{NS}/measured/rows")).json()
        assert total["groupBy"] == "day"
        assert sum(b["value"] for b in total["aggregations"]) == 6.0
        hourly = await a.client.get(
            f"/api/v1/metrics/aggregates/{NS}/measured/count/load",
            params={"aggregation": "max", "startDate": done["state"]["startDate"]},
        )
        body = hourly.json()
        assert body["groupBy"] == "hour"
        assert [b["value"] for b in body["aggregations"]] == [0.25]
        wrong = await a.client.get(
            f"/api/v1/metrics/aggregates/{NS}/measured/rows", params={"aggregation": "median"}
        )
        assert wrong.status_code == 400
        assert "median" in wrong.json()["message"]
        missing = await a.client.get("/api/v1/metrics/no-such-execution")
        assert missing.status_code == 404
