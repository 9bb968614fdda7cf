"""Streams cut into upload parts: every byte once, in order, every part full but the
last, never an empty part (an empty last part would break a multipart upload)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from backends.storage_common.objects import _cut


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _parts(chunks: list[bytes], size: int) -> list[bytes]:
    return [part async for part in _cut(_stream(chunks), size)]


@given(st.lists(st.binary(max_size=64), max_size=30), st.integers(min_value=1, max_value=40))
def test_parts_keep_every_byte_in_order(chunks: list[bytes], size: int) -> None:
    parts = asyncio.run(_parts(chunks, size))
    assert b"".join(parts) == b"".join(chunks)
    assert all(len(part) == size for part in parts[:-1])
    assert all(part for part in parts)
    assert len(parts) == -(-len(b"".join(chunks)) // size)
