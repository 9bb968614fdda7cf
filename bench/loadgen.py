"""A lean HTTP/1.1 load generator for the throughput measure.

The generator shares the machine's cores with the server it measures; httpx costs
about a millisecond of CPU per request, which at a few hundred requests a second is
most of a core taken from the server. This one writes a request prepared once on
keep-alive connections (asyncio streams) and reads the answer's status line, headers
and body, parsing only the execution's id: a few tens of microseconds per request.
Requests that find every connection busy open another one (up to ``max_connections``)
rather than wait, so the schedule stays open-loop.

As a real client does, it does not reuse a connection idle for longer than the
server keeps one (:data:`IDLE_EXPIRY_S`), and a request written on a kept-alive
connection that closes before any byte of an answer is sent again on a new one (the
server had closed it; the request never reached the application). Every request
that still gets no execution is counted by cause (:class:`Outcome`).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import msgspec

#: a keep-alive connection idle this long is closed rather than reused: the server
#: closes idle ones itself (uvicorn after 5 s, its ``timeout_keep_alive``), and a
#: request written on a connection the server is closing gets no answer
IDLE_EXPIRY_S = 4.0


class _Answer(msgspec.Struct):
    id: str | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode


class Outcome(msgspec.Struct, frozen=True):
    """What one request got: the execution's id, or why not (``cause``)."""

    id: str | None = None
    #: None when accepted; else ``http <status>``, ``connection reset`` (closed
    #: before a whole answer came), ``timeout``, ``connect failed``, ``bad answer``
    cause: str | None = None
    #: it was written on a kept-alive connection the server had closed, and sent again
    #: on a new one (as a real client does when no byte of an answer came)
    retried: bool = False


class _StaleConnection(Exception):
    """A reused connection closed with no byte of an answer: the request never reached
    the application (the server had closed the idle connection), so it may be sent again."""


class Poster:
    """POSTs ``{}`` to one URL; :meth:`post` returns an :class:`Outcome`. Use as an
    async context manager."""

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
        #: kept-alive connections and when each was last used (most recent last)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._timeout = timeout
        #: connections closed unused for IDLE_EXPIRY_S
        self.expired = 0

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()

    def _reuse(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            reader, writer, used = self._idle.pop()
            if now - used < IDLE_EXPIRY_S and not reader.at_eof():
                return reader, writer
            writer.close()
            self.expired += 1
        return None

    async def post(self) -> Outcome:
        async with self._slots:
            try:
                async with asyncio.timeout(self._timeout):
                    kept = self._reuse()
                    if kept is not None:
                        try:
                            return await self._exchange(*kept)
                        except _StaleConnection:
                            outcome = await self._fresh()
                            return msgspec.structs.replace(outcome, retried=True)
                    return await self._fresh()
            except TimeoutError:
                return Outcome(cause="timeout")

    async def _fresh(self) -> Outcome:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            return Outcome(cause="connect failed")
        try:
            return await self._exchange(reader, writer)
        except _StaleConnection:
            return Outcome(cause="connection reset")

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Outcome:
        answered = False
        try:
            writer.write(self._request)
            head = await reader.readuntil(b"\r\n\r\n")
            answered = True
            status, body, keep = await _read_answer(head, reader)
        except (OSError, asyncio.IncompleteReadError) as exc:
            writer.close()
            partial = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            if not answered and not partial:
                raise _StaleConnection from exc
            return Outcome(cause="connection reset")
        except (ValueError, asyncio.LimitOverrunError):
            writer.close()
            return Outcome(cause="bad answer")
        except BaseException:
            writer.close()  # a timeout or a cancel: the answer may still come, unread
            raise
        if keep:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        if not 200 <= status < 300:
            return Outcome(cause=f"http {status}")
        try:
            execution_id = _decode_answer(body).id
        except msgspec.DecodeError:
            return Outcome(cause="bad answer")
        return Outcome(id=execution_id) if execution_id else Outcome(cause="bad answer")


async def _read_answer(head: bytes, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection stays open) of one HTTP/1.1 answer whose
    head (status line and headers) was read."""
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
