"""Object stores misconfigured or failing: bad credentials, a missing bucket and an
unreachable endpoint stop the start with one error naming the setting; an endpoint
that goes away mid-upload fails that upload (and the task storing it) with an error
naming the file, and loses nothing stored before."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from azure.storage.blob.aio import BlobServiceClient

from backends.errors import Transient
from backends.storage_azure import AzureStorage
from backends.storage_gcs import GcsStorage
from backends.storage_s3 import S3Storage
from backends.testing import emulators
from runtime.config import ConfigError, load_config
from runtime.tasks.context import TaskFailure
from runtime.tasks.files import upload_files
from services.standalone import make_storage
from tests.unit.task_context import TaskContext

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.S3Server]:
    with emulators.seaweedfs(tmp_path_factory.mktemp("weed") / "data") as server:
        yield server


async def s3_bucket(server: emulators.S3Server) -> str:
    bucket = f"f-{secrets.token_hex(5)}"
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    ) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


def dead_endpoint() -> str:
    return f"http://127.0.0.1:{emulators.free_ports(1)[0]}"


# -- settings checked at start --------------------------------------------------------
@pytest.mark.asyncio
async def test_s3_wrong_credentials_name_the_settings(seaweed: emulators.S3Server) -> None:
    bucket = await s3_bucket(seaweed)
    storage = S3Storage(
        bucket,
        endpoint_url=seaweed.endpoint,
        access_key_id=seaweed.access_key,
        secret_access_key="not-the-secret",
    )
    with pytest.raises(ConfigError, match=r"refused the credentials.*AWS_SECRET_ACCESS_KEY"):
        await storage.start()


@pytest.mark.asyncio
async def test_s3_missing_bucket_names_the_setting(seaweed: emulators.S3Server) -> None:
    config = load_config(
        None,
        {
            "RUNTIME_STORAGE_TYPE": "s3",
            "RUNTIME_STORAGE_BUCKET": "no-such-bucket",
            "RUNTIME_STORAGE_ENDPOINT_URL": seaweed.endpoint,
            "RUNTIME_STORAGE_ACCESS_KEY_ID": seaweed.access_key,
            "RUNTIME_STORAGE_SECRET_ACCESS_KEY": seaweed.secret_key,
        },
    )
    storage = make_storage(config)
    with pytest.raises(ConfigError, match=r"setting `storage.bucket`.*'no-such-bucket'"):
        await storage.start()


@pytest.mark.asyncio
async def test_unreachable_endpoints_name_the_setting_quickly() -> None:
    stores = [
        S3Storage("b", endpoint_url=dead_endpoint(), access_key_id="a", secret_access_key="s"),
        GcsStorage("b", endpoint_url=dead_endpoint()),
    ]
    for storage in stores:
        began = time.monotonic()
        with pytest.raises(ConfigError, match=r"setting `storage.endpoint_url`.*cannot reach"):
            await storage.start()
        assert time.monotonic() - began < 20


@pytest.mark.asyncio
async def test_azure_credentials_each_way_and_a_missing_container(tmp_path: Path) -> None:
    with emulators.azurite(tmp_path / "azurite") as connection:
        async with BlobServiceClient.from_connection_string(connection) as service:
            await service.create_container("present")
        wrong = connection.replace(emulators.AZURITE_KEY, "d3Jvbmcta2V5LXdyb25nLWtleQ==")
        with pytest.raises(ConfigError, match="refused the credentials"):
            await AzureStorage("present", connection_string=wrong).start()
        with pytest.raises(ConfigError, match=r"setting `storage.bucket`.*'absent'"):
            await AzureStorage("absent", connection_string=connection).start()
        # The other two ways in: the account's key, and a SAS token for the container.
        endpoint = connection.split("BlobEndpoint=", 1)[1].rstrip(";")
        sas = generate_container_sas(
            emulators.AZURITE_ACCOUNT,
            "present",
            account_key=emulators.AZURITE_KEY,
            permission=ContainerSasPermissions(
                read=True, write=True, delete=True, list=True, add=True, create=True
            ),
            expiry=datetime.now(UTC) + timedelta(hours=1),
        )
        for credential in ({"account_key": emulators.AZURITE_KEY}, {"sas_token": sas}):
            storage = AzureStorage(
                "present",
                account_name=emulators.AZURITE_ACCOUNT,
                endpoint_url=endpoint,
                **credential,  # type: ignore[arg-type]
            )
            await storage.start()
            try:
                uri = await storage.put("ns", "hello.txt", b"hi")
                assert await storage.get(uri) == b"hi"
                assert await storage.list("ns") == [uri]
                assert await storage.delete(uri)
            finally:
                await storage.stop()


@pytest.mark.asyncio
async def test_gcs_missing_bucket(tmp_path: Path) -> None:
    with (
        emulators.fake_gcs(tmp_path / "gcs") as endpoint,
        pytest.raises(ConfigError, match=r"setting `storage.bucket`.*'absent'"),
    ):
        await GcsStorage("absent", endpoint_url=endpoint).start()


def test_missing_bucket_setting_and_unknown_type() -> None:
    with pytest.raises(ConfigError, match=r"`storage.bucket`.*required for the s3 storage"):
        make_storage(load_config(None, {"RUNTIME_STORAGE_TYPE": "s3"}))
    with pytest.raises(ConfigError, match=r"`storage.type`.*unknown storage 'ftp'"):
        make_storage(load_config(None, {"RUNTIME_STORAGE_TYPE": "ftp"}))


# -- the endpoint goes away mid-upload ---------------------------------------------------
async def _data(total: int, when_sent: int, event: asyncio.Event) -> AsyncIterator[bytes]:
    sent = 0
    block = hashlib.shake_256(b"x").digest(MiB)
    while sent < total:
        if sent >= when_sent:
            event.set()
            await asyncio.sleep(0.5)  # let the store go before the next part
        yield block
        sent += len(block)


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_endpoint_gone_mid_upload_loses_nothing_stored(tmp_path: Path) -> None:
    data_dir = tmp_path / "weed-data"
    port = emulators.free_ports(1)[0]
    kept = secrets.token_bytes(2 * MiB + 7)
    with emulators.seaweedfs(data_dir, s3_port=port) as server:
        bucket = await s3_bucket(server)
        storage = S3Storage(
            bucket,
            endpoint_url=server.endpoint,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
            connect_timeout=2,
        )
        await storage.start()
        try:
            kept_uri = await storage.put("ns", "kept.bin", kept)
            big_kept = await storage.put("ns", "big.bin", _data(20 * MiB, 10**12, asyncio.Event()))
            gone = asyncio.Event()

            async def pull_the_plug() -> None:
                await gone.wait()
                await asyncio.to_thread(emulators.stop_process, process_of(server))

            stopper = asyncio.create_task(pull_the_plug())
            began = time.monotonic()
            with pytest.raises(Transient, match=r"kestra:///ns/big\.bin"):
                await storage.put("ns", "big.bin", _data(40 * MiB, 16 * MiB, gone))
            assert time.monotonic() - began < 120
            await stopper
            # A worker storing an output file now fails that task run, naming the file.
            ctx = TaskContext(tmp_path, storage=storage)  # type: ignore[arg-type]
            out = tmp_path / "out.bin"
            out.write_bytes(b"result")
            with pytest.raises(TaskFailure, match=r"cannot store output file 'out\.bin'"):
                await upload_files(ctx, {"out.bin": out}, where="tasks[0]")
        finally:
            await storage.stop()
    # Back on the same port and folder: what was stored before is all there.
    with emulators.seaweedfs(data_dir, s3_port=port) as server:
        storage = S3Storage(
            bucket,
            endpoint_url=server.endpoint,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
        )
        await storage.start()
        try:
            assert await storage.get(kept_uri) == kept
            assert await storage.size(big_kept) == 20 * MiB  # the old version, whole
            assert await storage.list("ns") == [big_kept, kept_uri]
        finally:
            await storage.stop()


def process_of(server: emulators.S3Server) -> subprocess.Popen[bytes]:
    assert server.process is not None
    return server.process


def test_runtime_run_stops_with_the_setting_named(
    seaweed: emulators.S3Server, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from services.cli import cli

    env = {
        "RUNTIME_DATA_DIR": str(tmp_path),
        "RUNTIME_STORAGE_TYPE": "s3",
        "RUNTIME_STORAGE_BUCKET": "not-there",
        "RUNTIME_STORAGE_ENDPOINT_URL": seaweed.endpoint,
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
    }
    result = CliRunner().invoke(cli, ["run", "worker"], env=env)
    assert result.exit_code == 1, result.output
    assert "setting `storage.bucket`" in result.output
    assert "'not-there'" in result.output
    assert "Traceback" not in result.output
