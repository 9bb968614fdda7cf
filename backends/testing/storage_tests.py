"""The storage conformance suite: every internal storage (local folder, S3, GCS, Azure
Blob) passes these same tests.

Usage, in ``tests/conformance/test_storage_<store>.py``::

    class TestMyStorage(StorageConformance):
        async def make_storage(self, tmp_path):
            return MyStorage(...)   # not started; the suite starts and stops it

A store that cannot pass a test yet lists it in ``known_gaps`` (name -> reason): the
test then runs as ``xfail(strict=True)``.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from backends.errors import NotFound
from backends.protocols import Storage

NS = "company.team"
MiB = 1024 * 1024

#: paths no storage may accept, each for a reason named in the id
BAD_PATHS = {
    "parent": "../escape.txt",
    "parent_inside": "a/../../escape.txt",
    "absolute": "/etc/passwd",
    "nul": "a\x00b.txt",
    "control": "a\nb.txt",
    "backslash": "..\\escape.txt",
    "encoded_slash": "..%2Fescape.txt",
    "encoded_backslash": "a%5c..%5cb",
    "encoded_nul": "a%00b",
    "empty": "",
    "dots_only": "./.",
    "long_name": "x" * 256,
    "long_path": "/".join(["y" * 200] * 5),
}
#: URIs no storage may resolve
BAD_URIS = {
    "other_scheme": "file:///etc/passwd",
    "no_namespace": "kestra:///",
    "parent": "kestra:///company.team/../other/secret.txt",
    "encoded_parent": "kestra:///company.team/%2E%2E/other/secret.txt",
    "encoded_slash": "kestra:///company.team/a%2F..%2F..%2Fsecret.txt",
    "bad_namespace": "kestra:///../etc/passwd",
    "nul": "kestra:///company.team/a%00b",
    "long_name": "kestra:///company.team/" + "x" * 300,
}


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every offset of a MiB (catches misplaced parts)."""
    block = hashlib.shake_256(f"block-{seed}".encode()).digest(MiB)
    whole, rest = divmod(size, MiB)
    return block * whole + block[:rest]


async def stream(data: bytes, chunk: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), chunk):
        yield data[at : at + chunk]


async def generated(total: int, chunk: int = MiB) -> AsyncIterator[bytes]:
    """``total`` bytes made on the fly, never held whole."""
    block = hashlib.shake_256(b"generated").digest(chunk)
    sent = 0
    number = 0
    while sent < total:
        piece = number.to_bytes(8, "big") + block[8 : min(chunk, total - sent)]
        piece = piece[: total - sent]
        sent += len(piece)
        number += 1
        yield piece


async def generated_digest(total: int, chunk: int = MiB) -> str:
    digest = hashlib.sha256()
    async for piece in generated(total, chunk):
        digest.update(piece)
    return digest.hexdigest()


class StorageConformance:
    """Every storage conformance test; subclass it with a ``Test...`` name."""

    known_gaps: ClassVar[Mapping[str, str]] = {}
    #: a multipart upload happens past this size (a store's part size)
    large: ClassVar[int] = 12 * MiB

    async def make_storage(self, tmp_path: Path) -> Any:
        """A new storage (not started) over an empty namespace space."""
        raise NotImplementedError(f"{type(self).__name__} must override make_storage(tmp_path)")

    @pytest_asyncio.fixture
    async def storage(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[Storage]:
        reason = self.known_gaps.get(request.function.__name__)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
        storage = await self.make_storage(tmp_path)
        await storage.start()
        try:
            yield storage
        finally:
            await storage.stop()

    # -- round trips ---------------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_bytes_round_trip(self, storage: Storage) -> None:
        uri = await storage.put(NS, "flow/executions/e1/out.txt", b"hello")
        assert uri == "kestra:///company.team/flow/executions/e1/out.txt"
        assert await storage.get(uri) == b"hello"
        assert await storage.exists(uri)
        assert await storage.size(uri) == 5
        info = await storage.stat(uri)
        assert (info.uri, info.size, info.metadata) == (uri, 5, {})

    @pytest.mark.asyncio
    async def test_empty_files(self, storage: Storage) -> None:
        uri = await storage.put(NS, "empty.bin", b"")
        assert await storage.get(uri) == b""
        assert await storage.size(uri) == 0
        assert [c async for c in storage.open(uri)] == []
        uri2 = await storage.put(NS, "empty-stream.bin", stream(b"", 10))
        assert await storage.exists(uri2)
        assert await storage.size(uri2) == 0

    @pytest.mark.asyncio
    async def test_put_overwrites(self, storage: Storage) -> None:
        uri = await storage.put(NS, "a.txt", b"first version")
        assert await storage.put(NS, "a.txt", b"two") == uri
        assert await storage.get(uri) == b"two"
        assert await storage.size(uri) == 3
        big = pattern(self.large, seed=1)
        await storage.put(NS, "a.txt", stream(big, 300_001))
        assert await storage.size(uri) == len(big)
        await storage.put(NS, "a.txt", b"small again")
        assert await storage.get(uri) == b"small again"
        assert await storage.list(NS) == [uri]

    @pytest.mark.asyncio
    async def test_stream_round_trip_in_bounded_chunks(self, storage: Storage) -> None:
        # Odd chunk sizes across part boundaries: parts must be regrouped exactly.
        data = pattern(self.large + 12345, seed=2)
        uri = await storage.put(NS, "big.bin", stream(data, 777_777))
        assert await storage.size(uri) == len(data)
        chunks = [chunk async for chunk in storage.open(uri, chunk_size=1_000_000)]
        assert max(len(c) for c in chunks) <= 1_000_000
        assert b"".join(chunks) == data
        assert await storage.get(uri) == data

    @pytest.mark.asyncio
    async def test_names_with_spaces_and_unicode(self, storage: Storage) -> None:
        uri = await storage.put(NS, "my files/report 1%.csv", b"x")
        assert uri == "kestra:///company.team/my%20files/report%201%25.csv"
        assert await storage.get(uri) == b"x"
        uri2 = await storage.put(NS, "données/été.txt", b"y")
        assert await storage.get(uri2) == b"y"
        assert await storage.list(NS, "données/") == [uri2]

    # -- ranges and metadata -------------------------------------------------------------
    @pytest.mark.asyncio
    async def test_ranges(self, storage: Storage) -> None:
        data = pattern(3 * MiB + 17, seed=3)
        uri = await storage.put(NS, "ranged.bin", data)

        async def read(**kw: Any) -> bytes:
            return b"".join([c async for c in storage.open(uri, chunk_size=65536, **kw)])

        assert await read(start=10, end=20) == data[10:20]
        assert await read(start=MiB - 5, end=2 * MiB + 5) == data[MiB - 5 : 2 * MiB + 5]
        assert await read(start=3 * MiB) == data[3 * MiB :]
        assert await read(start=5, end=5) == b""
        assert await read(start=len(data) - 1, end=len(data) + 100) == data[-1:]
        assert await read(start=len(data) + 10) == b""
        with pytest.raises(ValueError, match="range"):
            await read(start=20, end=10)
        with pytest.raises(ValueError, match="range"):
            await read(start=-1)

    @pytest.mark.asyncio
    async def test_metadata(self, storage: Storage) -> None:
        meta = {"content_type": "text/csv", "filename": "été 2024, n°1.csv"}
        uri = await storage.put(NS, "meta.csv", b"a,b", metadata=meta)
        assert (await storage.stat(uri)).metadata == meta
        big = await storage.put(NS, "meta-big.bin", stream(pattern(self.large), MiB), metadata=meta)
        assert (await storage.stat(big)).metadata == meta
        await storage.put(NS, "meta.csv", b"a,b,c")  # an overwrite replaces metadata too
        assert (await storage.stat(uri)).metadata == {}
        for bad in ({"Content-Type": "x"}, {"1st": "x"}, {"ok": "y" * 3000}):
            with pytest.raises(ValueError, match="metadata"):
                await storage.put(NS, "meta-bad.csv", b"x", metadata=bad)
        assert not await storage.exists("kestra:///company.team/meta-bad.csv")

    # -- missing files, deletes, listings ------------------------------------------------
    @pytest.mark.asyncio
    async def test_missing_file(self, storage: Storage) -> None:
        uri = "kestra:///company.team/nothing/here.txt"
        assert not await storage.exists(uri)
        assert await storage.delete(uri) is False
        with pytest.raises(NotFound, match=r"here\.txt"):
            await storage.get(uri)
        with pytest.raises(NotFound, match=r"here\.txt"):
            await storage.size(uri)
        with pytest.raises(NotFound, match=r"here\.txt"):
            await storage.stat(uri)
        with pytest.raises(NotFound, match=r"here\.txt"):
            async for _ in storage.open(uri):
                pass
        with pytest.raises(NotFound, match=r"here\.txt"):
            async for _ in storage.open(uri, start=3, end=3):
                pass

    @pytest.mark.asyncio
    async def test_delete(self, storage: Storage) -> None:
        keep = await storage.put(NS, "dir/keep.txt", b"k")
        uri = await storage.put(NS, "dir/sub/gone.txt", b"g")
        assert await storage.delete(uri) is True
        assert not await storage.exists(uri)
        assert await storage.delete(uri) is False
        assert await storage.list(NS) == [keep]
        assert await storage.get(keep) == b"k"

    @pytest.mark.asyncio
    async def test_list_by_prefix_and_namespace_isolation(self, storage: Storage) -> None:
        for path in ("logs/2024-01.txt", "logs/2024/02.txt", "logs/2023.txt", "other.txt"):
            await storage.put(NS, path, b"x")
        await storage.put("company", "team/logs/2024-01.txt", b"x")
        await storage.put("company.team2", "logs/2024-01.txt", b"x")
        base = "kestra:///company.team/"
        assert await storage.list(NS) == [
            base + p for p in ("logs/2023.txt", "logs/2024-01.txt", "logs/2024/02.txt", "other.txt")
        ]
        assert await storage.list(NS, "logs/2024") == [
            base + "logs/2024-01.txt",
            base + "logs/2024/02.txt",
        ]
        assert await storage.list(NS, "logs/2024/") == [base + "logs/2024/02.txt"]
        assert await storage.list(NS, "logs//2024/") == [base + "logs/2024/02.txt"]
        assert await storage.list(NS, "nothing/") == []
        assert await storage.list("company") == ["kestra:///company/team/logs/2024-01.txt"]
        assert await storage.list("empty.namespace") == []

    # -- safety --------------------------------------------------------------------------
    @pytest.mark.asyncio
    @pytest.mark.parametrize("path", list(BAD_PATHS.values()), ids=list(BAD_PATHS))
    async def test_bad_paths_are_refused(self, storage: Storage, path: str) -> None:
        with pytest.raises(ValueError, match="storage path"):
            await storage.put(NS, path, b"x")
        with pytest.raises(ValueError, match="storage path"):
            await storage.put(NS, path, stream(b"x", 1))
        assert await storage.list(NS) == []

    @pytest.mark.asyncio
    @pytest.mark.parametrize("uri", list(BAD_URIS.values()), ids=list(BAD_URIS))
    async def test_bad_uris_are_refused(self, storage: Storage, uri: str) -> None:
        await storage.put("other", "secret.txt", b"s")
        for call in (storage.get, storage.exists, storage.delete, storage.size, storage.stat):
            with pytest.raises(ValueError, match=r"storage|namespace"):
                await call(uri)
        with pytest.raises(ValueError, match=r"storage|namespace"):
            async for _ in storage.open(uri):
                pass
        assert await storage.get("kestra:///other/secret.txt") == b"s"

    @pytest.mark.asyncio
    @pytest.mark.parametrize("namespace", ["", "../x", "a/b", ".hidden", "a\x00b", "n" * 101])
    async def test_bad_namespaces_are_refused(self, storage: Storage, namespace: str) -> None:
        with pytest.raises(ValueError, match="namespace"):
            await storage.put(namespace, "a.txt", b"x")
        with pytest.raises(ValueError, match="namespace"):
            await storage.list(namespace)

    @pytest.mark.asyncio
    async def test_failed_stream_keeps_the_old_file(self, storage: Storage) -> None:
        uri = await storage.put(NS, "data.bin", b"old")
        big = pattern(self.large, seed=4)

        async def broken() -> AsyncIterator[bytes]:
            async for chunk in stream(big, MiB):
                yield chunk
            raise RuntimeError("source died")

        with pytest.raises(RuntimeError, match="source died"):
            await storage.put(NS, "data.bin", broken())
        assert await storage.get(uri) == b"old"
        with pytest.raises(RuntimeError, match="source died"):
            await storage.put(NS, "new.bin", broken())
        assert await storage.list(NS) == [uri]

    # -- large files ---------------------------------------------------------------------
    @pytest.mark.slow
    @pytest.mark.asyncio
    async def test_200_mb_streams_with_bounded_memory(self, storage: Storage) -> None:
        total = 200 * MiB
        expected = await generated_digest(total)
        tracemalloc.start()
        try:
            uri = await storage.put(NS, "huge.bin", generated(total))
            _, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            digest = hashlib.sha256()
            size = 0
            async for chunk in storage.open(uri, chunk_size=MiB):
                assert len(chunk) <= MiB
                digest.update(chunk)
                size += len(chunk)
            _, get_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert size == total
        assert digest.hexdigest() == expected
        # A few parts in flight (8 MiB each, and the driver's copies of the one being
        # sent), never the file: a whole copy would be 200 MiB.
        # (and each part sent in parallel holds its own).
        limit = 64 * MiB + (getattr(storage, "parallel_parts", 1) - 1) * 16 * MiB
        assert put_peak < limit, f"put held {put_peak / MiB:.0f} MiB"
        assert get_peak < 32 * MiB, f"read held {get_peak / MiB:.0f} MiB"

    @pytest.mark.asyncio
    async def test_a_reader_may_stop_early(self, storage: Storage) -> None:
        uri = await storage.put(NS, "partly.bin", pattern(3 * MiB, seed=5))
        for _ in range(20):  # a leaked response per early stop would exhaust a pool
            async for chunk in storage.open(uri, chunk_size=1000):
                # "at most" chunk_size: a network read may hand over less
                assert 0 < len(chunk) <= 1000
                break
        assert await storage.get(uri) == pattern(3 * MiB, seed=5)
