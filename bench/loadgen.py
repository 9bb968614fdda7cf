"""A lean HTTP/1.1 load generator for the throughput measure.

The generator shares the machine's cores with the server it measures; httpx costs
about a millisecond of CPU per request, which at a few hundred requests a second is
most of a core taken from the server. This one writes a request prepared once on
keep-alive connections (asyncio streams) and reads the answer's status line, headers
and body, parsing only the execution's id: a few tens of microseconds per request.
Requests that find every connection busy open another one (up to ``max_connections``)
rather than wait, so the schedule stays open-loop.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import msgspec


class _Answer(msgspec.Struct):
    id: str | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


class Poster:
    """POSTs ``{}`` to one URL; :meth:`post` returns the answer's execution id, or
    None when it was not a 2xx with one. Use as an async context manager."""

    def __init__(self, url: str, *, max_connections: int = 512, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"plain http URLs only: {url}")
        self._host = parts.hostname
        self._port = parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._request = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        ).encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open = 0
        self._max = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._timeout = timeout

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

    async def post(self) -> str | None:
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            try:
                async with asyncio.timeout(self._timeout):
                    writer.write(self._request)
                    status, body, keep = await _read_answer(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                writer.close()
                return None
            if keep:
                self._idle.append((reader, writer))
            else:
                writer.close()
        if not 200 <= status < 300:
            return None
        try:
            return _decode_answer(body).id
        except msgspec.DecodeError:
            return None


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection stays open) of one HTTP/1.1 answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    keep = True
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length), keep
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, bytes(body), keep
        body += chunk[:-2]
