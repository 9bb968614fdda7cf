"""The Storage protocol over an object store, written once: :class:`ObjectStorage`.

A driver (S3, GCS, Azure Blob) implements a handful of primitives on keys: put a
small object, a multipart upload in parts, a ranged streaming read, head, delete and
list. This class maps URIs to keys, checks every path, cuts streams into parts,
retries what can be retried and gives every error the protocol's types.

Layout. The file ``path`` of namespace ``company.team`` is the object
``<prefix><namespace>/<path>``: the same tree as the local storage folder, so a
folder can be copied into a bucket (or back) as is, and a namespace is exactly one
key prefix (see docs/architecture.md, "Internal storage").

Memory. A stream is cut into parts of ``part_size`` bytes; a few parts' worth is in
memory at once (the one being sent and the driver's copies of it, the next, read
ahead to know whether the current one is the last, and the one being gathered):
about 50 MiB with 8 MiB parts, whatever the file's size. Reads stream the response
body in chunks.

Retries. A call that fails with Transient (the store unreachable, a 5xx, a timeout)
is retried ``retries`` times with a doubling delay: whole small objects, each part
of a multipart upload (a part is in memory, so sending it again is safe), heads,
deletes and listings. A read is retried only until its first byte went out. A
stream handed to ``put`` cannot be read twice, so a failed upload of it aborts and
raises Transient naming the file: the caller opens its source again.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any, Final, TypeVar, cast
from urllib.parse import quote, unquote

from backends.errors import NotFound, Transient
from backends.protocols import StoredFile
from backends.storage_common.paths import (
    check_metadata,
    check_namespace,
    check_path,
    check_prefix,
    check_range,
    make_uri,
    parse_uri,
)

__all__ = ["DEFAULT_PART_SIZE", "ObjectStorage", "normalize_prefix"]

T = TypeVar("T")

#: S3 wants parts of 5 MiB at least (but the last); GCS multiples of 256 KiB
DEFAULT_PART_SIZE: Final = 8 * 1024 * 1024
_MIN_PART_SIZE: Final = 5 * 1024 * 1024


def normalize_prefix(prefix: str | None) -> str:
    """A key prefix as ``a/b/`` (or empty), else ValueError."""
    if not prefix:
        return ""
    text = check_prefix(prefix.strip("/") + "/")
    return text if text != "/" else ""


class ObjectStorage(abc.ABC):
    """The Storage protocol over a driver's primitives; subclass per store."""

    #: the store's name in messages ("S3", "GCS", "Azure Blob")
    kind: str = "object store"
    #: parts of one upload sent at once: 1 by default (against the emulators on one
    #: host, 2 gained nothing and held one part more); worth raising against a
    #: distant store, where each part waits a round trip
    parallel_parts: int = 1
    #: whether the store takes parts out of order (a GCS resumable upload does not)
    parts_in_any_order: bool = True

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        retries: int = 3,
        retry_delay: float = 0.2,
        parallel_parts: int = 1,
    ) -> None:
        if part_size < _MIN_PART_SIZE or part_size % (256 * 1024):
            raise ValueError(
                f"storage part size {part_size}: use a multiple of 256 KiB of 5 MiB or more"
            )
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.part_size = part_size
        self._retries = retries
        self._retry_delay = retry_delay
        if parallel_parts < 1:
            raise ValueError(f"parallel parts {parallel_parts}: send at least one at a time")
        self.parallel_parts = parallel_parts if self.parts_in_any_order else 1

    # -- what a driver implements ------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and check the bucket and the credentials (ConfigError naming the
        setting otherwise)."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def _put_object(self, key: str, data: bytes, metadata: dict[str, str]) -> None: ...

    @abc.abstractmethod
    async def _begin_upload(self, key: str, metadata: dict[str, str]) -> Any:
        """Start a multipart upload; its handle."""

    @abc.abstractmethod
    async def _upload_part(
        self, key: str, upload: Any, number: int, offset: int, data: bytes, last: bool
    ) -> Any:
        """Send part ``number`` (from 1) starting at byte ``offset``; its receipt."""

    @abc.abstractmethod
    async def _complete_upload(
        self, key: str, upload: Any, receipts: builtins.list[Any], metadata: dict[str, str]
    ) -> None: ...

    @abc.abstractmethod
    async def _abort_upload(self, key: str, upload: Any) -> None: ...

    @abc.abstractmethod
    def _read(self, key: str, start: int, end: int | None, chunk_size: int) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` (``end`` None: to the end); NotFound if missing.
        Chunks may be of any size; the caller cuts them."""

    @abc.abstractmethod
    async def _head(self, key: str) -> tuple[int, dict[str, str]] | None:
        """Size and raw metadata, or None if there is no such object."""

    @abc.abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> AsyncIterator[str]:
        """Every key starting with ``prefix``."""

    # -- keys ------------------------------------------------------------------------
    def key_of(self, namespace: str, rel: PurePosixPath) -> str:
        """The object key of ``rel`` in ``namespace``."""
        return f"{self.prefix}{namespace}/{rel}"

    def _key_of_uri(self, uri: str) -> str:
        return self.key_of(*parse_uri(uri))

    # -- the Storage protocol ----------------------------------------------------------
    async def put(
        self,
        namespace: str,
        path: str,
        data: bytes | AsyncIterator[bytes],
        *,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Store ``data`` at ``path`` (replacing it) and return its URI."""
        rel = check_path(path)
        check_namespace(namespace)
        meta = {k: quote(v, safe="") for k, v in check_metadata(metadata).items()}
        key = self.key_of(namespace, rel)
        uri = make_uri(namespace, rel)
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= self.part_size:
            whole = bytes(data)
            await self._retry(f"store {uri}", lambda: self._put_object(key, whole, meta))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            await self._put_stream(key, uri, _one(bytes(data)), meta)
        else:
            await self._put_stream(key, uri, data, meta)
        return uri

    async def get(self, uri: str) -> bytes:
        """The whole file (use ``open`` for large ones)."""
        return b"".join([chunk async for chunk in self.open(uri, chunk_size=1 << 20)])

    async def open(
        self, uri: str, chunk_size: int = 65536, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of the file in chunks of at most ``chunk_size``."""
        check_range(chunk_size, start, end)
        key = self._key_of_uri(uri)
        if end is not None and end == start:
            if await self._retry(f"read {uri}", lambda: self._head(key)) is None:
                raise NotFound(f"no file at {uri}")
            return
        delay = self._retry_delay
        for attempt in range(self._retries + 1):
            sent = False
            # Closed at once when the reader stops early: the response goes back to
            # the connection pool now, not when the garbage collector gets to it.
            reader = cast(AsyncGenerator[bytes, None], self._read(key, start, end, chunk_size))
            try:
                async with contextlib.aclosing(reader):
                    async for chunk in reader:
                        for at in range(0, len(chunk), chunk_size):
                            sent = True
                            yield chunk[at : at + chunk_size]
                return
            except NotFound:
                raise NotFound(f"no file at {uri}") from None
            except Transient as exc:
                if sent or attempt == self._retries:
                    raise Transient(f"{self.kind}: cannot read {uri}: {exc}") from None
            await asyncio.sleep(delay)
            delay *= 2

    async def exists(self, uri: str) -> bool:
        key = self._key_of_uri(uri)
        return await self._retry(f"check {uri}", lambda: self._head(key)) is not None

    async def delete(self, uri: str) -> bool:
        """Delete the file; False if there was none."""
        key = self._key_of_uri(uri)
        if await self._retry(f"check {uri}", lambda: self._head(key)) is None:
            return False
        await self._retry(f"delete {uri}", lambda: self._delete(key))
        return True

    async def list(self, namespace: str, prefix: str = "") -> builtins.list[str]:
        """URIs of the namespace's files whose path starts with ``prefix``, sorted."""
        check_namespace(namespace)
        text_prefix = check_prefix(prefix)
        home = f"{self.prefix}{namespace}/"

        async def collect() -> builtins.list[str]:
            return [key async for key in self._list(home + text_prefix)]

        keys = await self._retry(f"list {namespace}/{text_prefix}", collect)
        uris: builtins.list[str] = []
        for key in sorted(keys):
            try:
                rel = check_path(key[len(home) :])
            except ValueError:
                continue  # not written through this class (a folder marker, a foreign key)
            if str(rel) == key[len(home) :]:
                uris.append(make_uri(namespace, rel))
        return uris

    async def size(self, uri: str) -> int:
        return (await self.stat(uri)).size

    async def stat(self, uri: str) -> StoredFile:
        key = self._key_of_uri(uri)
        found = await self._retry(f"check {uri}", lambda: self._head(key))
        if found is None:
            raise NotFound(f"no file at {uri}")
        size, raw = found
        return StoredFile(uri=uri, size=size, metadata={k: unquote(v) for k, v in raw.items()})

    # -- streams and retries -------------------------------------------------------------
    async def _put_stream(
        self, key: str, uri: str, data: AsyncIterator[bytes], metadata: dict[str, str]
    ) -> None:
        parts = _cut(data, self.part_size)
        first = await anext(parts, None)
        second = await anext(parts, None) if first is not None else None
        if second is None:  # small enough for one request, which is then retryable
            whole = first or b""
            await self._retry(f"store {uri}", lambda: self._put_object(key, whole, metadata))
            return
        upload = await self._retry(f"store {uri}", lambda: self._begin_upload(key, metadata))
        sending: builtins.list[asyncio.Task[Any]] = []
        try:
            offset = 0
            current: bytes | None = first
            upcoming: bytes | None = second
            while current is not None:
                # Bounded: the next part is read only once a slot is free.
                await _wait_below(sending, self.parallel_parts)
                number = len(sending) + 1
                send = functools.partial(
                    self._upload_part, key, upload, number, offset, current, upcoming is None
                )
                sending.append(
                    asyncio.create_task(
                        self._retry(f"store {uri} (part {number})", send),
                        name=f"storage: part {number} of {uri}",
                    )
                )
                offset += len(current)
                current = upcoming
                upcoming = await anext(parts, None) if current is not None else None
            receipts = [await task for task in sending]
            await self._retry(
                f"store {uri}", lambda: self._complete_upload(key, upload, receipts, metadata)
            )
        except BaseException:
            for task in sending:
                task.cancel()
            # An abandoned upload costs storage until the bucket's lifecycle rule
            # removes it: abort, shielded (we may be cancelled), and keep the error.
            with contextlib.suppress(BaseException):  # the upload's own error is the one
                await asyncio.shield(self._abort_after(sending, key, upload))
            raise

    async def _abort_after(
        self, sending: builtins.list[asyncio.Task[Any]], key: str, upload: Any
    ) -> None:
        await asyncio.gather(*sending, return_exceptions=True)
        await self._abort_upload(key, upload)

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self._retry_delay
        for attempt in range(self._retries + 1):
            try:
                return await call()
            except Transient as exc:
                if attempt == self._retries:
                    raise Transient(
                        f"{self.kind}: cannot {what} after {attempt + 1} attempts: {exc}"
                    ) from None
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")


async def _wait_below(tasks: list[asyncio.Task[Any]], limit: int) -> None:
    """Until fewer than ``limit`` of ``tasks`` run; the error of a failed one is raised."""
    while True:
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        running = [task for task in tasks if not task.done()]
        if len(running) < limit:
            return
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)


async def _cut(data: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """``data`` regrouped in pieces of exactly ``size`` bytes (the last one shorter).

    Chunks are joined once per part (one copy; none more when they add up to the
    part size exactly, the usual case with power-of-two chunks)."""
    pending: list[bytes] = []
    held = 0
    async for chunk in data:
        if not chunk:
            continue
        pending.append(bytes(chunk))
        held += len(chunk)
        if held < size:
            continue
        joined = b"".join(pending)
        pending, held = [], 0
        for at in range(0, len(joined) - size + 1, size):
            yield joined if len(joined) == size else joined[at : at + size]
        rest = len(joined) % size
        if rest:
            pending, held = [joined[-rest:]], rest
    if pending:
        yield b"".join(pending)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
