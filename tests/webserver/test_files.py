"""An execution's files through the API: byte ranges of a download, the size and
metadata (``file/metas``), and the first lines of a text file (``file/preview``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, api, flow

pytestmark = pytest.mark.asyncio

FILE = flow(
    "file",
    "  - id: noop\n    type: io.kestra.plugin.core.debug.Return\n    format: ok\n",
    "inputs:\n  - id: data\n    type: FILE\n",
)


async def test_ranges_metas_and_preview(tmp_path: Path) -> None:
    lines = "".join(f"row {i},été\n" for i in range(500)).encode()
    async with api(tmp_path) as a:
        await a.deploy(FILE)
        started = await a.client.post(
            f"/api/v1/executions/{NS}/file?wait=true",
            files={"data": ("rows.csv", lines, "text/csv")},
        )
        assert started.status_code == 200, started.text
        body = started.json()
        uri, url = body["inputs"]["data"], f"/api/v1/executions/{body['id']}/file"

        whole = await a.client.get(url, params={"path": uri})
        assert whole.status_code == 200
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-length"] == str(len(lines))
        part = await a.client.get(url, params={"path": uri}, headers={"range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == lines[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(lines)}"
        tail = await a.client.get(url, params={"path": uri}, headers={"range": "bytes=-5"})
        assert (tail.status_code, tail.content) == (206, lines[-5:])
        rest = await a.client.get(url, params={"path": uri}, headers={"range": "bytes=100-"})
        assert (rest.status_code, rest.content) == (206, lines[100:])
        past = await a.client.get(url, params={"path": uri}, headers={"range": "bytes=99999-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(lines)}"

        metas = await a.client.get(f"{url}/metas", params={"path": uri})
        assert metas.status_code == 200
        assert metas.json()["size"] == len(lines)

        preview = await a.client.get(f"{url}/preview", params={"path": uri, "maxRows": 3})
        assert preview.status_code == 200
        assert preview.json() == {
            "extension": "csv",
            "content": "row 0,été\nrow 1,été\nrow 2,été\n",
            "truncated": True,
        }
        latin = await a.client.get(
            f"{url}/preview", params={"path": uri, "maxRows": 1, "encoding": "latin-1"}
        )
        assert latin.json()["content"] == "row 0,Ã©tÃ©\n"
        bad = await a.client.get(f"{url}/preview", params={"path": uri, "encoding": "klingon"})
        assert bad.status_code == 422
        missing = await a.client.get(
            f"{url}/metas", params={"path": f"kestra:///{NS}/executions/{body['id']}/none.txt"}
        )
        assert missing.status_code == 404
        foreign = await a.client.get(f"{url}/preview", params={"path": "kestra:///x/y.txt"})
        assert foreign.status_code == 422


PURGE = flow(
    "purge",
    """  - id: write
    type: io.kestra.plugin.scripts.python.Script
    outputFiles: [out.txt]
    script: open("out.txt", "w").write("made")
  - id: purge
    type: io.kestra.plugin.core.storage.PurgeCurrentExecutionFiles
""",
    "inputs:\n  - id: data\n    type: FILE\n",
)


async def test_purge_current_execution_files_deletes_only_this_executions(
    tmp_path: Path,
) -> None:
    async with api(tmp_path) as a:
        await a.deploy(PURGE)
        other = await a.server.storage.put(NS, "purge/executions/someone-else/x.txt", b"keep")
        started = await a.client.post(
            f"/api/v1/executions/{NS}/purge?wait=true",
            files={"data": ("in.txt", b"input", "text/plain")},
        )
        assert started.status_code == 200, started.text
        body = started.json()
        assert body["state"]["current"] == "SUCCESS"
        runs = {run["taskId"]: run for run in body["taskRunList"]}
        made = runs["write"]["outputs"]["outputFiles"]["out.txt"]
        assert sorted(runs["purge"]["outputs"]["uris"]) == sorted([body["inputs"]["data"], made])
        assert not await a.server.storage.exists(made)
        assert not await a.server.storage.exists(body["inputs"]["data"])
        assert await a.server.storage.list(NS) == [other]
