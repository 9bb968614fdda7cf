"""``/api/v1/namespaces``: the namespaces of the deployed flows, and each
namespace's key-value store."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.protocols import KVEntry
from runtime.flow.durations import DurationError, parse_duration
from services.webserver.http import (
    NAMESPACE_OPS,
    ApiError,
    AppState,
    Filters,
    json_body,
    json_or_text,
    json_response,
    namespace_matcher,
    no_content,
    not_found,
    paged,
    paging,
    q_str,
    state,
    text_body,
)
from services.webserver.tenants import tenant_path_used


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
    filters = Filters(request, {"q": ("EQUALS", "CONTAINS"), "namespace": NAMESPACE_OPS})
    queries = [query, *(q.lower() for q in filters.values("q"))]
    in_namespace = namespace_matcher(request, filters)
    found = [
        _namespace_json(n)
        for n in names
        if all(q in n.lower() for q in queries) and in_namespace(n)
    ]
    return json_response(paged(found[offset : offset + limit], len(found)))


async def get(request: Request) -> Response:
    app = state(request)
    namespace = request.path_params["namespace"]
    names = _with_parents({r.namespace for r in await app.backend.flows.list()})
    if namespace not in names:
        raise not_found(f"namespace {namespace}")
    return json_response(_namespace_json(namespace))


def _namespace_json(namespace: str) -> dict[str, Any]:
    # `deleted`: Kestra 1.x's field; `disabled`: the old one, kept
    return {"id": namespace, "disabled": False, "deleted": False}


async def _known_namespaces(app: AppState) -> list[str]:
    return _with_parents({r.namespace for r in await app.backend.flows.list()})


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


def kv_entry_json(entry: KVEntry) -> dict[str, Any]:
    """A key's description, in Kestra 1.x's field names (one revision of each key)."""
    return {
        "namespace": entry.namespace,
        "key": entry.key,
        "revision": 1,
        "creationDate": entry.updated,
        "updateDate": entry.updated,
        "expirationDate": entry.expires_at,
    }


async def kv_list(request: Request) -> Response:
    app = state(request)
    entries = await app.backend.kv.list(request.path_params["namespace"])
    if tenant_path_used(request):
        return json_response([kv_entry_json(e) for e in entries])
    return json_response(
        [{"key": e.key, "updateDate": e.updated, "expirationDate": e.expires_at} for e in entries]
    )


async def kv_inheritance(request: Request) -> Response:
    """The keys of the namespace and of its parents: the nearest one of a key wins."""
    app = state(request)
    parts = request.path_params["namespace"].split(".")
    found: dict[str, KVEntry] = {}
    for depth in range(len(parts), 0, -1):
        for entry in await app.backend.kv.list(".".join(parts[:depth])):
            found.setdefault(entry.key, entry)
    return json_response([kv_entry_json(e) for e in found.values()])


#: the filters of a search over every namespace's keys
KV_FILTERS = {"namespace": NAMESPACE_OPS, "q": ("EQUALS", "CONTAINS"), "key": ("EQUALS",)}


async def kv_search(request: Request) -> Response:
    """The keys of every namespace the server knows (those of the flows, their parents,
    and a namespace the filters name exactly), filtered and paged."""
    app = state(request)
    filters = Filters(request, KV_FILTERS)
    limit, offset = paging(request)
    in_namespace = namespace_matcher(request, filters)
    namespaces = set(await _known_namespaces(app))
    namespaces.update(f.value for f in filters.of("namespace") if f.operation == "EQUALS")
    queries = [q.lower() for q in filters.values("q")]
    keys = filters.values("key")
    found = []
    for namespace in sorted(namespaces):
        if not in_namespace(namespace):
            continue
        for entry in await app.backend.kv.list(namespace):
            if all(q in entry.key.lower() for q in queries) and (not keys or entry.key in keys):
                found.append(entry)
    return json_response(
        paged([kv_entry_json(e) for e in found[offset : offset + limit]], len(found))
    )


class KeysRequest(msgspec.Struct, frozen=True):
    keys: list[str]


async def kv_delete_many(request: Request) -> Response:
    """The keys deleted among those given (a missing one is no error)."""
    app = state(request)
    namespace = request.path_params["namespace"]
    body = await json_body(request, KeysRequest)
    deleted = [key for key in body.keys if await app.backend.kv.delete(namespace, key)]
    return json_response({"keys": deleted})


async def kv_get(request: Request) -> Response:
    app = state(request)
    namespace, key = request.path_params["namespace"], request.path_params["key"]
    entry = await app.backend.kv.get(namespace, key)
    if entry is None:
        raise not_found(f"key {key!r} in namespace {namespace}")
    detail: dict[str, Any] = {"type": _kv_type(entry.value), "value": entry.value}
    if tenant_path_used(request):
        detail.update(revision=1, updated=entry.updated)
    return json_response(detail)


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
    if tenant_path_used(request):
        return json_response(True)  # Kestra 1.x answers whether the key was deleted
    return no_content()


routes = [
    Route("/api/v1/namespaces/search", search, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}", get, methods=["GET"]),
    Route("/api/v1/kv", kv_search, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv", kv_list, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv", kv_delete_many, methods=["DELETE"]),
    Route("/api/v1/namespaces/{namespace}/kv/inheritance", kv_inheritance, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv/{key}", kv_get, methods=["GET"]),
    Route("/api/v1/namespaces/{namespace}/kv/{key}", kv_put, methods=["PUT"]),
    Route("/api/v1/namespaces/{namespace}/kv/{key}", kv_delete, methods=["DELETE"]),
]
