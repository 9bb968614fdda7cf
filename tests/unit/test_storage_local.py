"""LocalStorage: round trips, streaming, listing, and every way out of a namespace refused."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backends.errors import NotFound
from backends.storage_local import LocalStorage, parse_uri

NS = "company.team"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


async def _chunks(count: int, size: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield bytes([i % 256]) * size


@pytest.mark.asyncio
async def test_bytes_round_trip(storage: LocalStorage) -> None:
    uri = await storage.put(NS, "flow/executions/e1/out.txt", b"hello")
    assert uri == "kestra:///company.team/flow/executions/e1/out.txt"
    assert await storage.get(uri) == b"hello"
    assert await storage.exists(uri)
    assert await storage.size(uri) == 5
    assert (storage.root / NS / "flow/executions/e1/out.txt").read_bytes() == b"hello"


@pytest.mark.asyncio
async def test_put_replaces_and_leaves_no_temporary_file(storage: LocalStorage) -> None:
    uri = await storage.put(NS, "a.txt", b"one")
    assert await storage.put(NS, "a.txt", b"two") == uri
    assert await storage.get(uri) == b"two"
    assert sorted(os.listdir(storage.root / NS)) == ["a.txt"]


@pytest.mark.asyncio
async def test_stream_round_trip_in_chunks(storage: LocalStorage) -> None:
    uri = await storage.put(NS, "big.bin", _chunks(40, 100_000))
    assert await storage.size(uri) == 4_000_000
    chunks = [chunk async for chunk in storage.open(uri, chunk_size=1_000_000)]
    assert [len(c) for c in chunks] == [1_000_000] * 4
    assert b"".join(chunks) == b"".join([bytes([i]) * 100_000 for i in range(40)])


@pytest.mark.asyncio
async def test_failed_stream_keeps_the_old_file(storage: LocalStorage) -> None:
    uri = await storage.put(NS, "data.bin", b"old")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new"
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        await storage.put(NS, "data.bin", broken())
    assert await storage.get(uri) == b"old"
    assert os.listdir(storage.root / NS) == ["data.bin"]


@pytest.mark.asyncio
async def test_names_with_spaces_are_percent_encoded(storage: LocalStorage) -> None:
    uri = await storage.put(NS, "my files/report 1%.csv", b"x")
    assert uri == "kestra:///company.team/my%20files/report%201%25.csv"
    assert parse_uri(uri) == (NS, parse_uri(uri)[1])
    assert str(parse_uri(uri)[1]) == "my files/report 1%.csv"
    assert await storage.get(uri) == b"x"


@pytest.mark.asyncio
async def test_list_by_prefix_and_namespace_isolation(storage: LocalStorage) -> None:
    for path in ("logs/2024-01.txt", "logs/2024/02.txt", "logs/2023.txt", "other.txt"):
        await storage.put(NS, path, b"x")
    await storage.put("company", "logs/2024-01.txt", b"other namespace")
    await storage.put("company.team.sub", "logs/2024-01.txt", b"child namespace")

    assert await storage.list(NS) == [
        "kestra:///company.team/logs/2023.txt",
        "kestra:///company.team/logs/2024-01.txt",
        "kestra:///company.team/logs/2024/02.txt",
        "kestra:///company.team/other.txt",
    ]
    assert await storage.list(NS, "logs/2024") == [
        "kestra:///company.team/logs/2024-01.txt",
        "kestra:///company.team/logs/2024/02.txt",
    ]
    assert await storage.list(NS, "logs/2024/") == ["kestra:///company.team/logs/2024/02.txt"]
    assert await storage.list(NS, "nothing/") == []
    assert await storage.list("empty.namespace") == []


@pytest.mark.asyncio
async def test_delete(storage: LocalStorage) -> None:
    uri = await storage.put(NS, "deep/down/file.txt", b"x")
    keep = await storage.put(NS, "deep/keep.txt", b"y")
    assert await storage.delete(uri) is True
    assert await storage.delete(uri) is False
    assert not await storage.exists(uri)
    assert not (storage.root / NS / "deep/down").exists()  # emptied folders go too
    assert await storage.exists(keep)


@pytest.mark.asyncio
async def test_missing_files(storage: LocalStorage) -> None:
    uri = "kestra:///company.team/none.txt"
    assert not await storage.exists(uri)
    with pytest.raises(NotFound, match=r"none\.txt"):
        await storage.get(uri)
    with pytest.raises(NotFound):
        await storage.size(uri)
    with pytest.raises(NotFound):
        [chunk async for chunk in storage.open(uri)]
    await storage.put(NS, "folder/file.txt", b"x")
    with pytest.raises(NotFound, match="folder"):
        await storage.get("kestra:///company.team/folder")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../other/secret.txt", r"contains '\.\.'"),
        ("a/../../secret.txt", r"contains '\.\.'"),
        ("..", r"contains '\.\.'"),
        ("/etc/passwd", "is absolute"),
        ("a\x00b", "NUL byte"),
        ("", "is empty"),
        ("./", "is empty"),
    ],
)
async def test_put_refuses_paths_leaving_the_namespace(
    storage: LocalStorage, path: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await storage.put(NS, path, b"x")
    assert not (storage.root.parent / "other").exists()


@pytest.mark.asyncio
@pytest.mark.parametrize("namespace", ["..", ".", "", "a/b", "/abs", "a\x00b", ".hidden"])
async def test_bad_namespaces_are_refused(storage: LocalStorage, namespace: str) -> None:
    with pytest.raises(ValueError, match="invalid namespace"):
        await storage.put(namespace, "x.txt", b"x")
    with pytest.raises(ValueError, match="invalid namespace"):
        await storage.list(namespace)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "uri",
    [
        "kestra:///company.team/../other/x.txt",
        "kestra:///company.team/%2E%2E/other/x.txt",
        "kestra:///../x.txt",
        "kestra:///company.team/a%00b",
        "kestra://company.team/x.txt",
        "file:///etc/passwd",
        "/etc/passwd",
    ],
)
async def test_uris_leaving_the_namespace_are_refused(storage: LocalStorage, uri: str) -> None:
    refusal = r"contains '\.\.'|not an internal storage URI|invalid namespace|NUL byte"
    for call in (storage.get, storage.exists, storage.delete, storage.size):
        with pytest.raises(ValueError, match=refusal):
            await call(uri)
    with pytest.raises(ValueError, match=refusal):
        [chunk async for chunk in storage.open(uri)]


@pytest.mark.asyncio
async def test_symlink_planted_in_the_namespace_is_not_followed(
    storage: LocalStorage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    await storage.put(NS, "placeholder.txt", b"x")
    (storage.root / NS / "escape").symlink_to(outside)
    (storage.root / NS / "link.txt").symlink_to(outside / "secret.txt")

    with pytest.raises(ValueError, match="outside its namespace"):
        await storage.get("kestra:///company.team/escape/secret.txt")
    with pytest.raises(ValueError, match="outside its namespace"):
        await storage.get("kestra:///company.team/link.txt")
    with pytest.raises(ValueError, match="outside its namespace"):
        await storage.put(NS, "escape/planted.txt", b"x")
    with pytest.raises(ValueError, match="outside its namespace"):
        await storage.delete("kestra:///company.team/link.txt")
    assert not (outside / "planted.txt").exists()
    assert (outside / "secret.txt").read_bytes() == b"secret"
    # Listing skips the links instead of walking through them.
    assert await storage.list(NS) == ["kestra:///company.team/placeholder.txt"]


@pytest.mark.asyncio
async def test_symlink_to_another_namespace_is_not_followed(storage: LocalStorage) -> None:
    await storage.put("other", "secret.txt", b"secret")
    await storage.put(NS, "placeholder.txt", b"x")
    (storage.root / NS / "shortcut").symlink_to(storage.root / "other")
    with pytest.raises(ValueError, match="outside its namespace"):
        await storage.get("kestra:///company.team/shortcut/secret.txt")


@pytest.mark.asyncio
async def test_symlinked_namespace_folder_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    storage.root.mkdir(parents=True)
    (storage.root / "linked.ns").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        await storage.put("linked.ns", "x.txt", b"x")
    assert list(outside.iterdir()) == []


@pytest.mark.asyncio
async def test_root_reached_through_a_symlink_works(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    storage = LocalStorage(tmp_path / "alias")
    uri = await storage.put(NS, "a.txt", b"x")
    assert await storage.get(uri) == b"x"
    assert (real / NS / "a.txt").exists()
