"""Kestra's ``http()`` template function: one HTTP request, its body as the value.

``http(uri, method='GET', body=null, contentType=null, headers={})`` returns the
response body, parsed when the response says it is JSON, else as text; a status
outside 2xx fails the render with the status. It is a worker function (async
renders only), like ``kv()``: the engine's renders are pure and repeatable, so a
network call has no place there.

Bounded so that a template cannot hold a worker: the whole request (connect,
send, read) stops at :data:`TIMEOUT_SECONDS`, the body is read in chunks and
refused past :data:`MAX_BYTES` (and past what remains of the evaluation's memory
budget), and only ``http``/``https`` URIs are accepted. The time spent waiting is
not charged as CPU time (the render's meter only counts its own work).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from runtime.flow.template_values import ExpressionFailure, java_str

__all__ = ["MAX_BYTES", "TIMEOUT_SECONDS", "request"]

#: a whole request, connect to last byte
TIMEOUT_SECONDS = 10.0
#: the largest body read (a larger one fails the render: use http.Download)
MAX_BYTES = 10 * 1024 * 1024
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _body(body: Any, content_type: Any) -> tuple[bytes | None, str | None]:
    if body is None:
        return None, None if content_type is None else java_str(content_type)
    if isinstance(body, Mapping | list):
        return json.dumps(body).encode(), java_str(content_type or "application/json")
    return java_str(body).encode(), None if content_type is None else java_str(content_type)


async def request(
    uri: Any,
    method: Any = "GET",
    body: Any = None,
    content_type: Any = None,
    headers: Any = None,
    *,
    memory_left: int | None = None,
) -> Any:
    """Send the request; the parsed JSON or the text of the response."""
    timeout = TIMEOUT_SECONDS
    url = java_str(uri)
    if not url.lower().startswith(("http://", "https://")):
        raise ExpressionFailure(f"http(): the uri must be an http:// or https:// URL, got {url!r}")
    verb = java_str(method).upper()
    if verb not in _METHODS:
        raise ExpressionFailure(f"http(): unknown method {verb!r}; one of {sorted(_METHODS)}")
    if headers is not None and not isinstance(headers, Mapping):
        raise ExpressionFailure("http(): headers must be a map, e.g. {'Accept': 'text/plain'}")
    sent = {str(k): java_str(v) for k, v in (headers or {}).items()}
    content, kind = _body(body, content_type)
    if kind is not None:
        sent.setdefault("Content-Type", kind)
    limit = max(0, MAX_BYTES if memory_left is None else min(MAX_BYTES, memory_left))
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
            client.stream(verb, url, content=content, headers=sent) as response,
        ):
            if not response.is_success:
                raise ExpressionFailure(
                    f"http(): {verb} {url} answered {response.status_code} {response.reason_phrase}"
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(url, limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise _too_large(url, limit)
                chunks.append(chunk)
            data = b"".join(chunks)
            media = response.headers.get("content-type", "")
            encoding = response.encoding or "utf-8"
    except httpx.TimeoutException:
        raise ExpressionFailure(
            f"http(): {verb} {url} took longer than {timeout:g} s; the function is for quick "
            "lookups (use an io.kestra.plugin.core.http.Request task for slow calls)"
        ) from None
    except httpx.HTTPError as exc:
        raise ExpressionFailure(f"http(): {verb} {url} failed: {exc}") from None
    text = data.decode(encoding, errors="replace")
    if "json" in media.lower() and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _too_large(url: str, limit: int) -> ExpressionFailure:
    return ExpressionFailure(
        f"http(): the response of {url} is larger than {limit} bytes, the most a template "
        "reads; download it with an io.kestra.plugin.core.http.Download task instead"
    )
