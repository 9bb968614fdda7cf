"""Internal storage in a local folder: :class:`LocalStorage`.

Layout and URIs. A file ``path`` of namespace ``company.team`` lives at
``<root>/company.team/<path>`` and is named ``kestra:///company.team/<path>``. The
namespace keeps its dots: it is exactly one folder under the root, so a URI names
its namespace without ambiguity and a namespace never contains another one's files
(Kestra spells the same file ``kestra:///company/team/<path>``; URIs are opaque to
flows, which only pass them from one task to the next). Path segments are
percent-encoded in URIs (a space is ``%20``) and decoded back.

Safety. A path can never leave its namespace: absolute paths, ``..`` segments and
NUL bytes are refused, and symbolic links inside the storage folder are never
followed (a path whose resolved location differs from its spelled location is
refused), so a link planted in a namespace folder cannot lead outside it. Each
refusal is a ValueError naming the path and the rule.

Writes are atomic: data goes to a hidden temporary file next to the target, is
flushed to disk (``fsync=True``, the default) and renamed over the target, so a
reader sees the old file or the new one, never half of one. Streams are written
and read in chunks; every file operation runs in a worker thread, off the loop.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import IO, Final

from backends.errors import NotFound
from backends.protocols import StoredFile
from backends.storage_common import (
    SCHEME,
    check_metadata,
    check_namespace,
    check_path,
    check_prefix,
    check_range,
    make_uri,
    parse_uri,
)

__all__ = ["SCHEME", "LocalStorage", "parse_uri"]

_TMP_SUFFIX: Final = ".~tmp"
_META_SUFFIX: Final = ".~meta"
# Hidden files of the storage itself: temporary files and metadata sidecars.
_HIDDEN: Final = re.compile(r"^\..*(\.[0-9a-f]{16}\.~tmp|\.~meta)$")
# Small chunks of a stream are gathered up to this size before one write call.
_WRITE_BUFFER: Final = 1 << 20


class LocalStorage:
    """The Storage protocol (backends.protocols.Storage) over a local folder."""

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        # Resolved once, so a root reached through a symlink (/tmp on some systems)
        # still compares equal to the resolved paths below it.
        self._root = Path(os.path.realpath(root))
        self._fsync = fsync

    @property
    def root(self) -> Path:
        """The folder holding one sub-folder per namespace."""
        return self._root

    # -- the Storage protocol -------------------------------------------------------
    async def start(self) -> None:
        """Create the folder; nothing to connect to."""
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)

    async def stop(self) -> None:
        pass

    async def put(
        self,
        namespace: str,
        path: str,
        data: bytes | AsyncIterator[bytes],
        *,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Store ``data`` at ``path`` in ``namespace`` (replacing it) and return its URI.

        Metadata goes to a hidden sidecar file (``.<name>.~meta``), written before the
        data is renamed into place."""
        rel = check_path(path)
        check_namespace(namespace)
        meta = check_metadata(metadata)
        target = self._local(namespace, rel)
        if isinstance(data, (bytes, bytearray, memoryview)):
            await asyncio.to_thread(self._write_all, target, bytes(data), meta)
        else:
            await self._write_stream(target, data, meta)
        return make_uri(namespace, rel)

    async def get(self, uri: str) -> bytes:
        """The whole content of the file at ``uri``; NotFound if missing."""
        target = self._local(*parse_uri(uri))
        return await asyncio.to_thread(self._read_all, target, uri)

    async def open(
        self, uri: str, chunk_size: int = 65536, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of the file at ``uri`` in chunks of at most
        ``chunk_size`` bytes."""
        check_range(chunk_size, start, end)
        target = self._local(*parse_uri(uri))
        handle = await asyncio.to_thread(self._open_read, target, uri)
        try:
            if start:
                handle.seek(start)  # a seek on a regular file does not block
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                want = chunk_size if left is None else min(chunk_size, left)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            handle.close()  # a read-only descriptor: closing never blocks

    async def exists(self, uri: str) -> bool:
        target = self._local(*parse_uri(uri))
        return await asyncio.to_thread(_is_regular_file, target)

    async def delete(self, uri: str) -> bool:
        """Delete the file; False if there was none. Empty folders left behind go too."""
        namespace, rel = parse_uri(uri)
        target = self._local(namespace, rel)
        return await asyncio.to_thread(self._delete, target, self._root / namespace)

    async def list(self, namespace: str, prefix: str = "") -> list[str]:
        """URIs of the files of ``namespace`` whose path starts with ``prefix``, sorted.

        ``prefix`` is a string prefix of the path (``logs/2024`` matches
        ``logs/2024-01.txt`` and ``logs/2024/a.txt``)."""
        check_namespace(namespace)
        text_prefix = check_prefix(prefix)
        rel_prefix = PurePosixPath(text_prefix or ".")
        # Walk only the deepest folder the prefix fully names.
        folder = rel_prefix if text_prefix.endswith("/") else rel_prefix.parent
        base = self._local(namespace, folder)
        paths = await asyncio.to_thread(self._walk, base, self._root / namespace)
        return [
            make_uri(namespace, p) for p in sorted(paths, key=str) if str(p).startswith(text_prefix)
        ]

    async def size(self, uri: str) -> int:
        """The file's size in bytes; NotFound if missing."""
        target = self._local(*parse_uri(uri))
        return await asyncio.to_thread(self._size, target, uri)

    async def stat(self, uri: str) -> StoredFile:
        """The file's size and metadata; NotFound if missing."""
        target = self._local(*parse_uri(uri))
        size, metadata = await asyncio.to_thread(self._stat, target, uri)
        return StoredFile(uri=uri, size=size, metadata=metadata)

    # -- paths ----------------------------------------------------------------------
    def _local(self, namespace: str, rel: PurePosixPath) -> Path:
        """The local path of ``rel`` in ``namespace``, refusing any symlink on the way."""
        home = self._root / namespace
        spelled = home.joinpath(*rel.parts) if rel.parts else home
        resolved = Path(os.path.realpath(spelled))
        if resolved != spelled:
            where = f"{namespace}/{rel}" if rel.parts else namespace
            if resolved != home and home not in resolved.parents:
                raise ValueError(
                    f"storage path {where!r} leads outside its namespace through a "
                    f"symbolic link (to {str(resolved)!r}); refused"
                )
            raise ValueError(
                f"storage path {where!r} goes through a symbolic link; symbolic links "
                "in the storage folder are not followed"
            )
        return spelled

    # -- blocking helpers, run in threads -----------------------------------------------
    def _create_temp(self, target: Path) -> tuple[IO[bytes], Path]:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The folders just created may not be symlinks, but check the target again
        # now that they exist (a link could have been planted meanwhile).
        if Path(os.path.realpath(target.parent)) != target.parent:
            raise ValueError(f"storage folder {str(target.parent)!r} is a symbolic link")
        temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}{_TMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        return os.fdopen(fd, "wb"), temp

    def _commit(self, handle: IO[bytes], temp: Path, target: Path) -> None:
        try:
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        finally:
            handle.close()
        os.replace(temp, target)
        if self._fsync:
            _fsync_dir(target.parent)

    def _write_meta(self, target: Path, metadata: dict[str, str]) -> None:
        """Write (or remove) the sidecar before the data lands: a reader never sees
        new data with no metadata; a crash in between leaves old data, new metadata."""
        sidecar = _sidecar(target)
        if not metadata:
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
            return
        handle, temp = self._create_temp(sidecar)
        try:
            handle.write(json.dumps(metadata, ensure_ascii=False).encode())
            self._commit(handle, temp, sidecar)
        except BaseException:
            _discard(handle, temp)
            raise

    def _write_all(self, target: Path, data: bytes, metadata: dict[str, str]) -> None:
        handle, temp = self._create_temp(target)
        try:
            handle.write(data)
            self._write_meta(target, metadata)
            self._commit(handle, temp, target)
        except BaseException:
            _discard(handle, temp)
            raise

    async def _write_stream(
        self, target: Path, data: AsyncIterator[bytes], metadata: dict[str, str]
    ) -> None:
        handle, temp = await asyncio.to_thread(self._create_temp, target)
        try:
            pending: list[bytes] = []
            size = 0
            async for chunk in data:
                pending.append(bytes(chunk))
                size += len(chunk)
                if size >= _WRITE_BUFFER:
                    await asyncio.to_thread(handle.write, b"".join(pending))
                    pending, size = [], 0
            if pending:
                await asyncio.to_thread(handle.write, b"".join(pending))
            await asyncio.to_thread(self._write_meta, target, metadata)
            await asyncio.to_thread(self._commit, handle, temp, target)
        except BaseException:
            # Cleanup must not await (we may be cancelled); unlink is one quick syscall.
            _discard(handle, temp)
            raise

    @staticmethod
    def _open_read(target: Path, uri: str) -> IO[bytes]:
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"no file at {uri}") from None
        except IsADirectoryError:
            raise NotFound(f"{uri} is a folder, not a file") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFound(f"{uri} is a folder, not a file")
        return os.fdopen(fd, "rb")

    def _read_all(self, target: Path, uri: str) -> bytes:
        with self._open_read(target, uri) as handle:
            return handle.read()

    @staticmethod
    def _size(target: Path, uri: str) -> int:
        if not _is_regular_file(target):
            raise NotFound(f"no file at {uri}")
        return target.stat().st_size

    @staticmethod
    def _stat(target: Path, uri: str) -> tuple[int, dict[str, str]]:
        if not _is_regular_file(target):
            raise NotFound(f"no file at {uri}")
        size = target.stat().st_size
        try:
            metadata = json.loads(_sidecar(target).read_bytes())
        except FileNotFoundError:
            metadata = {}
        return size, metadata

    @staticmethod
    def _delete(target: Path, home: Path) -> bool:
        if not _is_regular_file(target):
            return False
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            _sidecar(target).unlink()
        parent = target.parent
        while parent != home and home in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (or gone): stop climbing
            parent = parent.parent
        return True

    @staticmethod
    def _walk(base: Path, home: Path) -> builtins.list[PurePosixPath]:
        found: builtins.list[PurePosixPath] = []
        if not base.is_dir() or base.is_symlink():
            return found
        for folder, dirs, files in os.walk(base, followlinks=False):
            here = Path(folder)
            dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
            for name in files:
                path = here / name
                if _HIDDEN.match(name) or path.is_symlink():
                    continue
                found.append(PurePosixPath(path.relative_to(home).as_posix()))
        return found


def _sidecar(target: Path) -> Path:
    return target.with_name(f".{target.name}{_META_SUFFIX}")


def _is_regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _discard(handle: IO[bytes], temp: Path) -> None:
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(OSError):
        temp.unlink()


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder entry is on disk.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
