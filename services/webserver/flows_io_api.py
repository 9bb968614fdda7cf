"""Flows in bulk and drawn: export (a zip of YAML sources) and import (a zip or a
multi-document YAML); delete, enable and disable by ids or by query; and the graph
of a flow (``/graph``) that UIs draw the topology from, in Kestra's vocabulary
(nodes, edges with a relation, clusters for the flowable tasks)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.protocols import FlowRecord
from runtime.flow.loader import FlowError
from runtime.flow.model import Flow, Task
from runtime.flow.parse import parse_flow
from services.webserver import flows_api
from services.webserver.flows_api import FlowRef, matching_flows
from services.webserver.http import (
    ApiError,
    json_body,
    json_response,
    not_found,
    q_bool,
    q_int,
    state,
    text_body,
)
from services.webserver.middleware import allow_upload

#: an import's files, once unpacked, may hold this much YAML (a zip bomb stops here)
MAX_IMPORT_BYTES = 64 * 1024 * 1024
#: and this many files
MAX_IMPORT_FILES = 10_000


# -- export -------------------------------------------------------------------------------
def _zip(records: list[FlowRecord]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            archive.writestr(f"{record.namespace}.{record.id}.yml", record.source)
    return buffer.getvalue()


def _zip_response(records: list[FlowRecord]) -> Response:
    return Response(
        _zip(records),
        media_type="application/octet-stream",
        headers={"content-disposition": 'attachment; filename="flows.zip"'},
    )


async def _by_refs(request: Request) -> list[FlowRecord]:
    """The latest revision of each flow the JSON body names; 404 naming the first
    missing one (nothing is done)."""
    refs = await json_body(request, list[FlowRef])
    store = state(request).backend.flows
    found = []
    for ref in refs:
        record = await store.get(ref.namespace, ref.id)
        if record is None:
            raise not_found(f"flow {ref.namespace}.{ref.id}")
        found.append(record)
    return found


async def export_by_ids(request: Request) -> Response:
    return _zip_response(await _by_refs(request))


async def export_by_query(request: Request) -> Response:
    return _zip_response(await matching_flows(request))


# -- import -------------------------------------------------------------------------------
def _sources(name: str, data: bytes) -> list[tuple[str, str]]:
    """(name, YAML) of each flow in an upload: the .yml/.yaml files of a zip, or each
    document of a YAML file (named by its index, as Kestra)."""
    lowered = name.lower()
    if lowered.endswith((".yml", ".yaml")):
        text = data.decode("utf-8-sig", errors="replace")
        return [(str(i), doc) for i, doc in enumerate(flows_api.split_documents(text))]
    if not lowered.endswith(".zip"):
        raise ApiError(
            422, f"cannot import {name!r}: send a .zip of YAML files, or a .yml/.yaml file"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ApiError(422, f"{name!r} is not a zip archive") from None
    out = []
    total = 0
    with archive:
        entries = [
            i
            for i in archive.infolist()
            if not i.is_dir() and i.filename.endswith((".yml", ".yaml"))
        ]
        if len(entries) > MAX_IMPORT_FILES:
            raise ApiError(413, f"{name!r} holds over {MAX_IMPORT_FILES} flows: split it")
        for info in entries:
            total += info.file_size
            if total > MAX_IMPORT_BYTES:
                raise ApiError(
                    413, f"{name!r} unpacks to over {MAX_IMPORT_BYTES // 2**20} MiB: split it"
                )
            # read with a cap: the sizes a zip declares can lie
            with archive.open(info) as member:
                raw = member.read(MAX_IMPORT_BYTES + 1)
            if len(raw) > info.file_size:
                raise ApiError(422, f"{name!r}: {info.filename} is larger than its header says")
            out.append((info.filename, raw.decode("utf-8-sig", errors="replace")))
    return out


def _check(sources: list[tuple[str, str]]) -> tuple[list[tuple[str, Flow]], list[str]]:
    good, bad = [], []
    for name, source in sources:
        try:
            good.append((source, parse_flow(source)))
        except FlowError:
            bad.append(name)
    return good, bad


async def import_flows(request: Request) -> Response:
    """Each flow created, or updated to a new revision when its YAML changed. The
    answer lists the files (for a YAML file: the documents' indexes) that are not valid
    flows; with ``failOnError=true`` one of those refuses the whole import."""
    allow_upload(request.scope)
    fail_on_error = q_bool(request, "failOnError")
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:  # the parser's errors: a malformed body
        raise ApiError(400, f"the form body cannot be read: {exc}") from None
    try:
        upload = form.get("fileUpload")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "send the flows as the multipart file part `fileUpload`")
        data = await upload.read()
        name = upload.filename or "flows.yml"
    finally:
        await form.close()
    sources = await asyncio.to_thread(_sources, name, data)
    good, bad = await asyncio.to_thread(_check, sources)
    if bad and fail_on_error:
        raise ApiError(
            422,
            f"{len(bad)} of the flows are not valid: nothing was imported",
            [{"file": b, "message": "not a valid flow"} for b in bad],
        )
    store = state(request).backend.flows
    for source, flow in good:
        await store.deploy(flow.namespace, flow.id, source)
    return json_response(bad)


# -- bulk delete, enable, disable ---------------------------------------------------------
async def delete_by_ids(request: Request) -> Response:
    records = await _by_refs(request)
    store = state(request).backend.flows
    count = sum([await store.delete(r.namespace, r.id) for r in records])
    return json_response({"count": count})


async def delete_by_query(request: Request) -> Response:
    store = state(request).backend.flows
    count = sum([await store.delete(r.namespace, r.id) for r in await matching_flows(request)])
    return json_response({"count": count})


async def _set_disabled_by_query(request: Request, disabled: bool) -> Response:
    records = await matching_flows(request)
    store = state(request).backend.flows
    changes = []
    for record in records:
        source = flows_api.with_disabled(record.source, disabled)
        await flows_api.parse_or_422(source)
        changes.append((record, source))
    count = 0
    for record, source in changes:
        updated = await store.deploy(record.namespace, record.id, source)
        count += updated.revision != record.revision
    return json_response({"count": count})


async def enable_by_query(request: Request) -> Response:
    return await _set_disabled_by_query(request, False)


async def disable_by_query(request: Request) -> Response:
    return await _set_disabled_by_query(request, True)


# -- the graph ----------------------------------------------------------------------------
_H = "io.kestra.core.models.hierarchies."


def _relation(task: Task, branch: str) -> tuple[str, str | None]:
    """How a flowable task reaches the children of one of its branches."""
    if branch == "errors":
        return "ERROR", None
    if branch == "finally":
        return "FINALLY", None
    kind = task.type.rsplit(".", 1)[-1]
    if kind in ("If", "Switch"):
        return "CHOICE", branch.removeprefix("cases.")
    if kind in ("ForEach", "EachSequential", "EachParallel", "ForEachItem"):
        return "DYNAMIC", None
    if kind in ("Parallel", "Dag"):
        return "PARALLEL", None
    return "SEQUENTIAL", None


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self.clusters: list[dict[str, Any]] = []
        self.flowables: list[str] = []

    def node(self, uid: str, kind: str, task: Any = None, relation: str | None = None) -> str:
        node: dict[str, Any] = {"uid": uid, "type": _H + kind, "branchType": None}
        if task is not None:
            node["task"] = task
        if relation is not None:
            node["relationType"] = relation
        self.nodes.append(node)
        return uid

    def edge(self, source: str, target: str, relation: str, value: str | None = None) -> None:
        self.edges.append(
            {
                "source": source,
                "target": target,
                "relation": {"relationType": relation, "value": value},
            }
        )

    def sequence(
        self,
        tasks: tuple[Task, ...],
        prefix: str,
        entry: str,
        exit_: str,
        relation: str,
        value: str | None = None,
        parents: tuple[str, ...] = (),
    ) -> None:
        """The tasks one after the other between ``entry`` and ``exit_``."""
        if not tasks:
            return
        previous, how, label = entry, relation, value
        for task in tasks:
            first, last = self.task(task, prefix, how, parents)
            self.edge(previous, first, how, label)
            previous, how, label = last, "SEQUENTIAL", None
        self.edge(previous, exit_, "SEQUENTIAL")

    def task(
        self, task: Task, prefix: str, relation: str, parents: tuple[str, ...]
    ) -> tuple[str, str]:
        """Draws ``task`` (a cluster when it has children): its first and last uids."""
        uid = f"{prefix}.{task.id}"
        shown = {"id": task.id, "type": task.type}
        branches = [(name, tasks) for name, tasks in task.child_lists() if tasks]
        if not branches:
            self.node(uid, "GraphTask", shown, relation)
            return uid, uid
        self.flowables.append(uid)
        cluster = f"cluster_{uid}"
        before = len(self.nodes)
        start = self.node(uid, "GraphTask", shown, relation)
        end = f"{uid}.end"
        inner = (*parents, cluster)
        for name, tasks in branches:
            how, value = _relation(task, name)
            if how == "PARALLEL":
                for child in tasks:
                    first, last = self.task(child, uid, how, inner)
                    self.edge(start, first, how)
                    self.edge(last, end, "SEQUENTIAL")
            else:
                self.sequence(tasks, uid, start, end, how, value, inner)
        self.node(end, "GraphClusterEnd")
        self.clusters.append(
            {
                "cluster": {"uid": cluster, "type": _H + "GraphCluster", "task": shown},
                "nodes": [n["uid"] for n in self.nodes[before:]],
                "parents": list(parents),
                "start": start,
                "end": end,
            }
        )
        return start, end

    def json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "edges": self.edges,
            "clusters": self.clusters,
            "flowables": self.flowables,
        }


def flow_graph(flow: Flow) -> dict[str, Any]:
    """The topology of ``flow``: ``root.root`` to ``root.end`` through its tasks, its
    triggers leading to ``root.root``, its errors and finally tasks beside."""
    graph = _Graph()
    root = graph.node("root.root", "GraphClusterRoot")
    end = "root.end"
    for trigger in flow.triggers:
        uid = graph.node(
            f"root.Triggers.{trigger.id}", "GraphTrigger", {"id": trigger.id, "type": trigger.type}
        )
        graph.edge(uid, root, "SEQUENTIAL")
    graph.sequence(flow.tasks, "root", root, end, "SEQUENTIAL")
    graph.sequence(flow.errors, "root", root, end, "ERROR")
    graph.sequence(flow.finally_, "root", root, end, "FINALLY")
    graph.sequence(flow.after_execution, "root", root, end, "AFTER_EXECUTION")
    graph.node(end, "GraphClusterEnd")
    return graph.json()


async def graph(request: Request) -> Response:
    app = state(request)
    namespace, flow_id = request.path_params["namespace"], request.path_params["id"]
    revision = q_int(request, "revision", 0, lo=0) or None
    record = await app.backend.flows.get(namespace, flow_id, revision)
    if record is None:
        which = f" revision {revision}" if revision else ""
        raise not_found(f"flow {namespace}.{flow_id}{which}")
    return json_response(flow_graph(app.flows.parse(record)))


async def graph_from_source(request: Request) -> Response:
    flow = await flows_api.parse_or_422(await text_body(request))
    return json_response(flow_graph(flow))


async def execution_graph(request: Request) -> Response:
    app = state(request)
    execution_id = request.path_params["executionId"]
    execution = await app.backend.executions.get(execution_id)
    if execution is None:
        raise not_found(f"execution {execution_id}")
    flow = await app.flows.get(execution.namespace, execution.flow_id, execution.flow_revision)
    return json_response(flow_graph(flow))


async def flow_of_execution(request: Request) -> Response:
    """The flow revision an execution runs (``/executions/{id}/flow``)."""
    app = state(request)
    execution_id = request.path_params["executionId"]
    execution = await app.backend.executions.get(execution_id)
    if execution is None:
        raise not_found(f"execution {execution_id}")
    record = await app.backend.flows.get(
        execution.namespace, execution.flow_id, execution.flow_revision
    )
    if record is None:
        raise not_found(
            f"flow {execution.namespace}.{execution.flow_id} of execution {execution_id}"
        )
    return json_response(await _for_execution(record))


async def _for_execution(record: FlowRecord) -> dict[str, Any]:
    """A flow as Kestra's FlowForExecution shows it: its labels as a map."""
    out: dict[str, Any] = (await flows_api.flows_json([record]))[0]
    if isinstance(out.get("labels"), list):
        out["labels"] = {item["key"]: item["value"] for item in out["labels"]}
    return out


async def flow_for_execution(request: Request) -> Response:
    """A flow as the page that starts an execution reads it (``/executions/flows/...``)."""
    app = state(request)
    namespace, flow_id = request.path_params["namespace"], request.path_params["flowId"]
    revision = q_int(request, "revision", 0, lo=0) or None
    record = await app.backend.flows.get(namespace, flow_id, revision)
    if record is None:
        which = f" revision {revision}" if revision else ""
        raise not_found(f"flow {namespace}.{flow_id}{which}")
    return json_response(await _for_execution(record))


_F = "/api/v1/flows"
routes = [
    Route(f"{_F}/export/by-ids", export_by_ids, methods=["POST"]),
    Route(f"{_F}/export/by-query", export_by_query, methods=["GET"]),
    Route(f"{_F}/import", import_flows, methods=["POST"]),
    Route(f"{_F}/graph", graph_from_source, methods=["POST"]),
    Route(f"{_F}/delete/by-ids", delete_by_ids, methods=["DELETE"]),
    Route(f"{_F}/delete/by-query", delete_by_query, methods=["DELETE"]),
    Route(f"{_F}/enable/by-query", enable_by_query, methods=["POST"]),
    Route(f"{_F}/disable/by-query", disable_by_query, methods=["POST"]),
    Route(f"{_F}/{{namespace}}/{{id}}/graph", graph, methods=["GET"]),
    Route("/api/v1/executions/{executionId}/graph", execution_graph, methods=["GET"]),
    Route("/api/v1/executions/{executionId}/flow", flow_of_execution, methods=["GET"]),
    Route("/api/v1/executions/flows/{namespace}/{flowId}", flow_for_execution, methods=["GET"]),
]
