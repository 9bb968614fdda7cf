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
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import IO, Final
from urllib.parse import quote, unquote

from backends.errors import NotFound

__all__ = ["SCHEME", "LocalStorage", "parse_uri"]

SCHEME: Final = "kestra://"
_NAMESPACE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_TMP_SUFFIX: Final = ".~tmp"
_TMP_NAME: Final = re.compile(r"^\..*\.[0-9a-f]{16}\.~tmp$")
# Small chunks of a stream are gathered up to this size before one write call.
_WRITE_BUFFER: Final = 1 << 20


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a valid namespace name, else ValueError."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(
            f"invalid namespace {namespace!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter, a digit or '_' (e.g. company.team)"
        )
    return namespace


def check_path(path: str, *, allow_empty: bool = False) -> PurePosixPath:
    """``path`` as a relative path that stays inside its namespace, else ValueError.

    Empty and ``.`` segments are dropped (``a//./b`` is ``a/b``)."""
    if not isinstance(path, str):
        raise ValueError(f"storage path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise ValueError(f"storage path {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise ValueError(
            f"storage path {path!r} is absolute: give a path relative to the namespace"
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"storage path {path!r} contains '..': a path cannot leave its namespace")
    if not parts and not allow_empty:
        raise ValueError(f"storage path {path!r} is empty: name a file in the namespace")
    return PurePosixPath(*parts)


def make_uri(namespace: str, path: PurePosixPath) -> str:
    """The URI of ``path`` in ``namespace``."""
    return f"{SCHEME}/{namespace}/{quote(str(path), safe='/')}"


def parse_uri(uri: str) -> tuple[str, PurePosixPath]:
    """``(namespace, path)`` of a ``kestra:///namespace/path`` URI, else ValueError."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME + "/"):
        raise ValueError(
            f"not an internal storage URI: {uri!r}; expected kestra:///<namespace>/<path>"
        )
    rest = unquote(uri[len(SCHEME) + 1 :])
    namespace, _, path = rest.partition("/")
    return check_namespace(namespace), check_path(path)


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
    async def put(self, namespace: str, path: str, data: bytes | AsyncIterator[bytes]) -> str:
        """Store ``data`` at ``path`` in ``namespace`` (replacing it) and return its URI."""
        rel = check_path(path)
        check_namespace(namespace)
        target = self._local(namespace, rel)
        if isinstance(data, (bytes, bytearray, memoryview)):
            await asyncio.to_thread(self._write_all, target, bytes(data))
        else:
            await self._write_stream(target, data)
        return make_uri(namespace, rel)

    async def get(self, uri: str) -> bytes:
        """The whole content of the file at ``uri``; NotFound if missing."""
        target = self._local(*parse_uri(uri))
        return await asyncio.to_thread(self._read_all, target, uri)

    async def open(self, uri: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """The content of the file at ``uri`` in chunks of at most ``chunk_size`` bytes."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        target = self._local(*parse_uri(uri))
        handle = await asyncio.to_thread(self._open_read, target, uri)
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
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
        if "\x00" in prefix:
            raise ValueError(f"storage prefix {prefix!r} contains a NUL byte")
        rel_prefix = check_path(prefix, allow_empty=True)
        # Walk only the deepest folder the prefix fully names.
        folder = rel_prefix if prefix.endswith("/") else rel_prefix.parent
        base = self._local(namespace, folder)
        text_prefix = "" if str(rel_prefix) == "." else str(rel_prefix)
        if prefix.endswith("/") and text_prefix:
            text_prefix += "/"
        paths = await asyncio.to_thread(self._walk, base, self._root / namespace)
        return [
            make_uri(namespace, p) for p in sorted(paths, key=str) if str(p).startswith(text_prefix)
        ]

    async def size(self, uri: str) -> int:
        """The file's size in bytes; NotFound if missing."""
        target = self._local(*parse_uri(uri))
        return await asyncio.to_thread(self._size, target, uri)

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

    def _write_all(self, target: Path, data: bytes) -> None:
        handle, temp = self._create_temp(target)
        try:
            handle.write(data)
            self._commit(handle, temp, target)
        except BaseException:
            _discard(handle, temp)
            raise

    async def _write_stream(self, target: Path, data: AsyncIterator[bytes]) -> None:
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
    def _delete(target: Path, home: Path) -> bool:
        if not _is_regular_file(target):
            return False
        try:
            target.unlink()
        except FileNotFoundError:
            return False
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
                if _TMP_NAME.match(name) or path.is_symlink():
                    continue
                found.append(PurePosixPath(path.relative_to(home).as_posix()))
        return found


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
