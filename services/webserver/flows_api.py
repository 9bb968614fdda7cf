"""``/api/v1/flows``: create from YAML, update (a new revision), delete, get (JSON or
the YAML source), list, search, revisions, validate, enable and disable."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any

import msgspec
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.protocols import FlowRecord
from runtime.flow.loader import FlowError
from runtime.flow.model import Flow
from runtime.flow.parse import check_text, parse_flow
from services.webserver.http import (
    NAMESPACE_OPS,
    ApiError,
    Filters,
    flow_problems,
    json_body,
    json_response,
    namespace_matcher,
    no_content,
    not_found,
    paged,
    paging,
    q_bool,
    q_int,
    q_labels,
    q_str,
    state,
    text_body,
)
from services.webserver.tenants import DEFAULT_TENANT

YAML = "application/x-yaml"


# libyaml's loader when PyYAML has it: ten times faster than the pure-Python one
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SourceLoader(_SafeLoader):  # type: ignore[misc]
    """Reads a flow's YAML as Kestra shows it in JSON: timestamps stay text."""


_SourceLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
}


def flow_json(record: FlowRecord, *, source: bool = False) -> dict[str, Any]:
    """A revision as Kestra's API shows a flow: the YAML's fields, plus the revision
    (and the YAML itself when ``source``)."""
    try:
        data = yaml.load(record.source, Loader=_SourceLoader)
    except yaml.YAMLError:
        data = None
    out: dict[str, Any] = msgspec.to_builtins(data) if isinstance(data, dict) else {}
    out.update(
        id=record.id,
        namespace=record.namespace,
        revision=record.revision,
        deleted=record.deleted,
        disabled=bool(out.get("disabled", False)),
        updated=record.updated,
        # Kestra 1.x: drafts (none here) and the tenant
        draft=False,
        tenantId=DEFAULT_TENANT,
    )
    labels = out.get("labels")
    if isinstance(labels, dict):
        # as Kestra shows them whatever form the YAML gives: a list of key and value
        out["labels"] = [{"key": str(k), "value": _text(v)} for k, v in labels.items()]
    if source:
        out["source"] = record.source
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


async def flows_json(records: Iterable[FlowRecord], *, source: bool = False) -> list[Any]:
    """``flow_json`` of each record, in a thread: YAML parsing costs milliseconds a
    flow, which a page of a thousand flows would take from every other request."""
    return await asyncio.to_thread(lambda: [flow_json(r, source=source) for r in records])


async def parse_or_422(source: str) -> Flow:
    """The flow, parsed in a thread (a body may be megabytes of YAML: seconds of
    parsing the event loop would otherwise spend away from every other request)."""
    try:
        return await asyncio.to_thread(parse_flow, source)
    except FlowError as exc:
        raise invalid_flow(exc) from None


def invalid_flow(exc: FlowError) -> ApiError:
    problems = flow_problems(exc.problems)
    first = problems[0]
    return ApiError(
        422,
        f"invalid flow: {first['message']} (line {first['line']}, column {first['column']})"
        + (f", and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""),
        problems,
    )


async def _record(request: Request, namespace: str, flow_id: str) -> FlowRecord:
    record = await state(request).backend.flows.get(namespace, flow_id)
    if record is None:
        raise not_found(f"flow {namespace}.{flow_id}")
    return record


async def create(request: Request) -> Response:
    source = await text_body(request)
    flow = await parse_or_422(source)
    store = state(request).backend.flows
    if await store.get(flow.namespace, flow.id) is not None:
        raise ApiError(
            409,
            f"flow {flow.namespace}.{flow.id} already exists: update it with "
            f"PUT /api/v1/flows/{flow.namespace}/{flow.id}",
        )
    record = await store.deploy(flow.namespace, flow.id, source)
    return json_response((await flows_json([record], source=True))[0])


async def update(request: Request) -> Response:
    namespace, flow_id = request.path_params["namespace"], request.path_params["id"]
    source = await text_body(request)
    await _record(request, namespace, flow_id)
    flow = await parse_or_422(source)
    if (flow.namespace, flow.id) != (namespace, flow_id):
        raise ApiError(
            422,
            f"the flow's YAML is {flow.namespace}.{flow.id}, the path {namespace}.{flow_id}: "
            "a flow's namespace and id cannot change (create the new flow instead)",
        )
    record = await state(request).backend.flows.deploy(namespace, flow_id, source)
    return json_response((await flows_json([record], source=True))[0])


async def delete(request: Request) -> Response:
    namespace, flow_id = request.path_params["namespace"], request.path_params["id"]
    if not await state(request).backend.flows.delete(namespace, flow_id):
        raise not_found(f"flow {namespace}.{flow_id}")
    return no_content()


async def get(request: Request) -> Response:
    namespace, flow_id = request.path_params["namespace"], request.path_params["id"]
    revision = q_int(request, "revision", 0, lo=0) or None
    record = await state(request).backend.flows.get(namespace, flow_id, revision)
    if record is None:
        which = f" revision {revision}" if revision else ""
        raise not_found(f"flow {namespace}.{flow_id}{which}")
    if YAML in request.headers.get("accept", ""):
        return Response(record.source, media_type=YAML)
    return json_response((await flows_json([record], source=q_bool(request, "source")))[0])


async def by_namespace(request: Request) -> Response:
    namespace = request.path_params["namespace"]
    records = await state(request).backend.flows.list(namespace)
    return json_response(await flows_json(r for r in records if r.namespace == namespace))


#: the filters a flow search takes (Kestra 1.x ``filters[field][OPERATION]``)
FLOW_FILTERS = {
    "namespace": NAMESPACE_OPS,
    "q": ("EQUALS", "CONTAINS"),
    "labels": ("EQUALS",),
    "flowId": ("EQUALS", "CONTAINS"),
}


async def matching_flows(request: Request) -> list[FlowRecord]:
    """The latest revision of each flow the search parameters keep (the old ones:
    ``q``, ``namespace``, ``labels``; and Kestra 1.x's ``filters[...]``)."""
    app = state(request)
    filters = Filters(request, FLOW_FILTERS)
    queries = [q.lower() for q in (q_str(request, "q"), *filters.values("q")) if q]
    flow_ids = filters.values("flowId")
    in_namespace = namespace_matcher(request, filters)
    labels = (*q_labels(request), *filters.labels())
    found = []
    for record in await app.backend.flows.list():
        if not in_namespace(record.namespace):
            continue
        if any(q not in record.id.lower() and q not in record.namespace.lower() for q in queries):
            continue
        if flow_ids and record.id not in flow_ids:
            continue
        if labels:
            try:
                have = app.flows.parse(record).label_map()
            except FlowError:
                continue
            if any(have.get(k) != v for k, v in labels):
                continue
        found.append(record)
    return found


async def search(request: Request) -> Response:
    limit, offset = paging(request)
    sort = q_str(request, "sort") or "id:asc"
    field, _, direction = sort.partition(":")
    if field not in ("id", "namespace") or direction not in ("", "asc", "desc"):
        raise ApiError(400, f"query parameter `sort`: {sort!r}: use id or namespace, :asc or :desc")
    found = await matching_flows(request)
    key = (lambda r: (r.id, r.namespace)) if field == "id" else (lambda r: (r.namespace, r.id))
    found.sort(key=key, reverse=direction == "desc")
    return json_response(paged(await flows_json(found[offset : offset + limit]), len(found)))


async def revisions(request: Request) -> Response:
    namespace, flow_id = request.path_params["namespace"], request.path_params["id"]
    records = await state(request).backend.flows.revisions(namespace, flow_id)
    if not records:
        raise not_found(f"flow {namespace}.{flow_id}")
    return json_response(await flows_json(records, source=True))


async def validate(request: Request) -> Response:
    """One result per YAML document (``---`` separates them), each with every problem."""
    source = await text_body(request)
    # in a thread: the body may be megabytes of YAML (see parse_or_422)
    return json_response(await asyncio.to_thread(_validate, source))


def _validate(source: str) -> list[dict[str, Any]]:
    results = []
    for index, document in enumerate(_documents(source)):
        flow, problems = check_text(document)
        found = flow_problems(problems)
        results.append(
            {
                "index": index,
                "flow": flow.id if flow else _top_level(document, "id"),
                "namespace": flow.namespace if flow else _top_level(document, "namespace"),
                "constraints": "\n".join(
                    f"line {p['line']}, column {p['column']}: {p['message']}" for p in found
                )
                or None,
                "problems": found,
            }
        )
    return results


def _top_level(document: str, key: str) -> str | None:
    """A top-level scalar of an invalid document, read without loading it (which
    could be costly: aliases, depth)."""
    found = re.search(rf"^{key}:[ \t]*['\"]?([^'\"\s#]+)", document, re.M)
    return found.group(1) if found else None


_SEPARATOR = re.compile(r"^---[ \t]*$", re.M)


def _documents(source: str) -> list[str]:
    """The documents of a multi-document YAML text, each padded with the blank lines
    before it so that problems are placed by their line in the whole text."""
    out = []
    start = 0
    for separator in [*_SEPARATOR.finditer(source), None]:
        end = separator.start() if separator else len(source)
        text = source[start:end]
        if text.strip():
            out.append("\n" * source.count("\n", 0, start) + text)
        if separator is not None:
            start = separator.end()
    return out or [source]


def split_documents(source: str) -> list[str]:
    """The documents of a multi-document YAML text (``---`` between them)."""
    return [document.lstrip("\n") for document in _documents(source)]


class FlowRef(msgspec.Struct, frozen=True):
    namespace: str
    id: str


_DISABLED = re.compile(r"^disabled:[^\n]*$", re.M)


def with_disabled(source: str, disabled: bool) -> str:
    """The flow's YAML with its top-level ``disabled`` set (added when absent)."""
    line = f"disabled: {str(disabled).lower()}"
    if _DISABLED.search(source):
        return _DISABLED.sub(line, source, count=1)
    return source.rstrip("\n") + f"\n{line}\n"


async def _set_disabled(request: Request, disabled: bool) -> Response:
    refs = await json_body(request, list[FlowRef])
    store = state(request).backend.flows
    # Every flow found and its new YAML valid before any is deployed: a 404 or a 422
    # leaves all of them as they were.
    changes = []
    for ref in refs:
        record = await store.get(ref.namespace, ref.id)
        if record is None:
            raise not_found(f"flow {ref.namespace}.{ref.id}")
        source = with_disabled(record.source, disabled)
        await parse_or_422(source)
        changes.append((record, source))
    count = 0
    for record, source in changes:
        updated = await store.deploy(record.namespace, record.id, source)
        count += updated.revision != record.revision
    return json_response({"count": count})


async def enable(request: Request) -> Response:
    return await _set_disabled(request, False)


async def disable(request: Request) -> Response:
    return await _set_disabled(request, True)


async def distinct_namespaces(request: Request) -> Response:
    records = await state(request).backend.flows.list()
    return json_response(sorted({r.namespace for r in records}))


routes = [
    Route("/api/v1/flows", create, methods=["POST"]),
    Route("/api/v1/flows/search", search, methods=["GET"]),
    Route("/api/v1/flows/distinct-namespaces", distinct_namespaces, methods=["GET"]),
    Route("/api/v1/flows/validate", validate, methods=["POST"]),
    Route("/api/v1/flows/enable/by-ids", enable, methods=["POST"]),
    Route("/api/v1/flows/disable/by-ids", disable, methods=["POST"]),
    Route("/api/v1/flows/{namespace}", by_namespace, methods=["GET"]),
    Route("/api/v1/flows/{namespace}/{id}", get, methods=["GET"]),
    Route("/api/v1/flows/{namespace}/{id}", update, methods=["PUT"]),
    Route("/api/v1/flows/{namespace}/{id}", delete, methods=["DELETE"]),
    Route("/api/v1/flows/{namespace}/{id}/revisions", revisions, methods=["GET"]),
]
