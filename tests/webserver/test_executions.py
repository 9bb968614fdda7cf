"""/api/v1/executions on SQLite, with an executor and a worker carrying executions
out: each endpoint on success and on each error it can give."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.webserver.helpers import NS, api, flow, sse_events

pytestmark = pytest.mark.asyncio

TYPED = flow(
    "typed",
    """  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{ inputs.name }} x{{ inputs.count }}"
""",
    """inputs:
  - id: name
    type: STRING
  - id: count
    type: INT
    defaults: 1
""",
)
FILE = flow(
    "file",
    """  - id: content
    type: io.kestra.plugin.core.debug.Return
    format: "{{ read(inputs.data) }}"
""",
    "inputs:\n  - id: data\n    type: FILE\n",
)
SLEEP = flow(
    "sleep",
    "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT60S\n",
)
FAIL = flow(
    "fail",
    "  - id: boom\n    type: io.kestra.plugin.core.execution.Fail\n    errorMessage: broken\n",
)
PAUSE = flow(
    "pause",
    """  - id: approve
    type: io.kestra.plugin.core.flow.Pause
    onResume:
      - id: ok
        type: BOOLEAN
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.approve.onResume.ok }}"
""",
)


async def test_create_with_typed_inputs_and_wait(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        response = await a.client.post(
            f"/api/v1/executions/{NS}/typed?wait=true&labels=env:test",
            data={"name": "Ada", "count": "3"},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["state"]["current"] == "SUCCESS"
        assert body["inputs"] == {"name": "Ada", "count": 3}
        assert body["taskRunList"][0]["outputs"] == {"value": "Ada x3"}
        assert {"key": "env", "value": "test"} in body["labels"]


async def test_create_without_wait_returns_the_created_execution(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        body = await a.execute("typed", data={"name": "Ada"})
        assert body["state"]["current"] == "CREATED"
        assert (await a.ended(body["id"]))["state"]["current"] == "SUCCESS"


async def test_create_errors(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        unknown = await a.client.post(f"/api/v1/executions/{NS}/nope")
        assert unknown.status_code == 404
        assert unknown.json()["message"] == f"flow {NS}.nope not found"
        invalid = await a.client.post(
            f"/api/v1/executions/{NS}/typed", data={"name": "Ada", "count": "many"}
        )
        assert invalid.status_code == 422
        assert invalid.json()["errors"] == [
            {"input": "count", "message": "expected an integer, got 'many'"}
        ]
        assert "'count'" in invalid.json()["message"]
        missing = await a.client.post(f"/api/v1/executions/{NS}/typed", data={"count": "2"})
        assert missing.status_code == 422
        assert missing.json()["errors"][0]["input"] == "name"
        json_body = await a.client.post(f"/api/v1/executions/{NS}/typed", json={"name": "x"})
        assert json_body.status_code == 415
        bad_label = await a.client.post(f"/api/v1/executions/{NS}/typed?labels=oops")
        assert bad_label.status_code == 400


async def test_file_input_is_streamed_to_storage(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(FILE)
        content = "line one\n" * 20_000  # past Starlette's in-memory spool
        response = await a.client.post(
            f"/api/v1/executions/{NS}/file?wait=true",
            files={"data": ("notes.txt", content.encode(), "text/plain")},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        uri = body["inputs"]["data"]
        assert uri == f"kestra:///{NS}/executions/{body['id']}/inputs/data/notes.txt"
        assert await a.server.storage.get(uri) == content.encode()
        assert body["taskRunList"][0]["outputs"] == {"value": content}
        download = await a.client.get(f"/api/v1/executions/{body['id']}/file", params={"path": uri})
        assert download.status_code == 200
        assert download.content == content.encode()
        assert "notes.txt" in download.headers["content-disposition"]


async def test_file_input_errors(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(FILE)
        await a.deploy(TYPED)
        as_text = await a.client.post(f"/api/v1/executions/{NS}/file", data={"data": "/etc/hosts"})
        assert as_text.status_code == 422
        assert as_text.json()["errors"][0]["input"] == "data"
        not_file = await a.client.post(
            f"/api/v1/executions/{NS}/typed",
            data={"count": "1"},
            files={"name": ("n.txt", b"Ada")},
        )
        assert not_file.status_code == 422
        assert not_file.json()["errors"][0]["input"] == "name"
        missing = await a.client.post(f"/api/v1/executions/{NS}/file", files={"x": ("a", b"")})
        assert missing.status_code == 422


async def test_download_errors(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        url = f"/api/v1/executions/{ex['id']}/file"
        assert (await a.client.get(url)).status_code == 400
        gone = await a.client.get(
            url, params={"path": f"kestra:///{NS}/executions/{ex['id']}/nothing.txt"}
        )
        assert gone.status_code == 404
        foreign = await a.client.get(url, params={"path": "kestra:///other/executions/x/f.txt"})
        assert foreign.status_code == 422
        escape = await a.client.get(
            url, params={"path": f"kestra:///{NS}/executions/{ex['id']}/../../../../etc/passwd"}
        )
        assert escape.status_code in (404, 422)
        # a file of the namespace whose path merely contains the execution's folder
        elsewhere = await a.server.storage.put(NS, f"kv/executions/{ex['id']}/state", b"s")
        contained = await a.client.get(url, params={"path": elsewhere})
        assert contained.status_code == 422
        assert "is not a file of execution" in contained.json()["message"]
        unknown = await a.client.get("/api/v1/executions/nope/file", params={"path": "x"})
        assert unknown.status_code == 404


async def test_get(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        got = await a.client.get(f"/api/v1/executions/{ex['id']}")
        assert got.status_code == 200
        assert (got.json()["id"], got.json()["flowId"]) == (ex["id"], "typed")
        missing = await a.client.get("/api/v1/executions/nope")
        assert missing.status_code == 404
        assert missing.json() == {"message": "execution nope not found", "status": 404}


async def test_search(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        await a.deploy(FAIL)
        ok = await a.execute("typed", data={"name": "Ada"}, params={"labels": "env:prod"})
        failed = await a.execute("fail")
        await a.ended(ok["id"])
        await a.ended(failed["id"])

        async def ids(**params: Any) -> list[str]:
            response = await a.client.get("/api/v1/executions/search", params=params)
            assert response.status_code == 200, response.text
            return [e["id"] for e in response.json()["results"]]

        assert await ids(namespace=NS) == [failed["id"], ok["id"]]
        assert await ids(sort="state.startDate:asc") == [ok["id"], failed["id"]]
        assert await ids(state="FAILED") == [failed["id"]]
        assert await ids(flowId="typed") == [ok["id"]]
        assert await ids(labels="env:prod") == [ok["id"]]
        assert await ids(startDate="2000-01-01T00:00:00Z", endDate="2000-01-02T00:00:00Z") == []
        assert await ids(startDate=ok["state"]["histories"][0]["date"]) == [
            failed["id"],
            ok["id"],
        ]
        page = await a.client.get("/api/v1/executions/search", params={"size": 1, "page": 2})
        assert page.json()["total"] == 2
        assert [e["id"] for e in page.json()["results"]] == [ok["id"]]
        for bad in ({"state": "DONE"}, {"startDate": "yesterday"}, {"sort": "color"}, {"page": 0}):
            response = await a.client.get("/api/v1/executions/search", params=bad)
            assert response.status_code == 400, bad
            assert next(iter(bad)) in response.json()["message"]


async def test_delete(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        await a.deploy(SLEEP)
        ex = await a.execute("typed", data={"name": "Ada"})
        await a.ended(ex["id"])
        assert (await a.client.delete(f"/api/v1/executions/{ex['id']}")).status_code == 204
        assert (await a.client.get(f"/api/v1/executions/{ex['id']}")).status_code == 404
        assert (await a.client.delete(f"/api/v1/executions/{ex['id']}")).status_code == 404
        running = await a.execute("sleep")
        await a.in_state(running["id"], "RUNNING")
        refused = await a.client.delete(f"/api/v1/executions/{running['id']}")
        assert refused.status_code == 409
        assert "kill it first" in refused.json()["message"]


async def test_kill(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(SLEEP)
        ex = await a.execute("sleep")
        await a.in_state(ex["id"], "RUNNING")
        response = await a.client.delete(f"/api/v1/executions/{ex['id']}/kill")
        assert response.status_code == 202
        assert (await a.ended(ex["id"]))["state"]["current"] == "KILLED"
        again = await a.client.delete(f"/api/v1/executions/{ex['id']}/kill")
        assert again.status_code == 409
        assert (await a.client.delete("/api/v1/executions/nope/kill")).status_code == 404


async def test_restart(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(FAIL)
        await a.deploy(TYPED)
        ex = await a.execute("fail")
        await a.ended(ex["id"])
        response = await a.client.post(f"/api/v1/executions/{ex['id']}/restart")
        assert response.status_code == 202

        async def restarted() -> bool:
            got = (await a.client.get(f"/api/v1/executions/{ex['id']}")).json()
            states = [h["state"] for h in got["state"]["histories"]]
            return "RESTARTED" in states and got["state"]["current"] == "FAILED"

        from tests.webserver.helpers import until

        await until(restarted, 10, "restarted and failed again")
        ok = await a.execute("typed", data={"name": "Ada"})
        await a.ended(ok["id"])
        nothing = await a.client.post(f"/api/v1/executions/{ok['id']}/restart")
        assert nothing.status_code == 409
        assert "no failed task run" in nothing.json()["message"]
        assert (await a.client.post("/api/v1/executions/nope/restart")).status_code == 404


async def test_restart_of_a_running_execution_is_a_conflict(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(SLEEP)
        ex = await a.execute("sleep")
        await a.in_state(ex["id"], "RUNNING")
        assert (await a.client.post(f"/api/v1/executions/{ex['id']}/restart")).status_code == 409
        assert (await a.client.post(f"/api/v1/executions/{ex['id']}/replay")).status_code == 409


async def test_replay(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        done = await a.ended(ex["id"])
        run_id = done["taskRunList"][0]["id"]
        response = await a.client.post(
            f"/api/v1/executions/{ex['id']}/replay", params={"taskRunId": run_id}
        )
        assert response.status_code == 202
        new = response.json()
        assert new["originalId"] == ex["id"]
        replayed = await a.ended(new["id"])
        assert replayed["state"]["current"] == "SUCCESS"
        assert replayed["inputs"] == done["inputs"]
        unknown_run = await a.client.post(
            f"/api/v1/executions/{ex['id']}/replay", params={"taskRunId": "nope"}
        )
        assert unknown_run.status_code == 422
        assert (await a.client.post("/api/v1/executions/nope/replay")).status_code == 404


async def test_resume_with_inputs(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(PAUSE)
        ex = await a.execute("pause")
        await a.in_state(ex["id"], "PAUSED")
        invalid = await a.client.post(f"/api/v1/executions/{ex['id']}/resume", data={"ok": "maybe"})
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["input"] == "ok"
        missing = await a.client.post(f"/api/v1/executions/{ex['id']}/resume")
        assert missing.status_code == 422
        response = await a.client.post(f"/api/v1/executions/{ex['id']}/resume", data={"ok": "true"})
        assert response.status_code == 204
        done = await a.ended(ex["id"])
        assert done["state"]["current"] == "SUCCESS"
        after = next(r for r in done["taskRunList"] if r["taskId"] == "after")
        assert after["outputs"] == {"value": "true"}
        again = await a.client.post(f"/api/v1/executions/{ex['id']}/resume", data={"ok": "true"})
        assert again.status_code == 409
        assert "only a paused execution" in again.json()["message"]
        assert (await a.client.post("/api/v1/executions/nope/resume")).status_code == 404


async def test_labels(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        await a.ended(ex["id"])
        labels = [{"key": "team", "value": "data"}, {"key": "env", "value": "prod"}]
        response = await a.client.post(f"/api/v1/executions/{ex['id']}/labels", json=labels)
        assert response.status_code == 200
        got = await a.client.get(f"/api/v1/executions/{ex['id']}")
        # the correlation id is a system label: it stays
        system = {"key": "system.correlationId", "value": ex["id"]}
        assert got.json()["labels"] == [*labels, system]
        found = await a.client.get("/api/v1/executions/search", params={"labels": "team:data"})
        assert [e["id"] for e in found.json()["results"]] == [ex["id"]]
        url = f"/api/v1/executions/{ex['id']}/labels"
        assert (await a.client.post(url, json={"team": "x"})).status_code == 400
        assert (await a.client.post(url, content=b"{")).status_code == 400
        assert (await a.client.post(url, json=[{"key": "", "value": "x"}])).status_code == 422
        assert (await a.client.post("/api/v1/executions/nope/labels", json=[])).status_code == 404


async def test_follow_receives_every_state_change_in_order(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(PAUSE)
        ex = await a.execute("pause")
        await a.in_state(ex["id"], "PAUSED")
        # Resumed while nobody follows: RUNNING and SUCCESS may fall between two polls.
        await a.client.post(f"/api/v1/executions/{ex['id']}/resume", data={"ok": "true"})
        response = await a.client.get(f"/api/v1/executions/{ex['id']}/follow")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.text)
        final = await a.ended(ex["id"])
        seen: list[str] = []
        for item in events:
            state = json.loads(item["data"])["state"]["current"]
            if not seen or seen[-1] != state:
                seen.append(state)
        assert seen == [h["state"] for h in final["state"]["histories"]]
        assert [e["id"] for e in events][-1] == "end"
        assert all(e["id"] == "progress" for e in events[:-1])


async def test_follow_of_a_running_execution_streams_until_it_ends(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        response = await a.client.get(f"/api/v1/executions/{ex['id']}/follow")
        events = sse_events(response.text)
        states = [json.loads(e["data"])["state"]["current"] for e in events]
        assert states[0] == "CREATED"
        assert states[-1] == "SUCCESS"
        assert "RUNNING" in states
        assert (await a.client.get("/api/v1/executions/nope/follow")).status_code == 404


PARENT = flow(
    "parent",
    f"""  - id: child
    type: io.kestra.plugin.core.flow.Subflow
    namespace: {NS}
    flowId: sleep
    wait: true
""",
)


async def test_kill_cascades_to_subflow_executions(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(SLEEP)
        await a.deploy(PARENT)
        parent = await a.execute("parent")

        async def child_running() -> bool:
            found = await a.client.get(
                "/api/v1/executions/search", params={"flowId": "sleep", "state": "RUNNING"}
            )
            return bool(found.json()["total"])

        from tests.webserver.helpers import until

        await until(child_running, 10, "the subflow execution running")
        child = (
            await a.client.get("/api/v1/executions/search", params={"flowId": "sleep"})
        ).json()["results"][0]
        response = await a.client.delete(f"/api/v1/executions/{parent['id']}/kill")
        assert response.status_code == 202
        assert (await a.ended(parent["id"]))["state"]["current"] == "KILLED"
        assert (await a.ended(child["id"]))["state"]["current"] == "KILLED"


async def test_readiness_is_503_while_the_backend_is_down(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        assert (await a.client.get("/health/ready")).status_code == 200
        await a.backend.stop()
        down = await a.client.get("/health/ready")
        assert down.status_code == 503
        assert down.json()["status"] == "DOWN"
        assert (await a.client.get("/health")).status_code == 200
        await a.backend.start()


async def test_a_scheduled_execution_waits_for_its_date(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        later = datetime.now(UTC) + timedelta(hours=1)
        ex = await a.execute(
            "typed", data={"name": "Ada"}, params={"scheduleDate": later.isoformat()}
        )
        soon = datetime.now(UTC) + timedelta(seconds=0.3)
        now_ex = await a.execute(
            "typed", data={"name": "Bo"}, params={"scheduleDate": soon.isoformat()}
        )
        # the later one was submitted first, and is still waiting for its date
        assert (await a.ended(now_ex["id"]))["state"]["current"] == "SUCCESS"
        still = await a.client.get(f"/api/v1/executions/{ex['id']}")
        assert still.json()["state"]["current"] == "CREATED"
        bad = await a.client.post(
            f"/api/v1/executions/{NS}/typed", params={"scheduleDate": "tomorrow"}
        )
        assert bad.status_code == 400


async def test_search_by_time_range(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        ex = await a.execute("typed", data={"name": "Ada"})
        found = await a.client.get("/api/v1/executions/search", params={"timeRange": "PT1H"})
        assert [e["id"] for e in found.json()["results"]] == [ex["id"]]
        both = await a.client.get(
            "/api/v1/executions/search",
            params={"timeRange": "PT1H", "startDate": "2024-01-01T00:00:00Z"},
        )
        assert both.status_code == 400
        bad = await a.client.get("/api/v1/executions/search", params={"timeRange": "an hour"})
        assert bad.status_code == 400
        huge = await a.client.get("/api/v1/executions/search", params={"timeRange": "P9999999D"})
        assert huge.status_code == 400


OUTPUT_FILE = flow(
    "output",
    """  - id: write
    type: io.kestra.plugin.scripts.shell.Commands
    outputFiles:
      - report.txt
    commands:
      - echo quarterly figures > report.txt
""",
)


async def test_download_a_task_output_file(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(OUTPUT_FILE)
        ex = await a.execute("output", params={"wait": "true"})
        assert ex["state"]["current"] == "SUCCESS", ex
        uri = ex["taskRunList"][0]["outputs"]["outputFiles"]["report.txt"]
        response = await a.client.get(f"/api/v1/executions/{ex['id']}/file", params={"path": uri})
        assert response.status_code == 200
        assert response.content == b"quarterly figures\n"
        assert response.headers["content-type"] == "application/octet-stream"


async def test_uploads_of_a_refused_execution_are_deleted(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(FILE.replace("type: FILE\n", "type: FILE\n  - id: n\n    type: INT\n"))
        response = await a.client.post(
            f"/api/v1/executions/{NS}/file",
            data={"n": "many"},
            files={"data": ("a.txt", b"content")},
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["input"] == "n"
        assert await a.server.storage.list(NS) == []


async def test_delete_removes_the_execution_files_unless_asked_not_to(tmp_path: Path) -> None:
    """As Kestra (deleteStorage defaults to true): a deleted execution's FILE inputs
    and task output files would otherwise stay in storage, reachable by nothing."""
    async with api(tmp_path) as a:
        await a.deploy(FILE)
        await a.deploy(OUTPUT_FILE)
        storage = a.server.storage
        uploaded = await a.execute("file", params={"wait": "true"}, files={"data": b"x"})
        output = await a.execute("output", params={"wait": "true"})
        kept = await a.execute("file", params={"wait": "true"}, files={"data": b"y"})
        uris = [
            uploaded["inputs"]["data"],
            output["taskRunList"][0]["outputs"]["outputFiles"]["report.txt"],
            kept["inputs"]["data"],
        ]
        assert [await storage.exists(u) for u in uris] == [True, True, True]
        for ex in (uploaded, output):
            assert (await a.client.delete(f"/api/v1/executions/{ex['id']}")).status_code == 204
        bad = await a.client.delete(f"/api/v1/executions/{kept['id']}?deleteStorage=maybe")
        assert bad.status_code == 400
        keep = await a.client.delete(f"/api/v1/executions/{kept['id']}?deleteStorage=false")
        assert keep.status_code == 204
        assert [await storage.exists(u) for u in uris] == [False, False, True]
        assert await storage.list(NS) == [kept["inputs"]["data"]]


async def test_uploads_are_deleted_when_the_execution_cannot_be_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing after the files were stored: 503, and nothing left in
    storage that no execution will ever read."""
    from backends.errors import Transient
    from services.webserver import executions_api

    async def database_down(*args: object, **kwargs: object) -> None:
        raise Transient("the database is restarting")

    async with api(tmp_path) as a:
        await a.deploy(FILE)
        monkeypatch.setattr(executions_api, "submit", database_down)
        response = await a.client.post(
            f"/api/v1/executions/{NS}/file", files={"data": ("a.txt", b"content")}
        )
        assert response.status_code == 503
        assert "restarting" in response.json()["message"]
        assert await a.server.storage.list(NS) == []


async def test_an_upload_s_file_name_is_made_storable(tmp_path: Path) -> None:
    """The client names the file: a NUL in it, or a name past what a file system
    holds (255 bytes, less storage's temporary suffix), was a 500."""
    async with api(tmp_path) as a:
        await a.deploy(FILE)
        for sent, stored in [
            (b"a\x00b.txt", "ab.txt"),
            (b"x" * 300 + b".csv", "x" * 96 + ".csv"),
            ("é".encode() * 200, "é" * 50),
            (b"../../etc/passwd", "passwd"),
            (b"..", "file"),
        ]:
            body = (
                b'--x\r\nContent-Disposition: form-data; name="data"; filename="'
                + sent
                + b'"\r\n\r\ncontent\r\n--x--\r\n'
            )
            response = await a.client.post(
                f"/api/v1/executions/{NS}/file?wait=true",
                content=body,
                headers={"content-type": "multipart/form-data; boundary=x"},
            )
            assert response.status_code == 200, (sent[:20], response.text[:200])
            ex = response.json()
            uri = ex["inputs"]["data"]
            assert uri.endswith(f"/inputs/data/{quote(stored)}"), uri
            assert ex["taskRunList"][0]["outputs"] == {"value": "content"}


async def test_a_storage_failure_on_upload_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    async with api(tmp_path) as a:
        await a.deploy(FILE)

        async def disk_full(*args: object, **kwargs: object) -> str:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(a.server.storage, "put", disk_full)
        response = await a.client.post(
            f"/api/v1/executions/{NS}/file", files={"data": ("a.txt", b"content")}
        )
        assert response.status_code == 503
        message = response.json()["message"]
        assert "input `data`" in message
        assert "No space left" in message
