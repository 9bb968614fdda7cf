"""Internal storage in a Google Cloud Storage bucket: :class:`GcsStorage`.

On gcloud-aio-storage, which holds the credentials (a service-account file:
``credentials_file`` or ``GOOGLE_APPLICATION_CREDENTIALS``; otherwise the machine's
default credentials) and makes the small calls. Large files go up as one resumable
upload sent part by part (the library's own resumable upload reads the whole file
first); reads stream the response with a Range header. ``endpoint_url`` points at
another server (an emulator such as fake-gcs-server); without credentials it is
then used unauthenticated, as emulators expect.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
from gcloud.aio.storage import Storage as GcsClient

from backends.errors import NotFound, Transient
from backends.storage_common.objects import DEFAULT_PART_SIZE, ObjectStorage
from runtime.config import ConfigError

__all__ = ["GcsStorage"]


class GcsStorage(ObjectStorage):
    """The Storage protocol over one GCS bucket."""

    kind = "GCS"
    parts_in_any_order = False  # a resumable upload takes its bytes in order

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str | None = None,
        endpoint_url: str | None = None,
        credentials_file: str | None = None,
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
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self._credentials_file = credentials_file
        self._anonymous = endpoint_url is not None and credentials_file is None
        self._session: aiohttp.ClientSession | None = None
        self._client: GcsClient | None = None

    @property
    def where(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint_url or 'GCS'}"

    async def start(self) -> None:
        if self._client is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=60)
        )
        self._client = GcsClient(
            service_file=self._credentials_file,
            session=self._session,  # type: ignore[arg-type]  # its alias of aiohttp's
            api_root=self.endpoint_url,
            api_is_dev=self._anonymous if self.endpoint_url else None,
        )
        try:
            # A listing, not the bucket's metadata: object roles (Storage Object
            # Admin) may list but not read the bucket.
            await self._client.list_objects(self.bucket, params={"maxResults": "1"})
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, Exception):
                raise self._setting_error(exc) from None
            raise

    async def stop(self) -> None:
        client, self._client = self._client, None
        session, self._session = self._session, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        if session is not None:
            await session.close()

    def _setting_error(self, exc: Exception) -> ConfigError:
        status = getattr(exc, "status", None)
        if status == 404:
            return ConfigError(
                f"setting `storage.bucket` (or RUNTIME_STORAGE_BUCKET): GCS bucket "
                f"{self.bucket!r} does not exist at {self.endpoint_url or 'GCS'}; create it, "
                "or name an existing one"
            )
        if status in (401, 403):
            return ConfigError(
                f"GCS storage ({self.where}) refused the credentials: check "
                "GOOGLE_APPLICATION_CREDENTIALS (or `storage.credentials_file`) and that the "
                "account may use this bucket"
            )
        if isinstance(exc, (aiohttp.ClientConnectionError, OSError, TimeoutError)):
            return ConfigError(
                f"setting `storage.endpoint_url` (or RUNTIME_STORAGE_ENDPOINT_URL): cannot "
                f"reach GCS at {self.endpoint_url or 'GCS'}: {exc}"
            )
        return ConfigError(f"GCS storage ({self.where}): {exc}")

    @property
    def client(self) -> GcsClient:
        if self._client is None:
            raise RuntimeError("GcsStorage is not started: call start() first")
        return self._client

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "GcsStorage is not started"
        return self._session

    async def _auth(self) -> dict[str, str]:
        if self._anonymous:
            return {}
        token = await self.client.token.get()
        return {"Authorization": f"Bearer {token}"}

    def _upload_url(self) -> str:
        root = self.endpoint_url or "https://storage.googleapis.com"
        return f"{root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"

    # -- primitives ----------------------------------------------------------------------
    async def _put_object(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        async with self._errors(key):
            await self.client.upload(
                self.bucket,
                key,
                data,
                content_type="application/octet-stream",
                metadata={"metadata": metadata} if metadata else None,
                force_resumable_upload=False,
                timeout=120,
            )

    async def _begin_upload(self, key: str, metadata: dict[str, str]) -> Any:
        body = json.dumps({"name": key, "metadata": metadata})
        headers = {**await self._auth(), "Content-Type": "application/json; charset=UTF-8"}
        async with (
            self._errors(key),
            self.session.post(
                self._upload_url(),
                params={"uploadType": "resumable", "name": key},
                data=body,
                headers=headers,
            ) as answer,
        ):
            answer.raise_for_status()
            return answer.headers["Location"]

    async def _upload_part(
        self, key: str, upload: Any, number: int, offset: int, data: bytes, last: bool
    ) -> Any:
        total = str(offset + len(data)) if last else "*"
        headers = {
            **await self._auth(),
            "Content-Range": f"bytes {offset}-{offset + len(data) - 1}/{total}",
        }
        async with (
            self._errors(key),
            self.session.put(
                upload, data=io.BytesIO(data), headers=headers, allow_redirects=False
            ) as answer,
        ):
            # 308 "resume incomplete": the part is in, more are expected.
            if answer.status != 308:
                answer.raise_for_status()
        return number

    async def _complete_upload(
        self, key: str, upload: Any, receipts: list[Any], metadata: dict[str, str]
    ) -> None:
        pass  # the last part, sent with the total size, completed the upload

    async def _abort_upload(self, key: str, upload: Any) -> None:
        async with self.session.delete(upload, headers=await self._auth()):
            pass

    async def _read(
        self, key: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        headers: dict[str, str] = {}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async with self._errors(key):
            try:
                stream = await self.client.download_stream(self.bucket, key, headers=headers)
            except aiohttp.ClientResponseError as exc:
                if exc.status == 416:  # starts past the end: nothing to read
                    return
                raise
            async with stream:
                while chunk := await stream.read(max(chunk_size, 65536)):
                    yield chunk

    async def _head(self, key: str) -> tuple[int, dict[str, str]] | None:
        try:
            async with self._errors(key):
                meta = await self.client.download_metadata(self.bucket, key)
        except NotFound:
            return None
        return int(meta.get("size", 0)), dict(meta.get("metadata") or {})

    async def _delete(self, key: str) -> None:
        async with self._errors(key):
            await self.client.delete(self.bucket, key)

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            params = {"prefix": prefix, "maxResults": "1000"}
            if token:
                params["pageToken"] = token
            async with self._errors(prefix):
                page = await self.client.list_objects(self.bucket, params=params)
            for item in page.get("items") or ():
                yield item["name"]
            token = page.get("nextPageToken")
            if not token:
                return

    @contextlib.asynccontextmanager
    async def _errors(self, key: str) -> AsyncIterator[None]:
        try:
            yield
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                raise NotFound(f"no object {key!r} in {self.where}") from None
            if exc.status >= 500 or exc.status in (408, 429):
                raise Transient(f"GCS {self.where}: {exc.status} on {key!r}") from None
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Transient(f"GCS {self.where} unreachable: {exc!r}") from None
