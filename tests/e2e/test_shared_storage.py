"""The medium size across "hosts": webserver, executor and worker as three processes,
each with its own data folder (nothing shared on disk), on PostgreSQL and S3
(SeaweedFS). A FILE input uploaded through the API is read by a Python script on the
worker, whose output file is downloaded through the API, byte for byte."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiobotocore.session import get_session

from backends.postgres.testing import fresh_schema, server_dsn
from backends.storage_s3 import S3Storage
from backends.testing import emulators

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

FLOW = """
id: reverse
namespace: e2e.storage
inputs:
  - id: data
    type: FILE
tasks:
  - id: transform
    type: io.kestra.plugin.scripts.python.Script
    inputFiles:
      in.bin: "{{ inputs.data }}"
    outputFiles:
      - out.bin
    script: |
      data = open("in.bin", "rb").read()
      open("out.bin", "wb").write(data[::-1])
      print(f"reversed {len(data)} bytes")
"""


def runtime_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("runtime")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "services.cli", *args]


@contextmanager
def component(name: str, env: dict[str, str], home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``runtime run <name>`` with ``home`` as its data folder; stopped on the way out."""
    home.mkdir(parents=True)
    with (home / "log.txt").open("wb") as log:
        process = subprocess.Popen(
            runtime_command("run", name),
            cwd=home,
            env={**env, "RUNTIME_DATA_DIR": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        emulators.stop_process(process, grace=30)


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[emulators.S3Server]:
    with emulators.seaweedfs(tmp_path / "seaweedfs") as server:
        yield server


@pytest_asyncio.fixture
async def schema() -> AsyncIterator[str]:
    async with fresh_schema() as name:
        yield name


async def make_bucket(server: emulators.S3Server) -> str:
    bucket = f"e2e-{secrets.token_hex(4)}"
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    ) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


def logs(homes: list[Path]) -> str:
    return "\n".join(
        f"--- {home.name}:\n" + (home / "log.txt").read_text(errors="replace")[-2500:]
        for home in homes
        if (home / "log.txt").exists()
    )


@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_file_input_to_script_output_across_processes(
    tmp_path: Path, s3: emulators.S3Server, schema: str
) -> None:
    bucket = await make_bucket(s3)
    port = emulators.free_ports(1)[0]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RUNTIME_", "AWS_")) and name != "PYTHONASYNCIODEBUG"
    }
    env.update(
        RUNTIME_BACKEND_TYPE="postgres",
        RUNTIME_BACKEND_DSN=server_dsn(),
        RUNTIME_BACKEND_SCHEMA=schema,
        RUNTIME_STORAGE_TYPE="s3",
        RUNTIME_STORAGE_BUCKET=bucket,
        RUNTIME_STORAGE_ENDPOINT_URL=s3.endpoint,
        RUNTIME_STORAGE_PREFIX="shared",
        RUNTIME_WEBSERVER_PORT=str(port),
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
    )
    homes = [tmp_path / "host-web", tmp_path / "host-executor", tmp_path / "host-worker"]
    # Bytes of every value, in an order no transformation but the script's gives;
    # past one 8 MiB part, so the upload and the output file go up as multipart.
    payload = secrets.token_bytes(12 * 1024 * 1024 + 123) + bytes(range(256))
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        # The executor first: it applies the migrations the others then find done.
        for name, home in zip(("executor", "worker", "webserver"), homes[::-1], strict=True):
            stack.enter_context(component(name, env, home))
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if (await client.get("/api/v1/flows/search")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("the webserver did not answer\n" + logs(homes))
                await asyncio.sleep(0.3)
            created = await client.post(
                "/api/v1/flows", content=FLOW, headers={"content-type": "application/x-yaml"}
            )
            assert created.status_code == 200, created.text
            started = await client.post(
                "/api/v1/executions/e2e.storage/reverse",
                params={"wait": "true"},
                files={"data": ("payload.bin", payload, "application/octet-stream")},
                timeout=180,
            )
            assert started.status_code == 200, started.text + logs(homes)
            execution = started.json()
            assert execution["state"]["current"] == "SUCCESS", logs(homes)
            run = next(r for r in execution["taskRunList"] if r["taskId"] == "transform")
            uri = run["outputs"]["outputFiles"]["out.bin"]
            assert uri.startswith("kestra:///e2e.storage/reverse/executions/")
            download = await client.get(
                f"/api/v1/executions/{execution['id']}/file", params={"path": uri}
            )
            assert download.status_code == 200, download.text
            assert download.content == payload[::-1]

    # The files are in the bucket, under the prefix, and in no host's folder.
    for home in homes:
        stored = [
            p for p in home.rglob("*") if p.is_file() and p.name in ("out.bin", "payload.bin")
        ]
        assert stored == [], f"{home.name} kept files on disk: {stored}"
    storage = S3Storage(
        bucket,
        prefix="shared",
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )
    await storage.start()
    try:
        names = [u.rsplit("/", 1)[1] for u in await storage.list("e2e.storage")]
        assert sorted(names) == ["out.bin", "payload.bin"]
        assert await storage.get(execution["inputs"]["data"]) == payload
    finally:
        await storage.stop()
