"""The terminal commands that read a server's state: ``runtime executions list|show``,
``runtime triggers list``, and ``runtime execute --wait``'s progress, through the
API (``--server``) and straight on the backend (``--config``)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from services.cli import cli
from tests.webserver.helpers import NS, YAML, flow
from tests.webserver.test_component import serving

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SCHEDULED = flow(
    "nightly",
    "  - id: hi\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n",
    "triggers:\n  - id: at_two\n    type: io.kestra.plugin.core.trigger.Schedule\n"
    '    cron: "0 2 * * *"\n',
)


def _local_config(tmp_path: Path) -> Path:
    """Settings naming the backend and storage that ``serving(tmp_path)`` runs on."""
    path = tmp_path / "settings.yml"
    path.write_text(
        f"backend:\n  type: sqlite\n  path: {tmp_path / 'runtime.db'}\n"
        f"storage:\n  type: local\n  path: {tmp_path / 'storage'}\n"
    )
    return path


async def _invoke(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args))


@pytest.mark.parametrize("where", ["server", "backend"])
async def test_executions_list_and_show(tmp_path: Path, where: str) -> None:
    async with serving(tmp_path) as url:
        target = (
            ["--server", url] if where == "server" else ["--config", str(_local_config(tmp_path))]
        )
        ran = await _invoke(
            "execute",
            NS,
            "file",
            "--input",
            "who=Al",
            "--input",
            "data=@" + str(_payload(tmp_path)),
            "--wait",
            "--json",
            "--server",
            url,
        )
        assert ran.exit_code == 0, ran.output
        ok_id = json.loads(ran.stdout)["id"]
        async with httpx.AsyncClient(base_url=url) as client:
            long = (await client.post(f"/api/v1/executions/{NS}/long")).json()["id"]

        listed = await _invoke("executions", "list", "--namespace", NS, *target)
        assert listed.exit_code == 0, listed.output
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        # On a pipe: one tab-separated line per execution, newest first.
        assert [row[0] for row in rows] == [long, ok_id]
        assert rows[1][1:3] == [f"{NS}.file", "SUCCESS"]
        assert rows[1][4].endswith("s")

        only = await _invoke("executions", "list", "--state", "success", "--json", *target)
        assert only.exit_code == 0, only.output
        page = json.loads(only.stdout)
        assert page["total"] == 1
        assert [e["id"] for e in page["results"]] == [ok_id]

        none = await _invoke("executions", "list", "--flow", "sleep", *target)
        assert none.exit_code == 0
        assert none.stdout == ""
        bad = await _invoke("executions", "list", "--state", "DONE", *target)
        assert bad.exit_code == 2
        assert "known states" in bad.output

        shown = await _invoke("executions", "show", ok_id, *target)
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f"{ok_id} {NS}.file revision 1 SUCCESS")
        assert lines[1].split("\t")[:3] == ["say", "SUCCESS", "1"]
        as_json = await _invoke("executions", "show", ok_id, "--json", *target)
        assert json.loads(as_json.stdout)["taskRunList"][0]["taskId"] == "say"
        missing = await _invoke("executions", "show", "nope", *target)
        assert missing.exit_code == 1
        assert "nope" in missing.output


@pytest.mark.parametrize("where", ["server", "backend"])
async def test_triggers_list(tmp_path: Path, where: str) -> None:
    async with serving(tmp_path) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/api/v1/flows", content=SCHEDULED, headers=YAML)
            assert response.status_code == 200, response.text
        target = (
            ["--server", url] if where == "server" else ["--config", str(_local_config(tmp_path))]
        )
        listed = await _invoke("triggers", "list", *target)
        assert listed.exit_code == 0, listed.output
        [row] = [line.split("\t") for line in listed.stdout.splitlines()]
        assert row[:4] == [f"{NS}.nightly", "at_two", "Schedule", "enabled"]
        assert row[4].endswith("T02:00:00Z")
        as_json = await _invoke("triggers", "list", "--json", "--namespace", NS, *target)
        [item] = json.loads(as_json.stdout)
        assert item["triggerContext"]["nextExecutionDate"] == row[4]
        other = await _invoke("triggers", "list", "--namespace", "elsewhere", *target)
        assert other.stdout == ""


async def test_execute_wait_reports_each_task_run_on_a_pipe(tmp_path: Path) -> None:
    async with serving(tmp_path) as url:
        ran = await _invoke("execute", NS, "sleep", "--wait", "--server", url)
    assert ran.exit_code == 0, ran.output
    execution_id, state = ran.stdout.split()
    assert state == "SUCCESS"
    progress = ran.stderr.splitlines()
    assert progress[0] == f"{execution_id} CREATED"
    # The Sleep of PT1S: seen running, then ended with its duration.
    assert "nap RUNNING" in progress
    [ended] = [line for line in progress if line.startswith("nap SUCCESS ")]
    assert float(ended.split()[-1].removesuffix("s")) >= 1.0


async def test_execute_wait_draws_a_live_table_on_a_terminal(tmp_path: Path) -> None:
    async with serving(tmp_path) as url:
        leader, follower = pty.openpty()
        try:
            ran = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "services.cli", "execute", NS, "sleep", "--wait"],
                env={
                    **{k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"},
                    "RUNTIME_SERVER": url,
                    "COLUMNS": "100",
                },
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=follower,
                timeout=60,
            )
            screen = _drain(leader)
        finally:
            os.close(leader)
            os.close(follower)
    assert ran.returncode == 0
    assert ran.stdout.decode().split()[1] == "SUCCESS"
    for word in ("duration", "attempts", "nap", "SUCCESS"):
        assert word in screen


async def test_execute_wait_without_a_server_fails_at_once(tmp_path: Path) -> None:
    async with serving(tmp_path) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/health")).status_code == 200
    # The server stopped: its worker said so, and nothing else runs on this backend.
    config = _local_config(tmp_path)
    started = time.monotonic()
    ran = await _invoke("execute", NS, "sleep", "--wait", "--config", str(config))
    assert time.monotonic() - started < 20  # the grace a starting server gets, and no more
    assert ran.exit_code == 1
    assert "no server is running on the sqlite backend at" in ran.output
    assert str(tmp_path / "runtime.db") in ran.output
    # Nothing was created that no one would run.
    listed = await _invoke("executions", "list", "--config", str(config))
    assert listed.stdout == ""
    gone = await _invoke("execute", NS, "sleep", "--wait", "--server", url)
    assert gone.exit_code == 1
    assert f"cannot reach the server at {url}" in gone.output


def _drain(fd: int) -> str:
    """Everything written to a terminal so far."""
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload.txt"
    path.write_text("plums")
    return path
