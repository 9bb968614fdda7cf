"""The storage conformance suite on S3: against SeaweedFS (which enforces its
credentials) and against moto's server, each test in a bucket of its own, under a
key prefix so the layout below a prefix is exercised too."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from backends.storage_s3 import S3Storage
from backends.testing import StorageConformance
from backends.testing.emulators import S3Server


async def new_bucket(server: S3Server) -> str:
    bucket = f"test-{secrets.token_hex(6)}"
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    ) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


def storage_on(server: S3Server, bucket: str, **kw: object) -> S3Storage:
    return S3Storage(
        bucket,
        endpoint_url=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        **kw,  # type: ignore[arg-type]
    )


class TestSeaweedFS(StorageConformance):
    @pytest.fixture(autouse=True)
    def _server(self, seaweedfs_server: S3Server) -> None:
        self.server = seaweedfs_server

    async def make_storage(self, tmp_path: Path) -> S3Storage:
        return storage_on(self.server, await new_bucket(self.server), prefix="runtime/storage")


class TestMoto(StorageConformance):
    @pytest.fixture(autouse=True)
    def _server(self, moto_server: S3Server) -> None:
        self.server = moto_server

    async def make_storage(self, tmp_path: Path) -> S3Storage:
        return storage_on(self.server, await new_bucket(self.server))


class TestMotoParallelParts(StorageConformance):
    """Parts of one upload sent three at a time: the order of the file is kept."""

    @pytest.fixture(autouse=True)
    def _server(self, moto_server: S3Server) -> None:
        self.server = moto_server

    async def make_storage(self, tmp_path: Path) -> S3Storage:
        return storage_on(self.server, await new_bucket(self.server), parallel_parts=3)
