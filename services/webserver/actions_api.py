"""Actions on executions that Kestra 1.x and its SDK offer beyond the old paths: the
``by-ids`` and ``by-query`` bulk variants of kill, restart, delete, resume, replay
and labels; ``eval`` of an expression; ``change-status`` of an execution and the
state of a task run; ``unqueue`` and ``force-run``; and the SDK's
``/executions/{id}/actions/...`` form of each single action.

A bulk action checks every execution first: one that is missing or cannot take the
action makes the whole request a 400 listing each of them, and none is touched (as
Kestra answers a bulk request by ids). By query, the executions that cannot take the
action are skipped and the answer counts those that did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.protocols import LogFilter
from runtime.flow import template
from runtime.flow.context import outputs_map, variables
from runtime.flow.engine import task_index
from runtime.flow.events import ExecutionCreated, Kill, Replay, Restart, Resume
from runtime.flow.execution import Execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from runtime.flow.template import TemplateError
from services.executor import send_event
from services.webserver import executions_api
from services.webserver.executions_api import load_execution, selected
from services.webserver.http import (
    ApiError,
    AppState,
    json_body,
    json_response,
    q_bool,
    q_str,
    state,
    text_body,
)
from services.webserver.shapes import execution_json

S = StateType


@dataclass(frozen=True)
class Action:
    """What a bulk action does to one execution: ``refuse`` says why it cannot (None:
    it can), ``apply`` does it."""

    name: str
    refuse: Callable[[Execution, Request], Awaitable[str | None]]
    apply: Callable[[AppState, Execution, Request], Awaitable[None]]


async def _kill_refused(execution: Execution, request: Request) -> str | None:
    current = execution.state.current
    if current.terminated or current is S.KILLING:
        return f"is {current.value}: nothing to kill"
    return None


async def _kill(app: AppState, execution: Execution, request: Request) -> None:
    await send_event(app.backend, execution.id, Kill(at=app.backend.clock()))


async def _restart_refused(execution: Execution, request: Request) -> str | None:
    current = execution.state.current
    if not (current.terminated or current is S.PAUSED):
        return f"is {current.value}: only an ended one can restart"
    if not any(r.state.current in (S.FAILED, S.PAUSED) for r in execution.task_run_list):
        return "has no failed task run to restart"
    return None


async def _restart(app: AppState, execution: Execution, request: Request) -> None:
    await send_event(app.backend, execution.id, Restart(at=app.backend.clock()))


async def _ended_refused(execution: Execution, request: Request) -> str | None:
    if not execution.state.terminated:
        return f"is {execution.state.current.value}: only an ended execution can take this"
    return None


async def _replay(app: AppState, execution: Execution, request: Request) -> None:
    event = Replay(at=app.backend.clock(), new_execution_id=new_id())
    await send_event(app.backend, execution.id, event)


async def _resume_refused(execution: Execution, request: Request) -> str | None:
    if execution.state.current is not S.PAUSED:
        return f"is {execution.state.current.value}: only a paused execution can be resumed"
    try:
        await _resume_inputs(state(request), execution)
    except ApiError as exc:
        return f"needs resume inputs ({exc.message}): resume it alone, with them"
    return None


async def _resume_inputs(app: AppState, execution: Execution) -> dict[str, Any]:
    """The Pause task's onResume inputs at their defaults (a bulk resume sends none)."""
    flow = await app.flows.get(execution.namespace, execution.flow_id, execution.flow_revision)
    return executions_api.resume_inputs(executions_api.resume_specs(flow, execution), {})


async def _resume(app: AppState, execution: Execution, request: Request) -> None:
    inputs = await _resume_inputs(app, execution)
    await send_event(app.backend, execution.id, Resume(at=app.backend.clock(), inputs=inputs))


async def _delete_refused(execution: Execution, request: Request) -> str | None:
    if execution.state.terminated:
        return None
    return f"is {execution.state.current.value}: kill it first, only an ended one can be deleted"


async def _delete(app: AppState, execution: Execution, request: Request) -> None:
    delete_storage = q_bool(request, "deleteStorage", True)
    delete_logs = q_bool(request, "deleteLogs", True)
    if await app.backend.executions.delete(execution.id):
        if delete_storage:
            await executions_api.delete_files(app, execution)
        if delete_logs:
            await app.backend.logs.delete(LogFilter(execution_id=execution.id))


def _new_status(request: Request, name: str) -> StateType:
    raw = q_str(request, name)
    if raw is None:
        raise ApiError(400, f"query parameter `{name}` is required: the state to set")
    try:
        status = StateType(raw.upper())
    except ValueError:
        raise ApiError(400, f"query parameter `{name}`: {raw!r} is not a state") from None
    if not status.terminated:
        ended = ", ".join(s.value for s in StateType if s.terminated)
        raise ApiError(400, f"query parameter `{name}`: {raw!r} is not an end state ({ended})")
    return status


async def _change_status(app: AppState, execution: Execution, status: StateType) -> Execution:
    """The ended execution given another end state, under its lock (the executor may
    be handling an event of it)."""
    async with app.backend.transaction() as tx:
        current = await tx.executions.get_for_update(execution.id)
        if current is None:
            raise ApiError(404, f"execution {execution.id} not found")
        if not current.state.terminated:
            raise ApiError(
                409, f"execution {execution.id} is {current.state.current.value}: not ended"
            )
        changed = msgspec.structs.replace(
            current, state=current.state.to(status, app.backend.clock())
        )
        await tx.executions.save(changed)
    return changed


async def _queued_refused(execution: Execution, request: Request) -> str | None:
    if execution.state.current is not S.QUEUED:
        return f"is {execution.state.current.value}: only a QUEUED execution can be unqueued"
    return None


def _unqueue_state(request: Request, name: str) -> StateType:
    raw = q_str(request, name) or "RUNNING"
    if raw.upper() not in ("RUNNING", "KILLED"):
        raise ApiError(
            400,
            f"query parameter `{name}`: {raw!r}: an unqueued execution goes to RUNNING "
            "(the default: it starts past the flow's concurrency limit) or KILLED",
        )
    return StateType(raw.upper())


async def _start_now(app: AppState, execution: Execution) -> None:
    """Starts a CREATED or QUEUED execution past its flow's concurrency limit."""
    await send_event(
        app.backend, execution.id, ExecutionCreated(at=app.backend.clock(), force=True)
    )


async def _unqueue_with(app: AppState, execution: Execution, target: StateType) -> None:
    if target is S.KILLED:
        await send_event(app.backend, execution.id, Kill(at=app.backend.clock()))
    else:
        await _start_now(app, execution)


async def _unqueue(app: AppState, execution: Execution, request: Request) -> None:
    await _unqueue_with(app, execution, _unqueue_state(request, "state"))


async def _force_run_refused(execution: Execution, request: Request) -> str | None:
    if execution.state.terminated:
        return f"is {execution.state.current.value}: only a running one can be forced to run"
    return None


async def _force_run(app: AppState, execution: Execution, request: Request) -> None:
    """As Kestra: a CREATED or QUEUED execution starts now, a PAUSED one resumes,
    any other keeps running as it is."""
    current = execution.state.current
    if current in (S.CREATED, S.QUEUED):
        await _start_now(app, execution)
    elif current is S.PAUSED:
        await send_event(app.backend, execution.id, Resume(at=app.backend.clock()))


ACTIONS = {
    "kill": Action("kill", _kill_refused, _kill),
    "restart": Action("restart", _restart_refused, _restart),
    "replay": Action("replay", _ended_refused, _replay),
    "resume": Action("resume", _resume_refused, _resume),
    "delete": Action("delete", _delete_refused, _delete),
    "unqueue": Action("unqueue", _queued_refused, _unqueue),
    "force-run": Action("force-run", _force_run_refused, _force_run),
}


async def _by_ids(request: Request) -> list[Execution]:
    ids = await json_body(request, list[str])
    app = state(request)
    found = []
    missing = []
    for execution_id in dict.fromkeys(ids):
        execution = await app.backend.executions.get(execution_id)
        if execution is None:
            missing.append({"execution": execution_id, "message": "execution not found"})
        else:
            found.append(execution)
    if missing:
        raise ApiError(400, f"{len(missing)} execution(s) not found: nothing was done", missing)
    return found


async def _refusals(action: Action, executions: list[Execution], request: Request) -> list[Any]:
    out = []
    for execution in executions:
        why = await action.refuse(execution, request)
        if why is not None:
            out.append({"execution": execution.id, "message": f"execution {execution.id} {why}"})
    return out


async def _apply(action: Action, request: Request, executions: list[Execution]) -> Response:
    app = state(request)
    for execution in executions:
        await action.apply(app, execution, request)
    return json_response({"count": len(executions)})


def bulk_by_ids(action: Action) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if action.name == "unqueue":
            _unqueue_state(request, "state")  # a bad state refuses the whole request
        executions = await _by_ids(request)
        refused = await _refusals(action, executions, request)
        if refused and not (action.name == "delete" and q_bool(request, "includeNonTerminated")):
            raise ApiError(
                400,
                f"{len(refused)} execution(s) cannot take `{action.name}`: nothing was done",
                refused,
            )
        if action.name == "delete":
            executions = [e for e in executions if await action.refuse(e, request) is None]
        return await _apply(action, request, executions)

    endpoint.__name__ = f"{action.name.replace('-', '_')}_by_ids"
    return endpoint


def bulk_by_query(action: Action) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if action.name == "unqueue":
            target = _unqueue_state(request, "newState")
            executions = [
                e for e in await selected(request) if await _queued_refused(e, request) is None
            ]
            for execution in executions:
                await _unqueue_with(state(request), execution, target)
            return json_response({"count": len(executions)})
        executions = [e for e in await selected(request) if await action.refuse(e, request) is None]
        return await _apply(action, request, executions)

    endpoint.__name__ = f"{action.name.replace('-', '_')}_by_query"
    return endpoint


# -- labels -------------------------------------------------------------------------------
class LabelItem(msgspec.Struct, frozen=True):
    key: str
    value: str


class LabelsByIds(msgspec.Struct, frozen=True, rename="camel"):
    executions_id: list[str]
    execution_labels: list[LabelItem]


def _checked_labels(items: list[LabelItem]) -> list[LabelItem]:
    if any(not item.key for item in items):
        raise ApiError(422, "a label needs a non-empty key")
    return items


async def _merge_labels(app: AppState, execution_id: str, items: list[LabelItem]) -> None:
    """The labels added to the execution's (a key given replaces its value)."""
    async with app.backend.transaction() as tx:
        execution = await tx.executions.get_for_update(execution_id)
        if execution is None:
            return  # deleted since it was selected: nothing to label
        merged = {x["key"]: x["value"] for x in execution.labels}
        merged.update({i.key: i.value for i in items})
        labels = tuple({"key": k, "value": v} for k, v in merged.items())
        await tx.executions.save(msgspec.structs.replace(execution, labels=labels))


async def labels_by_ids(request: Request) -> Response:
    body = await json_body(request, LabelsByIds)
    items = _checked_labels(body.execution_labels)
    app = state(request)
    missing = [
        {"execution": i, "message": "execution not found"}
        for i in dict.fromkeys(body.executions_id)
        if await app.backend.executions.get(i) is None
    ]
    if missing:
        raise ApiError(400, f"{len(missing)} execution(s) not found: nothing was done", missing)
    for execution_id in dict.fromkeys(body.executions_id):
        await _merge_labels(app, execution_id, items)
    return json_response({"count": len(dict.fromkeys(body.executions_id))})


async def labels_by_query(request: Request) -> Response:
    items = _checked_labels(await json_body(request, list[LabelItem]))
    executions = await selected(request)
    for execution in executions:
        await _merge_labels(state(request), execution.id, items)
    return json_response({"count": len(executions)})


# -- change status ------------------------------------------------------------------------
async def change_status(request: Request) -> Response:
    app = state(request)
    status = _new_status(request, "status")
    execution = await load_execution(app, request.path_params["executionId"])
    why = await _ended_refused(execution, request)
    if why is not None:
        raise ApiError(409, f"execution {execution.id} {why}")
    return json_response(execution_json(await _change_status(app, execution, status)))


async def change_status_by_ids(request: Request) -> Response:
    status = _new_status(request, "newStatus")
    executions = await _by_ids(request)
    refused = await _refusals(ACTIONS["replay"], executions, request)  # the same rule: ended
    if refused:
        raise ApiError(
            400, f"{len(refused)} execution(s) cannot change status: nothing was done", refused
        )
    for execution in executions:
        await _change_status(state(request), execution, status)
    return json_response({"count": len(executions)})


async def change_status_by_query(request: Request) -> Response:
    status = _new_status(request, "newStatus")
    executions = [e for e in await selected(request) if e.state.terminated]
    for execution in executions:
        await _change_status(state(request), execution, status)
    return json_response({"count": len(executions)})


# -- a task run's state -------------------------------------------------------------------
class StateRequest(msgspec.Struct, frozen=True, rename="camel"):
    task_run_id: str
    state: str


async def task_run_state(request: Request) -> Response:
    """A task run of an ended (or paused) execution marked with an end state; the
    executor takes the execution up again from it (after SUCCESS or WARNING the next
    tasks run, after FAILED the errors branch), as Kestra's "mark as". The answer is
    the execution as it was when asked, like a restart's."""
    app = state(request)
    body = await json_body(request, StateRequest)
    try:
        wanted = StateType(body.state.upper())
    except ValueError:
        raise ApiError(422, f"state {body.state!r} is not a state") from None
    if wanted not in (S.SUCCESS, S.WARNING, S.FAILED):
        raise ApiError(
            422, f"state {body.state!r}: a task run can be marked SUCCESS, WARNING or FAILED"
        )
    execution = await load_execution(app, request.path_params["executionId"])
    current = execution.state.current
    if not (current.terminated or current is S.PAUSED):
        raise ApiError(
            409,
            f"execution {execution.id} is {current.value}: a task run's state changes once "
            "the execution has ended (or paused)",
        )
    if execution.find(body.task_run_id) is None:
        raise ApiError(404, f"execution {execution.id} has no task run {body.task_run_id!r}")
    event = Restart(at=app.backend.clock(), task_run_id=body.task_run_id, state=wanted)
    await send_event(app.backend, execution.id, event)
    return json_response(execution_json(execution))


# -- eval ---------------------------------------------------------------------------------
async def eval_expression(request: Request) -> Response:
    """An expression rendered against the execution (against one of its task runs when
    the path names it): ``{"result": ...}``, or ``{"error": ...}`` when it fails."""
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    expression = await text_body(request)
    flow = await app.flows.get(execution.namespace, execution.flow_id, execution.flow_revision)
    task_run_id = request.path_params.get("taskRunId")
    task = run = None
    if task_run_id is not None:
        run = execution.find(task_run_id)
        if run is None:
            raise ApiError(404, f"execution {execution.id} has no task run {task_run_id!r}")
        task = task_index(flow).get(run.task_id)
    context = variables(
        flow, execution, task=task, task_run=run, outputs=outputs_map(execution.task_run_list)
    )
    try:
        result = template.render(expression, context)
    except TemplateError as exc:
        return json_response({"result": None, "error": str(exc)})
    return json_response({"result": result, "error": None})


# -- single actions under /actions --------------------------------------------------------
async def unqueue(request: Request) -> Response:
    return await _single(request, ACTIONS["unqueue"])


async def force_run(request: Request) -> Response:
    return await _single(request, ACTIONS["force-run"])


async def _single(request: Request, action: Action) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    why = await action.refuse(execution, request)
    if why is not None:
        raise ApiError(409, f"execution {execution.id} {why}")
    await action.apply(app, execution, request)
    return json_response(execution_json(execution))


_E = "/api/v1/executions"


def _bulk_routes() -> list[Route]:
    out = []
    for name, action in ACTIONS.items():
        method = "DELETE" if name in ("kill", "delete") else "POST"
        # Kestra's delete in bulk is DELETE /executions/by-ids, the others /{action}/by-ids
        prefix = _E if name == "delete" else f"{_E}/{name}"
        out.append(Route(f"{prefix}/by-ids", bulk_by_ids(action), methods=[method]))
        out.append(Route(f"{prefix}/by-query", bulk_by_query(action), methods=[method]))
    return out


routes = [
    *_bulk_routes(),
    Route(f"{_E}/labels/by-ids", labels_by_ids, methods=["POST"]),
    Route(f"{_E}/labels/by-query", labels_by_query, methods=["POST"]),
    Route(f"{_E}/change-status/by-ids", change_status_by_ids, methods=["POST"]),
    Route(f"{_E}/change-status/by-query", change_status_by_query, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/change-status", change_status, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/state", task_run_state, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/unqueue", unqueue, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/force-run", force_run, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/eval", eval_expression, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/eval/{{taskRunId}}", eval_expression, methods=["POST"]),
    # the SDK's form of the single actions: /executions/{id}/actions/...
    Route(f"{_E}/{{executionId}}/actions/kill", executions_api.kill, methods=["DELETE"]),
    Route(f"{_E}/{{executionId}}/actions/restart", executions_api.restart, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/replay", executions_api.replay, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/resume", executions_api.resume, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/labels", executions_api.set_labels, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/change-status", change_status, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/state", task_run_state, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/unqueue", unqueue, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/force-run", force_run, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/eval", eval_expression, methods=["POST"]),
    Route(f"{_E}/{{executionId}}/actions/eval/{{taskRunId}}", eval_expression, methods=["POST"]),
]
