"""An execution's files in internal storage: ``/api/v1/executions/{id}/file`` (download,
with HTTP byte ranges), ``.../file/metas`` (size) and ``.../file/preview`` (the first
lines of a text file). Every one reads through the Storage protocol, so it serves
what any worker stored, whatever the store.

Only the execution's own files are served: its FILE inputs and its tasks' output
files, the two places they are written; nothing else of the namespace's storage
(KV state files, other executions' files).
"""

from __future__ import annotations

import posixpath
import re
from typing import Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from backends.errors import NotFound
from backends.protocols import StoredFile
from runtime.tasks.files import execution_prefixes
from services.webserver.executions_api import load_execution
from services.webserver.http import (
    ApiError,
    AppState,
    json_response,
    not_found,
    q_int,
    q_str,
    state,
)

__all__ = ["routes"]

_RANGE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")
#: the most a preview reads of a file, whatever maxRows asks
PREVIEW_BYTES: Final = 1024 * 1024


async def _file(request: Request) -> tuple[AppState, StoredFile]:
    """The execution's file named by ``path``, else 400, 404 or 422."""
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    uri = q_str(request, "path")
    if uri is None:
        raise ApiError(400, "query parameter `path` is required: the kestra:/// URI of the file")
    prefix = f"kestra:///{execution.namespace}/"
    rest = uri.removeprefix(prefix)
    homes = execution_prefixes(execution.flow_id, execution.id)
    if rest == uri or not rest.startswith(homes):
        raise ApiError(
            422,
            f"{uri!r} is not a file of execution {execution.id} "
            f"(its files start {prefix}{homes[0]} or {prefix}{homes[1]})",
        )
    try:
        return app, await app.storage.stat(uri)
    except ValueError as exc:
        raise ApiError(422, f"{uri!r}: {exc}") from None
    except NotFound:
        raise not_found(f"file {uri}") from None


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single ``bytes=`` range, None for the whole file; 416 when
    it cannot be served. Several ranges at once are answered with the whole file
    (RFC 9110 allows it)."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise ApiError(416, f"range {header!r} is outside the file ({size} bytes)")
    return start, end


async def download(request: Request) -> Response:
    app, info = await _file(request)
    name = quote(posixpath.basename(info.uri))
    headers = {
        "content-disposition": f"attachment; filename*=UTF-8''{name}",
        "accept-ranges": "bytes",
    }
    try:
        span = _byte_range(request.headers.get("range"), info.size)
    except ApiError:
        return Response(
            status_code=416, headers={**headers, "content-range": f"bytes */{info.size}"}
        )
    if span is None:
        body = app.storage.open(info.uri)
        status = 200
        headers["content-length"] = str(info.size)
    else:
        start, end = span
        body = app.storage.open(info.uri, start=start, end=end)
        status = 206
        headers["content-length"] = str(end - start)
        headers["content-range"] = f"bytes {start}-{end - 1}/{info.size}"
    return StreamingResponse(
        body, status_code=status, media_type="application/octet-stream", headers=headers
    )


async def metas(request: Request) -> Response:
    """As Kestra's ``FileMetas``: the size, and here the metadata stored with it."""
    _, info = await _file(request)
    return json_response({"size": info.size, "metadata": info.metadata})


async def preview(request: Request) -> Response:
    """The first ``maxRows`` lines (100, at most 1 MiB read) of a text file."""
    app, info = await _file(request)
    max_rows = q_int(request, "maxRows", 100, 1, 10_000)
    encoding = q_str(request, "encoding") or "utf-8"
    try:
        "".encode(encoding)
    except LookupError:
        raise ApiError(422, f"unknown encoding {encoding!r}: use e.g. utf-8 or latin-1") from None
    read = bytearray()
    async for chunk in app.storage.open(info.uri, start=0, end=min(info.size, PREVIEW_BYTES)):
        read += chunk
        if read.count(b"\n") >= max_rows:
            break
    lines = bytes(read).decode(encoding, errors="replace").splitlines(keepends=True)
    shown = lines[:max_rows]
    extension = posixpath.splitext(info.uri)[1].lstrip(".")
    return json_response(
        {
            "extension": extension,
            "content": "".join(shown),
            "truncated": len(shown) < len(lines) or len(read) < info.size,
        }
    )


routes = [
    Route("/api/v1/executions/{executionId}/file", download, methods=["GET"]),
    Route("/api/v1/executions/{executionId}/file/metas", metas, methods=["GET"]),
    Route("/api/v1/executions/{executionId}/file/preview", preview, methods=["GET"]),
]
