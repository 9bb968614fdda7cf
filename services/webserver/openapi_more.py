"""The OpenAPI entries of what Kestra 1.x and its SDK added (bulk actions, eval,
status changes, unqueue, force-run, the SDK's ``/actions/`` paths, flow export,
import and graph, KV search), and the copy of every path under ``/api/v1/{tenant}``.
``openapi.py`` holds the rest."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from services.webserver.openapi_schemas import ref
from services.webserver.tenants import API, DEFAULT_TENANT, UNTENANTED, tenant_path

Op = Callable[..., dict[str, Any]]

FILTERS_NOTE = (
    " Kestra 1.x filters: `filters[field][OPERATION]=value` query parameters "
    "(labels: `filters[labels][EQUALS][key]=value`); a filter this endpoint does not "
    "take is a 400 naming it."
)

#: extra component schemas
SCHEMAS: dict[str, Any] = {
    "BulkError": {
        "type": "object",
        "required": ["message", "status"],
        "properties": {
            "message": {"type": "string"},
            "status": {"type": "integer"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "execution": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
    "EvalResult": {
        "type": "object",
        "required": ["result", "error"],
        "properties": {
            "result": {"type": "string", "nullable": True},
            "error": {"type": "string", "nullable": True},
        },
    },
    "StateRequest": {
        "type": "object",
        "required": ["taskRunId", "state"],
        "properties": {
            "taskRunId": {"type": "string"},
            "state": {"type": "string", "enum": ["SUCCESS", "WARNING", "FAILED"]},
        },
    },
    "LabelsByIds": {
        "type": "object",
        "required": ["executionsId", "executionLabels"],
        "properties": {
            "executionsId": {"type": "array", "items": {"type": "string"}},
            "executionLabels": {"type": "array", "items": ref("Label")},
        },
    },
    "FlowGraph": {
        "type": "object",
        "required": ["nodes", "edges", "clusters", "flowables"],
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["uid", "type"],
                    "properties": {"uid": {"type": "string"}, "type": {"type": "string"}},
                },
            },
            "edges": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["source", "target", "relation"],
                    "properties": {
                        "source": {"type": "string"},
                        "target": {"type": "string"},
                        "relation": {
                            "type": "object",
                            "properties": {
                                "relationType": {"type": "string"},
                                "value": {"type": "string", "nullable": True},
                            },
                        },
                    },
                },
            },
            "clusters": {"type": "array", "items": {"type": "object"}},
            "flowables": {"type": "array", "items": {"type": "string"}},
        },
    },
    "KVDeleted": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
    },
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema}}}


_IDS = _body("application/json", {"type": "array", "items": {"type": "string"}})
_REFS = _body("application/json", {"type": "array", "items": ref("FlowRef")})
_COUNT = _json(ref("Count"))
_EXEC = ("executionId",)
_ZIP = {
    "description": "a zip of the flows' YAML sources",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
_BULK_ERRORS = ("400",)


def _bulk(op: Op) -> dict[str, dict[str, Any]]:
    """The by-ids and by-query variants of each execution action."""
    out: dict[str, dict[str, Any]] = {}
    actions = {
        "kill": ("delete", "Kill executions"),
        "restart": ("post", "Restart executions (their failed task runs)"),
        "replay": ("post", "Replay executions (each into a new one)"),
        "resume": ("post", "Resume paused executions"),
        "unqueue": ("post", "Unqueue QUEUED executions"),
        "force-run": ("post", "Force executions to run (past the concurrency limit)"),
    }
    state_param = {"type": "string", "enum": ["RUNNING", "KILLED"]}
    for name, (method, summary) in actions.items():
        by_ids_query: tuple[tuple[str, dict[str, Any]], ...] = ()
        by_query_query: tuple[tuple[str, dict[str, Any]], ...] = ()
        if name == "unqueue":
            by_ids_query = (("state", state_param),)
            by_query_query = (("newState", state_param),)
        out[f"{API}executions/{name}/by-ids"] = {
            method: op(
                f"{summary}, by id: one that is missing or cannot is a 400 listing each, "
                "and nothing is done",
                "Executions",
                _COUNT,
                body=_IDS,
                query=by_ids_query,
                errors=_BULK_ERRORS,
            )
        }
        out[f"{API}executions/{name}/by-query"] = {
            method: op(
                f"{summary} that a search selects (those that cannot are skipped)." + FILTERS_NOTE,
                "Executions",
                _COUNT,
                query=by_query_query,
            )
        }
    delete_query = (
        ("deleteStorage", {"type": "boolean"}),
        ("deleteLogs", {"type": "boolean"}),
        ("includeNonTerminated", {"type": "boolean"}),
    )
    out[f"{API}executions/by-ids"] = {
        "delete": op(
            "Delete ended executions by id (all or nothing, unless includeNonTerminated: "
            "then the running ones are left)",
            "Executions",
            _COUNT,
            body=_IDS,
            query=delete_query,
            errors=_BULK_ERRORS,
        )
    }
    out[f"{API}executions/by-query"] = {
        "delete": op(
            "Delete the ended executions a search selects." + FILTERS_NOTE,
            "Executions",
            _COUNT,
            query=delete_query[:1],
        )
    }
    out[f"{API}executions/labels/by-ids"] = {
        "post": op(
            "Add labels to executions by id (a key given replaces its value)",
            "Executions",
            _COUNT,
            body=_body("application/json", ref("LabelsByIds")),
            errors=("400", "422"),
        )
    }
    out[f"{API}executions/labels/by-query"] = {
        "post": op(
            "Add labels to the executions a search selects." + FILTERS_NOTE,
            "Executions",
            _COUNT,
            body=_body("application/json", {"type": "array", "items": ref("Label")}),
            errors=("400", "422"),
        )
    }
    status = ("newStatus", {"type": "string"})
    out[f"{API}executions/change-status/by-ids"] = {
        "post": op(
            "Give ended executions another end state, by id (all or nothing)",
            "Executions",
            _COUNT,
            body=_IDS,
            query=(status,),
            errors=_BULK_ERRORS,
        )
    }
    out[f"{API}executions/change-status/by-query"] = {
        "post": op(
            "Give the ended executions a search selects another end state." + FILTERS_NOTE,
            "Executions",
            _COUNT,
            query=(status,),
        )
    }
    return out


def _single(op: Op) -> dict[str, dict[str, Any]]:
    execution = _json(ref("Execution"))
    change_status = op(
        "Give an ended execution another end state",
        "Executions",
        execution,
        path=_EXEC,
        query=(("status", {"type": "string"}),),
        errors=("400", "404", "409"),
    )
    task_run_state = op(
        "Mark a task run of an ended execution SUCCESS or WARNING (kept as is), or "
        "FAILED (the execution restarts from it)",
        "Executions",
        execution,
        path=_EXEC,
        body=_body("application/json", ref("StateRequest")),
        errors=("400", "404", "409", "422"),
    )
    unqueue = op(
        "Start a QUEUED execution now, past its flow's concurrency limit (state=RUNNING, "
        "the default) or kill it (state=KILLED)",
        "Executions",
        execution,
        path=_EXEC,
        query=(("state", {"type": "string", "enum": ["RUNNING", "KILLED"]}),),
        errors=("400", "404", "409"),
    )
    force_run = op(
        "Force an execution to run: CREATED or QUEUED starts now, PAUSED resumes",
        "Executions",
        execution,
        path=_EXEC,
        errors=("404", "409"),
    )
    text = _body("text/plain", {"type": "string"})
    eval_ = op(
        "Render an expression against the execution: the result, or the error",
        "Executions",
        _json(ref("EvalResult")),
        path=_EXEC,
        body=text,
        errors=("400", "404"),
    )
    eval_run = op(
        "Render an expression against one task run of the execution",
        "Executions",
        _json(ref("EvalResult")),
        path=(*_EXEC, "taskRunId"),
        body=text,
        errors=("400", "404"),
    )
    e = f"{API}executions/{{executionId}}"
    of_flow = op(
        "The executions of one flow, latest first",
        "Executions",
        _json(
            {
                "type": "object",
                "required": ["results", "total"],
                "properties": {
                    "results": {"type": "array", "items": ref("Execution")},
                    "total": {"type": "integer"},
                },
            }
        ),
        query=(
            ("namespace", {"type": "string"}),
            ("flowId", {"type": "string"}),
            ("page", {"type": "integer", "minimum": 1}),
            ("size", {"type": "integer", "minimum": 1, "maximum": 1000}),
        ),
    )
    flow = _json(ref("Flow"))
    return {
        f"{API}executions": {"get": of_flow},
        f"{e}/flow": {
            "get": op(
                "The flow revision the execution runs",
                "Executions",
                flow,
                path=_EXEC,
                errors=("404",),
            )
        },
        f"{API}executions/flows/{{namespace}}/{{flowId}}": {
            "get": op(
                "A flow, to start an execution of it",
                "Executions",
                flow,
                path=("namespace", "flowId"),
                query=(("revision", {"type": "integer", "minimum": 1}),),
                errors=("400", "404"),
            )
        },
        f"{e}/change-status": {"post": change_status},
        f"{e}/state": {"post": task_run_state},
        f"{e}/unqueue": {"post": unqueue},
        f"{e}/force-run": {"post": force_run},
        f"{e}/eval": {"post": eval_},
        f"{e}/eval/{{taskRunId}}": {"post": eval_run},
        f"{e}/graph": {
            "get": op(
                "The graph of the execution's flow revision",
                "Executions",
                _json(ref("FlowGraph")),
                path=_EXEC,
                errors=("404",),
            )
        },
        f"{e}/actions/change-status": {"post": change_status},
        f"{e}/actions/state": {"post": task_run_state},
        f"{e}/actions/unqueue": {"post": unqueue},
        f"{e}/actions/force-run": {"post": force_run},
        f"{e}/actions/eval": {"post": eval_},
        f"{e}/actions/eval/{{taskRunId}}": {"post": eval_run},
    }


def _flows(op: Op) -> dict[str, dict[str, Any]]:
    f = f"{API}flows"
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"fileUpload": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
    graph = _json(ref("FlowGraph"))
    return {
        f"{f}/export/by-ids": {
            "post": op("Export flows by id", "Flows", _ZIP, body=_REFS, errors=("400", "404"))
        },
        f"{f}/export/by-query": {
            "get": op("Export the flows a search selects." + FILTERS_NOTE, "Flows", _ZIP)
        },
        f"{f}/import": {
            "post": op(
                "Import flows from a zip of YAML files or a multi-document YAML file (the "
                "`fileUpload` part): each created, or updated when changed; the answer lists "
                "the files (documents' indexes) that are not valid flows; with failOnError "
                "one of those refuses the whole import",
                "Flows",
                _json({"type": "array", "items": {"type": "string"}}),
                query=(("failOnError", {"type": "boolean"}),),
                body=upload,
                errors=("400", "422"),
            )
        },
        f"{f}/graph": {
            "post": op(
                "The graph of a flow's YAML",
                "Flows",
                graph,
                body=_body("application/x-yaml", {"type": "string"}),
                errors=("400", "422"),
            )
        },
        f"{f}/delete/by-ids": {
            "delete": op("Delete flows by id", "Flows", _COUNT, body=_REFS, errors=("400", "404"))
        },
        f"{f}/delete/by-query": {
            "delete": op("Delete the flows a search selects." + FILTERS_NOTE, "Flows", _COUNT)
        },
        f"{f}/enable/by-query": {
            "post": op(
                "Enable the flows a search selects." + FILTERS_NOTE,
                "Flows",
                _COUNT,
                errors=("400", "422"),
            )
        },
        f"{f}/disable/by-query": {
            "post": op(
                "Disable the flows a search selects." + FILTERS_NOTE,
                "Flows",
                _COUNT,
                errors=("400", "422"),
            )
        },
        f"{f}/{{namespace}}/{{id}}/graph": {
            "get": op(
                "The graph of a flow (nodes, edges with their relation, clusters of the "
                "flowable tasks)",
                "Flows",
                graph,
                path=("namespace", "id"),
                query=(("revision", {"type": "integer", "minimum": 1}),),
                errors=("400", "404"),
            )
        },
    }


def _kv_and_triggers(op: Op) -> dict[str, dict[str, Any]]:
    page = (
        ("page", {"type": "integer", "minimum": 1}),
        ("size", {"type": "integer", "minimum": 1, "maximum": 1000}),
    )
    entries = {"type": "array", "items": ref("KVEntry")}
    return {
        f"{API}kv": {
            "get": op(
                "The keys of every namespace (those of the flows and their parents)."
                + FILTERS_NOTE,
                "KV",
                _json(
                    {
                        "type": "object",
                        "required": ["results", "total"],
                        "properties": {"results": entries, "total": {"type": "integer"}},
                    }
                ),
                query=page,
            )
        },
        f"{API}namespaces/{{namespace}}/kv": {
            "delete": op(
                "Delete keys of a namespace: the answer lists those that were there",
                "KV",
                _json(ref("KVDeleted")),
                path=("namespace",),
                body=_body(
                    "application/json",
                    {
                        "type": "object",
                        "required": ["keys"],
                        "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
                    },
                ),
            )
        },
        f"{API}namespaces/{{namespace}}/kv/inheritance": {
            "get": op(
                "The keys of a namespace and of its parents (the nearest wins)",
                "KV",
                _json(entries),
                path=("namespace",),
            )
        },
        f"{API}triggers/set-disabled/by-query": {
            "post": op(
                "Enable or disable the triggers a search selects." + FILTERS_NOTE,
                "Triggers",
                _COUNT,
                query=(("disabled", {"type": "boolean"}),),
            )
        },
        f"{API}triggers/{{namespace}}/{{flowId}}": {
            "get": op(
                "The triggers of one flow",
                "Triggers",
                _json(
                    {
                        "type": "object",
                        "required": ["results", "total"],
                        "properties": {
                            "results": {"type": "array", "items": ref("Trigger")},
                            "total": {"type": "integer"},
                        },
                    }
                ),
                path=("namespace", "flowId"),
                query=(("q", {"type": "string"}), *page),
                errors=("400", "404"),
            )
        },
    }


def more_paths(op: Op) -> dict[str, dict[str, Any]]:
    """The added paths (without a tenant), built with ``openapi._op``."""
    return {**_bulk(op), **_single(op), **_flows(op), **_kv_and_triggers(op)}


def sdk_actions(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``/executions/{id}/actions/...`` for the single actions the old paths serve as
    ``/executions/{id}/...``; resume answers with the execution there."""
    out = {}
    e = f"{API}executions/{{executionId}}"
    for action in ("kill", "restart", "replay", "labels", "resume"):
        out[f"{e}/actions/{action}"] = copy.deepcopy(paths[f"{e}/{action}"])
    _answers_execution(out[f"{e}/actions/resume"]["post"])
    return out


def _answers_execution(operation: dict[str, Any]) -> None:
    operation["responses"]["200"] = _json(ref("Execution"), "resumed: the execution")


def with_tenants(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``paths`` and each again under ``/api/v1/{tenant}``: the same operation, with
    the tenant parameter and its 404."""
    tenant = {
        "name": "tenant",
        "in": "path",
        "required": True,
        "description": f"the tenant; this server has one, `{DEFAULT_TENANT}` (another is a 404)",
        "schema": {"type": "string", "example": DEFAULT_TENANT},
    }
    out = dict(paths)
    for path, operations in paths.items():
        if not path.startswith(API) or path in UNTENANTED:
            continue
        copied = copy.deepcopy(operations)
        for operation in copied.values():
            operation["parameters"] = [tenant, *operation.get("parameters", [])]
            operation["responses"].setdefault("404", _ERROR_404)
            if operation.get("operationId"):
                operation["operationId"] += "_tenant"
        out[tenant_path(path)] = copied
    e = f"{API}{{tenant}}/executions/{{executionId}}/resume"
    _answers_execution(out[e]["post"])
    kv = f"{API}{{tenant}}/namespaces/{{namespace}}/kv/{{key}}"
    out[kv]["delete"]["responses"]["200"] = _json({"type": "boolean"}, "deleted")
    return out


_ERROR_404 = _json(ref("Error"), "not found (an unknown tenant among others)")
