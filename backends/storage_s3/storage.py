"""Internal storage in an S3 bucket: :class:`S3Storage` (aiobotocore).

Works with AWS and S3-compatible stores (MinIO, SeaweedFS, moto): ``endpoint_url``
points elsewhere than AWS, and then path-style addressing is the default
(``http://host/bucket/key``: such stores rarely have per-bucket host names).
Credentials come from the settings or, when not given, from botocore's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, instance roles).
Large files go up as multipart uploads, one part at a time; reads stream the
response body. Request checksums are sent only when the API requires them: several
S3-compatible stores refuse the newer default ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from backends.errors import NotFound, Transient
from backends.storage_common.objects import DEFAULT_PART_SIZE, ObjectStorage
from runtime.config import ConfigError

__all__ = ["S3Storage"]

_MISSING_KEY = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_BUCKET = frozenset({"NoSuchBucket"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}
)


class S3Storage(ObjectStorage):
    """The Storage protocol over one S3 bucket."""

    kind = "S3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        path_style: bool | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        parallel_parts: int = 1,
        retries: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            bucket=bucket,
            prefix=prefix,
            part_size=part_size,
            retries=retries,
            parallel_parts=parallel_parts,
        )
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        style = path_style if path_style is not None else endpoint_url is not None
        self._config = AioConfig(
            s3={"addressing_style": "path" if style else "auto"},
            # Our own retry loop decides (ObjectStorage._retry); botocore's would
            # multiply it. One retry of its own covers a connection closed while idle.
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    @property
    def where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint_url or 'AWS'}"

    # -- life ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        session = get_session()
        self._client = await stack.enter_async_context(
            session.create_client(
                "s3",
                region_name=self.region or "us-east-1",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=self._config,
            )
        )
        self._stack = stack
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, Exception):
                raise self._setting_error(exc) from None
            raise

    async def stop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _setting_error(self, exc: Exception) -> ConfigError:
        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"S3 storage ({self.where}): no credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or the settings `storage.access_key_id` and "
                "`storage.secret_access_key`"
            )
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in _MISSING_KEY | _MISSING_BUCKET:
                return ConfigError(
                    f"setting `storage.bucket` (or RUNTIME_STORAGE_BUCKET): S3 bucket "
                    f"{self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}; "
                    "create it, or name an existing one"
                )
            if code in _BAD_CREDENTIALS:
                return ConfigError(
                    f"S3 storage ({self.where}) refused the credentials ({code}): check "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or `storage.access_key_id`/"
                    "`storage.secret_access_key`, and that they may use this bucket"
                )
            return ConfigError(f"S3 storage ({self.where}): {exc}")
        if isinstance(exc, (BotoConnectionError, HTTPClientError, aiohttp.ClientError, OSError)):
            return ConfigError(
                f"setting `storage.endpoint_url` (or RUNTIME_STORAGE_ENDPOINT_URL): cannot "
                f"reach S3 at {self.endpoint_url or 'AWS'}: {exc}; check the address and "
                "that the store is running"
            )
        return ConfigError(f"S3 storage ({self.where}): {exc}")

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Storage is not started: call start() first")
        return self._client

    # -- primitives ----------------------------------------------------------------------
    async def _put_object(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        async with self._errors(key):
            await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, Metadata=_to_s3(metadata)
            )

    async def _begin_upload(self, key: str, metadata: dict[str, str]) -> Any:
        async with self._errors(key):
            answer = await self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata=_to_s3(metadata)
            )
        return answer["UploadId"]

    async def _upload_part(
        self, key: str, upload: Any, number: int, offset: int, data: bytes, last: bool
    ) -> Any:
        async with self._errors(key):
            answer = await self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=data
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _complete_upload(
        self, key: str, upload: Any, receipts: list[Any], metadata: dict[str, str]
    ) -> None:
        async with self._errors(key):
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": receipts},
            )

    async def _abort_upload(self, key: str, upload: Any) -> None:
        async with self._errors(key):
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)

    async def _read(
        self, key: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        extra: dict[str, str] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async with self._errors(key):
            try:
                answer = await self.client.get_object(Bucket=self.bucket, Key=key, **extra)
            except ClientError as exc:
                if _code(exc) == "InvalidRange":  # starts past the end: nothing to read
                    return
                raise
            body = answer["Body"]
            try:
                while chunk := await body.read(max(chunk_size, 65536)):
                    yield chunk
            finally:
                body.close()

    async def _head(self, key: str) -> tuple[int, dict[str, str]] | None:
        try:
            async with self._errors(key):
                answer = await self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return None
        return int(answer["ContentLength"]), _from_s3(answer.get("Metadata") or {})

    async def _delete(self, key: str) -> None:
        async with self._errors(key):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        async with self._errors(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents") or ():
                    yield item["Key"]

    @contextlib.asynccontextmanager
    async def _errors(self, key: str) -> AsyncIterator[None]:
        """botocore's errors as the backend's: NotFound, Transient, or a clear error."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _MISSING_KEY:
                raise NotFound(f"no object {key!r} in {self.where}") from None
            if code in _MISSING_BUCKET:
                raise Transient(f"S3 {self.where}: the bucket is gone ({code})") from None
            if status >= 500 or status in (408, 429) or code in ("SlowDown", "RequestTimeout"):
                raise Transient(f"S3 {self.where}: {code} on {key!r}") from None
            raise
        except (BotoConnectionError, HTTPClientError, ReadTimeoutError, aiohttp.ClientError) as exc:
            raise Transient(f"S3 {self.where} unreachable: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise Transient(f"S3 {self.where} unreachable: {exc}") from None
        except BotoCoreError as exc:
            raise Transient(f"S3 {self.where}: {exc}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# Metadata keys are sent with '-' for '_': proxies (nginx) and some S3-compatible
# servers drop header names holding '_'. Our keys never hold '-', so it comes back.
def _to_s3(metadata: dict[str, str]) -> dict[str, str]:
    return {key.replace("_", "-"): value for key, value in metadata.items()}


def _from_s3(metadata: dict[str, str]) -> dict[str, str]:
    return {key.lower().replace("-", "_"): value for key, value in metadata.items()}
