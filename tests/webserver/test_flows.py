"""/api/v1/flows on SQLite: each endpoint on success and on each error it can give."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest

from tests.webserver.helpers import NS, RETURN, YAML, api, flow

pytestmark = pytest.mark.asyncio

HELLO = flow("hello", RETURN, "labels:\n  team: data\n")
BROKEN = f"""id: broken
namespace: {NS}
tasks:
  - id: a
    type: io.kestra.plugin.core.debug.Return
    formt: x
  - id: b
    type: io.kestra.plugin.core.debug.Nope
"""


async def test_create_returns_the_flow_with_its_source(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        response = await a.client.post("/api/v1/flows", content=HELLO, headers=YAML)
        assert response.status_code == 200
        body = response.json()
        assert (body["id"], body["namespace"], body["revision"]) == ("hello", NS, 1)
        assert body["tasks"][0]["id"] == "hello"
        assert body["source"] == HELLO
        assert body["disabled"] is False


async def test_create_an_existing_flow_is_a_conflict(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        response = await a.client.post("/api/v1/flows", content=HELLO, headers=YAML)
        assert response.status_code == 409
        assert "already exists" in response.json()["message"]


async def test_invalid_yaml_is_422_with_every_problem_placed(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        response = await a.client.post("/api/v1/flows", content=BROKEN, headers=YAML)
        assert response.status_code == 422
        errors = response.json()["errors"]
        assert [(e["line"], e["column"]) for e in errors] == [(6, 5), (8, 11)]
        assert "formt" in errors[0]["message"]
        assert "line 6, column 5" in response.json()["message"]
        unparsable = await a.client.post("/api/v1/flows", content="id: [unclosed\n", headers=YAML)
        assert unparsable.status_code == 422
        assert unparsable.json()["errors"][0]["line"] >= 1


async def test_update_makes_a_new_revision(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        changed = HELLO.replace("world", "there")
        response = await a.client.put(f"/api/v1/flows/{NS}/hello", content=changed, headers=YAML)
        assert response.status_code == 200
        assert response.json()["revision"] == 2
        revisions = await a.client.get(f"/api/v1/flows/{NS}/hello/revisions")
        assert [r["revision"] for r in revisions.json()] == [1, 2]
        assert revisions.json()[1]["source"] == changed


async def test_update_errors(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        missing = await a.client.put(f"/api/v1/flows/{NS}/hello", content=HELLO, headers=YAML)
        assert missing.status_code == 404
        await a.deploy(HELLO)
        invalid = await a.client.put(
            f"/api/v1/flows/{NS}/hello", content=HELLO + "  - oops\n", headers=YAML
        )
        assert invalid.status_code == 422
        renamed = await a.client.put(
            f"/api/v1/flows/{NS}/hello",
            content=HELLO.replace("id: hello", "id: other"),
            headers=YAML,
        )
        assert renamed.status_code == 422
        assert "cannot change" in renamed.json()["message"]


async def test_delete(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        assert (await a.client.delete(f"/api/v1/flows/{NS}/hello")).status_code == 204
        assert (await a.client.get(f"/api/v1/flows/{NS}/hello")).status_code == 404
        again = await a.client.delete(f"/api/v1/flows/{NS}/hello")
        assert again.status_code == 404
        assert again.json()["message"] == f"flow {NS}.hello not found"


async def test_get_as_json_yaml_and_by_revision(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        await a.client.put(
            f"/api/v1/flows/{NS}/hello", content=HELLO.replace("world", "you"), headers=YAML
        )
        latest = await a.client.get(f"/api/v1/flows/{NS}/hello")
        assert latest.json()["revision"] == 2
        assert "source" not in latest.json()
        first = await a.client.get(f"/api/v1/flows/{NS}/hello?revision=1&source=true")
        assert first.json()["source"] == HELLO
        as_yaml = await a.client.get(
            f"/api/v1/flows/{NS}/hello", headers={"accept": "application/x-yaml"}
        )
        assert as_yaml.headers["content-type"].startswith("application/x-yaml")
        assert "you" in as_yaml.text
        assert (await a.client.get(f"/api/v1/flows/{NS}/nope")).status_code == 404
        assert (await a.client.get(f"/api/v1/flows/{NS}/hello?revision=9")).status_code == 404
        bad = await a.client.get(f"/api/v1/flows/{NS}/hello?revision=x")
        assert bad.status_code == 400
        assert "revision" in bad.json()["message"]


async def test_list_by_namespace_and_distinct_namespaces(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        await a.deploy(HELLO.replace(f"namespace: {NS}", f"namespace: {NS}.sub"))
        listed = await a.client.get(f"/api/v1/flows/{NS}")
        assert [(f["namespace"], f["id"]) for f in listed.json()] == [(NS, "hello")]
        names = await a.client.get("/api/v1/flows/distinct-namespaces")
        assert names.json() == [NS, f"{NS}.sub"]
        assert (await a.client.get("/api/v1/flows/elsewhere")).json() == []


async def test_search(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        await a.deploy(flow("bye", RETURN, "labels:\n  team: ops\n"))
        await a.deploy(flow("other", RETURN).replace(f"namespace: {NS}", "namespace: elsewhere"))

        async def ids(**params: str) -> list[str]:
            response = await a.client.get("/api/v1/flows/search", params=params)
            assert response.status_code == 200, response.text
            return [f["id"] for f in response.json()["results"]]

        assert await ids(namespace=NS) == ["bye", "hello"]
        assert await ids(q="HEL") == ["hello"]
        assert await ids(labels="team:ops") == ["bye"]
        assert await ids(sort="id:desc", size="2") == ["other", "hello"]
        paged = await a.client.get("/api/v1/flows/search", params={"size": 1, "page": 2})
        assert paged.json()["total"] == 3
        assert [f["id"] for f in paged.json()["results"]] == ["hello"]
        bad = await a.client.get("/api/v1/flows/search", params={"labels": "nocolon"})
        assert bad.status_code == 400
        bad_sort = await a.client.get("/api/v1/flows/search", params={"sort": "size"})
        assert bad_sort.status_code == 400


async def test_revisions_of_an_unknown_flow(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        assert (await a.client.get(f"/api/v1/flows/{NS}/nope/revisions")).status_code == 404


async def test_validate_reports_each_document(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        response = await a.client.post(
            "/api/v1/flows/validate", content=HELLO + "---\n" + BROKEN, headers=YAML
        )
        assert response.status_code == 200
        good, bad = response.json()
        assert (good["index"], good["flow"], good["problems"]) == (0, "hello", [])
        assert good["constraints"] is None
        assert (bad["flow"], bad["namespace"]) == ("broken", NS)
        # placed by their line in the whole text sent
        before = HELLO.count("\n") + 1
        placed = [(p["line"] - before, p["column"]) for p in bad["problems"]]
        assert placed == [(6, 5), (8, 11)]
        assert f"line {6 + before}, column 5" in bad["constraints"]


async def test_disable_and_enable(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        await a.deploy(HELLO)
        refs = [{"namespace": NS, "id": "hello"}]
        response = await a.client.post("/api/v1/flows/disable/by-ids", json=refs)
        assert response.json() == {"count": 1}
        got = await a.client.get(f"/api/v1/flows/{NS}/hello")
        assert (got.json()["disabled"], got.json()["revision"]) == (True, 2)
        refused = await a.client.post(f"/api/v1/executions/{NS}/hello")
        assert refused.status_code == 409
        assert "disabled" in refused.json()["message"]
        again = await a.client.post("/api/v1/flows/disable/by-ids", json=refs)
        assert again.json() == {"count": 0}
        enabled = await a.client.post("/api/v1/flows/enable/by-ids", json=refs)
        assert enabled.json() == {"count": 1}
        assert (await a.client.get(f"/api/v1/flows/{NS}/hello")).json()["disabled"] is False
        unknown = await a.client.post(
            "/api/v1/flows/enable/by-ids", json=[{"namespace": NS, "id": "nope"}]
        )
        assert unknown.status_code == 404
        # one unknown flow in the list: nothing is changed, not the flows before it
        partly = await a.client.post(
            "/api/v1/flows/disable/by-ids", json=[*refs, {"namespace": NS, "id": "nope"}]
        )
        assert partly.status_code == 404
        kept = (await a.client.get(f"/api/v1/flows/{NS}/hello")).json()
        assert (kept["disabled"], kept["revision"]) == (False, 3)
        malformed = await a.client.post("/api/v1/flows/enable/by-ids", json={"id": 1})
        assert malformed.status_code == 400


@pytest.mark.slow
async def test_parsing_a_large_flow_leaves_the_event_loop_free(tmp_path: Path) -> None:
    """Megabytes of YAML take seconds to parse: in the event loop, every other request
    (webhooks, follows) would wait that long. A ticker measures the longest stall of
    the loop during each request (a full garbage collection still stalls it a little,
    in any thread, so the bound is part of the request's time, not zero)."""
    tasks = "".join(
        f"  - id: t{i}\n    type: io.kestra.plugin.core.log.Log\n    message: line {i}\n"
        for i in range(8000)
    )
    big = f"id: big\nnamespace: {NS}\ntasks:\n{tasks}"
    async with api(tmp_path, components=()) as a:
        stalls: list[float] = []
        last_tick = [time.monotonic()]
        done = asyncio.Event()

        async def tick() -> None:
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                stalls.append(now - last_tick[0])
                last_tick[0] = now

        async def longest_stall(request: Awaitable[httpx.Response]) -> tuple[float, float]:
            stalls.clear()
            started = time.monotonic()
            response = await request
            assert response.status_code == 200, response.text[:200]
            # a loop blocked to the end of the request has not ticked since
            ended = time.monotonic()
            return max([*stalls, ended - last_tick[0]]), ended - started

        # What the whole test session left in memory is not this code's: frozen, a
        # full collection during the requests does not walk it (in a long session it
        # alone stalled the loop 0.3 s).
        gc.collect()
        gc.freeze()
        ticker = asyncio.create_task(tick())
        try:
            measured = {
                "validate": await longest_stall(
                    a.client.post("/api/v1/flows/validate", content=big, headers=YAML)
                ),
                "create": await longest_stall(
                    a.client.post("/api/v1/flows", content=big, headers=YAML)
                ),
                "update": await longest_stall(
                    a.client.put(f"/api/v1/flows/{NS}/big", content=big, headers=YAML)
                ),
                "get": await longest_stall(a.client.get(f"/api/v1/flows/{NS}/big")),
                "search": await longest_stall(
                    a.client.get("/api/v1/flows/search", params={"size": 1000})
                ),
            }
        finally:
            done.set()
            await ticker
            gc.unfreeze()
        for name, (stall, took) in measured.items():
            assert took > 0.1, f"{name}: the flow is too small to show a stall"
            # Parsed on the loop, the stall would be the whole request (~100%); offloaded
            # it is ~10% alone, and up to ~65% was seen inside a full run of the suite
            # (the test process then holds every earlier test's threads and heap).
            assert stall < took * 0.8, f"{name}: the event loop stalled {stall:.2f}s of {took:.2f}s"
