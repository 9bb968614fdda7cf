"""Internal storage in an Azure Blob container: :class:`AzureStorage`.

Credentials: a connection string (``AZURE_STORAGE_CONNECTION_STRING`` or the
setting), or an account name with its key or a SAS token (``endpoint_url`` then
overrides ``https://<account>.blob.core.windows.net``). Large files are staged as
blocks and committed as one block list, so a reader sees the old blob or the new
one; reads stream the download in chunks.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from backends.errors import NotFound, Transient
from backends.storage_common.objects import DEFAULT_PART_SIZE, ObjectStorage
from runtime.config import ConfigError

__all__ = ["AzureStorage"]


class AzureStorage(ObjectStorage):
    """The Storage protocol over one Azure Blob container (``bucket``)."""

    kind = "Azure Blob"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str | None = None,
        connection_string: str | None = None,
        account_name: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        endpoint_url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        parallel_parts: int = 1,
        retries: int = 3,
    ) -> None:
        super().__init__(
            bucket=bucket,
            prefix=prefix,
            part_size=part_size,
            retries=retries,
            parallel_parts=parallel_parts,
        )
        if not connection_string and not account_name:
            raise ValueError(
                "the azure storage needs credentials: set AZURE_STORAGE_CONNECTION_STRING "
                "(or `storage.connection_string`), or `storage.account_name` with "
                "`storage.account_key` or `storage.sas_token`"
            )
        self._connection_string = connection_string
        self._account_name = account_name
        # A string credential is a SAS token to the SDK; a key goes with its account.
        self._credential: Any = (
            {"account_name": account_name, "account_key": account_key} if account_key else sas_token
        )
        self.endpoint_url = endpoint_url or (
            f"https://{account_name}.blob.core.windows.net" if account_name else None
        )
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None

    @property
    def where(self) -> str:
        return f"container {self.bucket!r}"

    async def start(self) -> None:
        if self._service is not None:
            return
        options: dict[str, Any] = {
            # Our own retry loop decides (ObjectStorage._retry).
            "retry_total": 1,
            "connection_timeout": 5,
            "read_timeout": 60,
            "max_single_put_size": self.part_size,
            "max_single_get_size": 4 * 1024 * 1024,
            "max_chunk_get_size": 4 * 1024 * 1024,
        }
        if self._connection_string:
            service = BlobServiceClient.from_connection_string(self._connection_string, **options)
        else:
            assert self.endpoint_url is not None
            service = BlobServiceClient(self.endpoint_url, credential=self._credential, **options)
        self._service = service
        self._container = service.get_container_client(self.bucket)
        try:
            # A listing, not the container's properties: a container SAS may list
            # but not read properties, and a missing container fails it all the same.
            async for _ in self._container.list_blobs(results_per_page=1):
                break
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, Exception):
                raise self._setting_error(exc) from None
            raise

    async def stop(self) -> None:
        service, self._service, self._container = self._service, None, None
        if service is not None:
            await service.close()

    def _setting_error(self, exc: Exception) -> ConfigError:
        if isinstance(exc, ResourceNotFoundError):
            return ConfigError(
                f"setting `storage.bucket` (or RUNTIME_STORAGE_BUCKET): Azure Blob container "
                f"{self.bucket!r} does not exist; create it, or name an existing one"
            )
        if isinstance(exc, ClientAuthenticationError) or (
            isinstance(exc, HttpResponseError) and exc.status_code == 403
        ):
            return ConfigError(
                f"Azure Blob storage ({self.where}) refused the credentials: check "
                "AZURE_STORAGE_CONNECTION_STRING (or `storage.connection_string`, "
                "`storage.account_key`, `storage.sas_token`)"
            )
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, OSError)):
            return ConfigError(
                "setting `storage.endpoint_url` or the connection string's BlobEndpoint: "
                f"cannot reach Azure Blob storage: {exc}"
            )
        return ConfigError(f"Azure Blob storage ({self.where}): {exc}")

    @property
    def container(self) -> ContainerClient:
        if self._container is None:
            raise RuntimeError("AzureStorage is not started: call start() first")
        return self._container

    # -- primitives ----------------------------------------------------------------------
    async def _put_object(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        async with self._errors(key):
            # A file object, not bytes: aiohttp warns that a large bytes body blocks.
            await self.container.get_blob_client(key).upload_blob(
                io.BytesIO(data), length=len(data), overwrite=True, metadata=metadata
            )

    async def _begin_upload(self, key: str, metadata: dict[str, str]) -> Any:
        return None  # blocks are staged under the blob's name; the commit makes it

    async def _upload_part(
        self, key: str, upload: Any, number: int, offset: int, data: bytes, last: bool
    ) -> Any:
        block_id = base64.b64encode(f"{number:08d}".encode()).decode()
        async with self._errors(key):
            await self.container.get_blob_client(key).stage_block(
                block_id, io.BytesIO(data), length=len(data)
            )
        return block_id

    async def _complete_upload(
        self, key: str, upload: Any, receipts: list[Any], metadata: dict[str, str]
    ) -> None:
        async with self._errors(key):
            await self.container.get_blob_client(key).commit_block_list(
                [BlobBlock(block_id=block) for block in receipts], metadata=metadata
            )

    async def _abort_upload(self, key: str, upload: Any) -> None:
        pass  # uncommitted blocks are dropped by the service (after a week at most)

    async def _read(
        self, key: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        length = None if end is None else end - start
        async with self._errors(key):
            try:
                downloader = await self.container.get_blob_client(key).download_blob(
                    offset=start or None if length is None else start, length=length
                )
            except HttpResponseError as exc:
                if exc.status_code == 416:  # starts past the end: nothing to read
                    return
                raise
            async for chunk in downloader.chunks():
                yield chunk

    async def _head(self, key: str) -> tuple[int, dict[str, str]] | None:
        try:
            async with self._errors(key):
                props = await self.container.get_blob_client(key).get_blob_properties()
        except NotFound:
            return None
        return int(props.size), dict(props.metadata or {})

    async def _delete(self, key: str) -> None:
        async with self._errors(key):
            await self.container.get_blob_client(key).delete_blob()

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        async with self._errors(prefix):
            async for blob in self.container.list_blobs(name_starts_with=prefix):
                yield blob.name

    @contextlib.asynccontextmanager
    async def _errors(self, key: str) -> AsyncIterator[None]:
        try:
            yield
        except ResourceNotFoundError:
            raise NotFound(f"no blob {key!r} in {self.where}") from None
        except (ServiceRequestError, ServiceResponseError, aiohttp.ClientError, OSError) as exc:
            raise Transient(f"Azure Blob {self.where} unreachable: {exc}") from None
        except HttpResponseError as exc:
            if exc.status_code is not None and (
                exc.status_code >= 500 or exc.status_code in (408, 429)
            ):
                raise Transient(f"Azure Blob {self.where}: {exc.reason} on {key!r}") from None
            raise
        except AzureError as exc:
            raise Transient(f"Azure Blob {self.where}: {exc}") from None
