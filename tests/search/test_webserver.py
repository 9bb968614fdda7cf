"""The API on the high-availability deployment: Kafka (executor, worker, indexer
running) with the webserver's lists, searches and stats in Elasticsearch, both on
noida-db. Searches are as fresh as the indexer's lag, so they are polled; reads by
id are not (read your writes). Every endpoint family that reads the search store,
its success and its error answers, and the 503 while the store is down."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backends.elasticsearch.testing import SearchServer
from tests.search.helpers import ha_api, until
from tests.webserver.helpers import NS, RETURN, YAML, Api, flow

pytestmark = pytest.mark.asyncio

LOGGED = flow(
    "logged",
    "  - id: say\n    type: io.kestra.plugin.core.log.Log\n"
    '    message: "hello {{ inputs.name }}"\n'
    "  - id: warn\n    type: io.kestra.plugin.core.log.Log\n"
    "    level: WARN\n    message: careful now\n",
    "labels:\n  team: data\ninputs:\n  - id: name\n    type: STRING\n    defaults: Ada\n",
)
SLEEP = flow(
    "sleepy", "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT60S\n"
)
SCHEDULED = flow(
    "scheduled",
    RETURN,
    "triggers:\n  - id: daily\n    type: io.kestra.plugin.core.trigger.Schedule\n"
    '    cron: "0 9 * * *"\n',
)


async def eventually(a: Api, path: str, check: Any, *, within: float = 30.0, **params: Any) -> Any:
    """GET ``path`` until ``check(body)`` holds: the body."""
    found: Any = {}

    async def holds() -> bool:
        nonlocal found
        response = await a.client.get(path, params=params)
        assert response.status_code == 200, response.text
        found = response.json()
        return bool(check(found))

    await until(holds, within, f"GET {path} {params}")
    return found


def ids(body: Any) -> list[str]:
    return [e["id"] for e in body["results"]]


async def test_flows_are_listed_and_searched_from_the_index(
    search_server: SearchServer, tmp_path: Path
) -> None:
    async with ha_api(search_server, tmp_path) as a:
        await a.deploy(LOGGED)
        await a.deploy(SLEEP)
        await a.deploy(SCHEDULED)
        # read by id at once, from the primary
        assert (await a.client.get(f"/api/v1/flows/{NS}/logged")).status_code == 200
        found = await eventually(a, "/api/v1/flows/search", lambda b: b["total"] == 3, namespace=NS)
        assert sorted(ids(found)) == ["logged", "scheduled", "sleepy"]
        labelled = await a.client.get("/api/v1/flows/search", params={"labels": "team:data"})
        assert ids(labelled.json()) == ["logged"]
        text = await a.client.get("/api/v1/flows/search", params={"q": "SLEEP"})
        assert ids(text.json()) == ["sleepy"]
        listed = await a.client.get(f"/api/v1/flows/{NS}")
        assert sorted(f["id"] for f in listed.json()) == ["logged", "scheduled", "sleepy"]
        namespaces = await a.client.get("/api/v1/flows/distinct-namespaces")
        assert NS in namespaces.json()
        await a.client.put(
            f"/api/v1/flows/{NS}/sleepy", content=SLEEP + "description: two\n", headers=YAML
        )
        revisions = await eventually(
            a, f"/api/v1/flows/{NS}/sleepy/revisions", lambda b: len(b) == 2
        )
        assert [r["revision"] for r in revisions] == [1, 2]
        assert (await a.client.get(f"/api/v1/flows/{NS}/nope/revisions")).status_code == 404
        triggers = await eventually(
            a, "/api/v1/triggers/search", lambda b: b["total"] >= 1, namespace=NS
        )
        found_triggers = [t["triggerContext"]["triggerId"] for t in triggers["results"]]
        assert found_triggers == ["daily"]
        bad_sort = await a.client.get("/api/v1/flows/search", params={"sort": "x:up"})
        assert bad_sort.status_code == 400
        assert (await a.client.delete(f"/api/v1/flows/{NS}/sleepy")).status_code == 204
        await eventually(a, "/api/v1/flows/search", lambda b: b["total"] == 2, namespace=NS)


async def test_executions_logs_and_stats(search_server: SearchServer, tmp_path: Path) -> None:
    async with ha_api(search_server, tmp_path) as a:
        await a.deploy(LOGGED)
        await a.deploy(SLEEP)
        runs = [await a.execute("logged", data={"name": f"n{n}"}) for n in range(3)]
        # read your writes: by id at once, before the indexer has seen it
        for run in runs:
            assert (await a.client.get(f"/api/v1/executions/{run['id']}")).status_code == 200
        for run in runs:
            await a.ended(run["id"], within=60)
        started = time.monotonic()
        found = await eventually(
            a,
            "/api/v1/executions/search",
            lambda b: b["total"] == 3,
            namespace=NS,
            state="SUCCESS",
        )
        lag = time.monotonic() - started
        assert sorted(ids(found)) == sorted(r["id"] for r in runs)
        by_label = await a.client.get(
            "/api/v1/executions/search", params={"labels": "team:data", "sort": "id:asc"}
        )
        assert ids(by_label.json()) == sorted(r["id"] for r in runs)
        page = await a.client.get(
            "/api/v1/executions/search", params={"size": 2, "page": 2, "sort": "id:asc"}
        )
        assert ids(page.json()) == sorted(r["id"] for r in runs)[2:]
        assert page.json()["total"] == 3
        text = await a.client.get("/api/v1/executions/search", params={"q": runs[0]["id"][:12]})
        assert runs[0]["id"] in ids(text.json())
        flow_runs = await a.client.get(
            "/api/v1/executions", params={"namespace": NS, "flowId": "logged"}
        )
        assert flow_runs.json()["total"] == 3
        today = datetime.now(UTC).date().isoformat()
        stats = await a.client.post(
            "/api/v1/stats/executions/daily", json={"startDate": f"{today}T00:00:00Z"}
        )
        assert stats.status_code == 200
        assert stats.json()[-1]["executionCounts"]["SUCCESS"] == 3

        # one execution's logs: from the primary at once; searches from the index
        one = runs[0]["id"]
        lines = await a.client.get(f"/api/v1/logs/{one}")
        messages = [line["message"] for line in lines.json()]
        assert messages[-2:] == ["hello n0", "careful now"]
        warned = await eventually(
            a, "/api/v1/logs/search", lambda b: b["total"] == 3, namespace=NS, minLevel="WARN"
        )
        assert {line["message"] for line in warned["results"]} == {"careful now"}
        said = await eventually(a, "/api/v1/logs/search", lambda b: b["total"] == 1, q="HELLO N2")
        assert said["results"][0]["executionId"] == runs[2]["id"]
        download = await a.client.get(f"/api/v1/logs/{one}/download")
        assert download.status_code == 200
        assert "hello n0" in download.text
        too_deep = await a.client.get(
            "/api/v1/executions/search", params={"page": 20_000, "size": 1}
        )
        assert too_deep.status_code == 400
        assert "first 10000 results" in too_deep.json()["message"]

        # kill: by id at once, in searches once indexed
        sleeping = await a.execute("sleepy")
        await a.in_state(sleeping["id"], "RUNNING", within=30)
        killed = await a.client.delete(f"/api/v1/executions/{sleeping['id']}/kill")
        assert killed.status_code == 202
        assert (await a.ended(sleeping["id"], within=30))["state"]["current"] == "KILLED"
        await eventually(a, "/api/v1/executions/search", lambda b: b["total"] == 1, state="KILLED")
        # deletion takes the execution out of searches at once
        assert (await a.client.delete(f"/api/v1/executions/{one}")).status_code == 204
        after = await a.client.get("/api/v1/executions/search", params={"namespace": NS})
        assert one not in ids(after.json())
        assert (await a.client.get(f"/api/v1/executions/{one}")).status_code == 404
        assert (await a.client.get("/api/v1/executions/nope")).status_code == 404
        # the indexer's lag and documents, on the process's metrics endpoint
        served = (await a.client.get("/metrics")).text
        assert "runtime_indexer_lag_records{topic=" in served
        assert 'runtime_indexer_documents_total{outcome="written"}' in served
        print(f"searches caught up {lag:.2f} s after the executions ended")


async def test_search_store_down_is_503_and_the_rest_runs(
    search_server: SearchServer, tmp_path: Path
) -> None:
    async with ha_api(search_server, tmp_path) as a:
        await a.deploy(LOGGED)
        await eventually(a, "/api/v1/flows/search", lambda b: b["total"] == 1, namespace=NS)
        search_server.stop_search()
        try:
            for method, path, body in (
                ("GET", "/api/v1/executions/search", None),
                ("GET", "/api/v1/flows/search", None),
                ("GET", "/api/v1/logs/search", None),
                ("GET", "/api/v1/triggers/search", None),
                ("POST", "/api/v1/stats/executions/daily", {}),
            ):
                response = await a.client.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                assert "search store (Elasticsearch at" in response.json()["message"]
            assert (await a.client.get("/health")).status_code == 200
            # creating, reading by id, running: all without the search store
            run = await a.execute("logged")
            done = await a.ended(run["id"], within=60)
            assert done["state"]["current"] == "SUCCESS"
            lines = await a.client.get(f"/api/v1/logs/{run['id']}")
            assert "careful now" in [line["message"] for line in lines.json()]
        finally:
            search_server.start_search()
        # the indexer catches up: the execution made during the outage is searchable
        await eventually(
            a,
            "/api/v1/executions/search",
            lambda b: run["id"] in ids(b),
            within=60,
            namespace=NS,
        )


async def test_errors_answer_in_json(search_server: SearchServer, tmp_path: Path) -> None:
    async with ha_api(search_server, tmp_path, components=("indexer",)) as a:
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", "/api/v1/executions/search", {"sort": "nope:asc"}, 400),
            ("GET", "/api/v1/executions/search", {"state": "NOPE"}, 400),
            ("GET", "/api/v1/executions/search", {"startDate": "yesterday"}, 400),
            ("GET", "/api/v1/logs/search", {"minLevel": "LOUD"}, 400),
            ("GET", "/api/v1/logs/search", {"sort": "level:asc"}, 400),
            ("GET", f"/api/v1/flows/{NS}/missing", {}, 404),
            ("GET", f"/api/v1/triggers/{NS}/missing", {}, 404),
            ("GET", "/api/v1/executions/missing", {}, 404),
        ]
        for method, path, params, status in cases:
            response = await a.client.request(method, path, params=params)
            assert response.status_code == status, (path, params, response.text)
            assert response.json()["message"]
