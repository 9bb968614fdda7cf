"""The webserver as a component of the server (uvicorn on a real socket), and the
remote client and CLI commands that use it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from backends.sqlite import SqliteBackend
from backends.storage_local import LocalStorage
from runtime.config import Config, WebserverConfig
from runtime.flow.inputs import InputError
from services.cli import cli
from services.remote_client import RemoteClient, RemoteError
from services.standalone import Server
from tests.services.server_helpers import settings
from tests.webserver.helpers import NS, YAML, flow

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

FILE = flow(
    "file",
    """  - id: say
    type: io.kestra.plugin.core.log.Log
    message: "{{ inputs.who }} sent {{ read(inputs.data) }}"
""",
    "inputs:\n  - id: who\n    type: STRING\n  - id: data\n    type: FILE\n",
)
SLEEP = flow(
    "sleep", "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT1S\n"
)
WIDE = flow(
    "wide",
    """  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: "{{ range(1, 300) }}"
    concurrencyLimit: 4
    tasks:
      - id: item
        type: io.kestra.plugin.core.debug.Return
        format: "{{ taskrun.value }} padding padding padding padding padding padding"
""",
)
LONG = flow(
    "long", "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT60S\n"
)


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[str]:
    base = settings()
    config = Config(
        executor=base.executor,
        worker=base.worker,
        liveness=base.liveness,
        webserver=WebserverConfig(port=0, poll_seconds=0.05, shutdown_seconds=2.0),
    )
    server = Server(
        config,
        components=("executor", "worker", "webserver"),
        backend=SqliteBackend(tmp_path / "runtime.db", synchronous="NORMAL"),
        storage=LocalStorage(tmp_path / "storage"),
        watch=False,
    )
    async with server:
        assert server.webserver is not None
        url = f"http://127.0.0.1:{server.webserver.port}"
        async with httpx.AsyncClient(base_url=url) as client:
            for source in (FILE, SLEEP, LONG, WIDE):
                response = await client.post("/api/v1/flows", content=source, headers=YAML)
                assert response.status_code == 200, response.text
        yield url


async def test_remote_client_executes_with_a_file_waits_and_reads_logs(tmp_path: Path) -> None:
    data = tmp_path / "payload.txt"
    data.write_text("42 apples")
    async with serving(tmp_path) as url, RemoteClient(url) as client:
        execution = await client.execute(NS, "file", {"who": "Ada", "data": f"@{data}"})
        done = await client.wait(execution.id)
        assert done.state.current.value == "SUCCESS"
        logs = [e.message async for e in client.logs(execution.id)]
        assert "Ada sent 42 apples" in logs
        followed = [e.message async for e in client.logs(execution.id, follow=True)]
        assert followed == logs
        with pytest.raises(LookupError, match="not found"):
            await client.execute(NS, "nope", {})
        with pytest.raises(InputError, match="who"):
            await client.execute(NS, "file", {"data": f"@{data}"})
        with pytest.raises(LookupError):
            await client.get("nope")


async def test_cli_execute_and_logs_against_a_server(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "payload.txt"
    data.write_text("pears")
    async with serving(tmp_path) as url:
        args = ["execute", NS, "file", "--input", "who=Bo", "--input", f"data=@{data}"]
        result = await asyncio.to_thread(
            runner.invoke, cli, [*args, "--wait", "--json", "--server", url]
        )
        assert result.exit_code == 0, result.output
        execution = json.loads(result.stdout)
        assert execution["state"]["current"] == "SUCCESS"
        logs = await asyncio.to_thread(
            runner.invoke, cli, ["logs", execution["id"], "--follow", "--server", url]
        )
        assert logs.exit_code == 0, logs.output
        assert "Bo sent pears" in logs.output
        missing = await asyncio.to_thread(
            runner.invoke, cli, ["execute", NS, "nope", "--server", url]
        )
        assert missing.exit_code == 1
        assert "flow web.nope not found" in missing.output
    gone = await asyncio.to_thread(runner.invoke, cli, ["logs", "x", "--server", url])
    assert gone.exit_code == 1
    assert "cannot reach the server" in gone.output


async def test_a_slow_follower_does_not_hold_up_the_server(tmp_path: Path) -> None:
    async with serving(tmp_path) as url, httpx.AsyncClient(base_url=url) as client:
        started = (await client.post(f"/api/v1/executions/{NS}/sleep")).json()
        async with client.stream("GET", f"/api/v1/executions/{started['id']}/follow") as stream:
            # The follower reads nothing while the execution runs to its end; others
            # are served meanwhile.
            async with httpx.AsyncClient(base_url=url) as other:
                for _ in range(5):
                    assert (await other.get("/health")).status_code == 200
                done = await other.post(f"/api/v1/executions/{NS}/sleep?wait=true")
                assert done.json()["state"]["current"] == "SUCCESS"
            body = (await stream.aread()).decode()
        states = [
            json.loads(line[5:])["state"]["current"]
            for line in body.splitlines()
            if line.startswith("data:")
        ]
        assert states[0] == "CREATED"
        assert states[-1] == "SUCCESS"


async def test_a_follower_that_reads_nothing_blocks_only_itself(tmp_path: Path) -> None:
    """Hundreds of task runs make each event large: unread, the stream fills the
    socket's buffers and the server's writes to it wait; the rest is served."""
    async with serving(tmp_path) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = (await client.post(f"/api/v1/executions/{NS}/wide")).json()
        async with client.stream("GET", f"/api/v1/executions/{started['id']}/follow") as stream:
            async with httpx.AsyncClient(base_url=url, timeout=60) as other:
                done = await other.post(f"/api/v1/executions/{NS}/sleep?wait=true")
                assert done.json()["state"]["current"] == "SUCCESS"
                wide = await other.get(f"/api/v1/executions/{started['id']}")
                assert wide.status_code == 200
            states: list[str] = []
            events = 0
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    events += 1
                    state = json.loads(line[5:])["state"]["current"]
                    if not states or states[-1] != state:
                        states.append(state)
        final = (await client.get(f"/api/v1/executions/{started['id']}")).json()
        assert final["state"]["current"] == "SUCCESS"
        assert len(final["taskRunList"]) == 301  # the ForEach and its 300 values
        assert states == [h["state"] for h in final["state"]["histories"]]
        assert events > 2, events


async def test_stopping_the_server_ends_open_follows(tmp_path: Path) -> None:
    async with serving(tmp_path) as url:
        client = httpx.AsyncClient(base_url=url, timeout=30)
        started = (await client.post(f"/api/v1/executions/{NS}/long")).json()
        stream_cm = client.stream("GET", f"/api/v1/executions/{started['id']}/follow")
        stream = await stream_cm.__aenter__()
        assert stream.status_code == 200
        reading = asyncio.create_task(stream.aread())
        await asyncio.sleep(0.2)
        assert not reading.done()
    # leaving `serving` stopped the server gracefully: the follow has ended
    body = await asyncio.wait_for(reading, 10)
    assert b"CREATED" in body
    await stream_cm.__aexit__(None, None, None)
    await client.aclose()


async def test_runtime_run_webserver_serves_until_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RUNTIME_DATA_DIR": str(tmp_path),
        "RUNTIME_WEBSERVER_PORT": "0",
        "RUNTIME_LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "run",
        "webserver",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await process.stdout.readline()).decode()
                assert line, "the process ended before listening"
                found = re.search(r"http://127\.0\.0\.1:\d+", line)
                if "webserver.listening" in line and found:
                    url = found.group(0)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).json() == {"status": "UP"}
            assert (await client.get("/api/v1/flows/search")).json()["total"] == 0
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.stdout.read()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_errors_of_the_remote_client_do_not_show_the_password(tmp_path: Path) -> None:
    """The --server URL carries basic-auth credentials: an error naming the server
    would print the password to the terminal (and to whatever logs it)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://admin:s3cr3t-pw@127.0.0.1:{port}"
    async with RemoteClient(url) as client:
        with pytest.raises(RemoteError) as refused:
            await client.get("x")
    assert "s3cr3t-pw" not in str(refused.value)
    assert f"admin:***@127.0.0.1:{port}" in str(refused.value)
    runner = CliRunner()
    gone = await asyncio.to_thread(runner.invoke, cli, ["logs", "x", "--server", url])
    assert gone.exit_code == 1
    assert "cannot reach the server" in gone.output
    assert "s3cr3t-pw" not in gone.output
