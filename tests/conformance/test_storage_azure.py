"""The storage conformance suite on Azure Blob, against Azurite; each test in a
container of its own."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from azure.storage.blob.aio import BlobServiceClient

from backends.storage_azure import AzureStorage
from backends.testing import StorageConformance

# azure-storage-blob reads a single-request upload into bytes before aiohttp sends it,
# and aiohttp warns about bodies over 1 MiB; the SDK's doing, not a leak of ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Sending a large body directly with raw bytes:ResourceWarning"
)


async def new_container(connection_string: str) -> str:
    name = f"test-{secrets.token_hex(6)}"
    async with BlobServiceClient.from_connection_string(connection_string) as service:
        await service.create_container(name)
    return name


class TestAzurite(StorageConformance):
    @pytest.fixture(autouse=True)
    def _server(self, azurite_connection: str) -> None:
        self.connection_string = azurite_connection

    async def make_storage(self, tmp_path: Path) -> AzureStorage:
        container = await new_container(self.connection_string)
        return AzureStorage(container, connection_string=self.connection_string, prefix="runtime")
