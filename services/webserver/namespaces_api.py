"""``/api/v1/namespaces``: the namespaces of the deployed flows, and each
namespace's key-value store."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.flow.durations import DurationError, parse_duration
from services.webserver.http import (
    ApiError,
    json_or_text,
    json_response,
    no_content,
    not_found,
    paged,
    paging,
    q_str,
    state,
    text_body,
)


def _with_parents(namespaces: set[str]) -> list[str]:
    out: set[str] = set()
    for namespace in namespaces:
        parts = namespace.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(out)


async def search(request: Request) -> Response:
    app = state(request)
    query = (q_str(request, "q") or "").lower()
    limit, offset = paging(request)
    names = _with_parents({r.namespace for r in await app.backend.flows.list()})
    found = [{"id": n, "disabled": False} for n in names if query in n.lower()]
    return json_response(paged(found[offset : offset + limit], len(found)))


async def get(request: Request) -> Response:
    app = state(request)
    namespace = request.path_params["namespace"]
    names = _with_parents({r.namespace for r in await app.backend.flows.list()})
    if namespace not in names:
        raise not_found(f"namespace {namespace}")
    return json_response({"id": namespace, "disabled": False})


def _kv_type(value: Any) -> str:
    """Kestra's KV type names."""
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int | float):
        return "NUMBER"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, datetime):
        return "DATETIME"
    if isinstance(value, date):
        return "DATE"
    return "JSON"


async def kv_list(request: Request) -> Response:
    app = state(request)
    entries = await app.backend.kv.list(request.path_params["namespace"])
    return json_response(
        [{"key": e.key, "updateDate": e.updated, "expirationDate": e.expires_at} for e in entries]
    )


async def kv_get(request: Request) -> Response:
    app = state(request)
    namespace, key = request.path_params["namespace"], request.path_params["key"]
    entry = await app.backend.kv.get(namespace, key)
    if entry is None:
        raise not_found(f"key {key!r} in namespace {namespace}")
    return json_response({"type": _kv_type(entry.value), "value": entry.value})


async def kv_put(request: Request) -> Response:
    """The body is the value: JSON when it parses as JSON (``"text"``, ``42``,
    ``{"a": 1}``), else the text itself. A ``ttl`` header (ISO-8601) expires it."""
    app = state(request)
    namespace, key = request.path_params["namespace"], request.path_params["key"]
    value = json_or_text(await text_body(request))
    ttl = request.headers.get("ttl")
    seconds = None
    if ttl:
        try:
            seconds = parse_duration(ttl).total_seconds()
        except DurationError:
            raise ApiError(
                400, f"header `ttl`: {ttl!r} is not an ISO-8601 duration (PT1H)"
            ) from None
        if seconds <= 0:
            raise ApiError(400, f"header `ttl`: {ttl!r} must be positive")
    await app.backend.kv.set(namespace, key, value, ttl_seconds=seconds)
    return no_content()


async def kv_delete(request: Request) -> Response:
    app = state(request)
    namespace, key = request.path_params["namespace"], request.path_params["key"]
    if not await app.backend.kv.delete(namespace, key):
        raise not_found(f"key {key!r} in namespace {namespace}")
    return no_content()


routes = [
    Route("/api/v1/namespaces/search", search, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}", get, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv", kv_list, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv/{key}", kv_get, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv/{key}", kv_put, methods=["PUT"]),
    Route("/api/v1/namespaces/{namespace}/kv/{key}", kv_delete, methods=["DELETE"]),
]
