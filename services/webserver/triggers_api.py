"""``/api/v1/triggers``: every trigger of the deployed flows with its next fire date;
enable and disable; backfill a Schedule over past dates."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.protocols import FlowRecord, TriggerState
from runtime.flow import budget
from runtime.flow.inputs import InputError
from runtime.flow.loader import FlowError
from runtime.flow.model import Flow, Trigger
from runtime.flow.template import TemplateError
from services.submit import submit_in
from services.triggers import SCHEDULE_TYPES, schedule_execution, schedule_iter, trigger_json
from services.webserver.executions_api import invalid_inputs
from services.webserver.http import (
    NAMESPACE_OPS,
    ApiError,
    AppState,
    Filters,
    json_body,
    json_response,
    namespace_matcher,
    not_found,
    paged,
    paging,
    parse_datetime,
    q_bool,
    q_str,
    state,
)
from services.webserver.tenants import tenant_path_used

#: a backfill creates at most this many executions (ask for shorter ranges)
MAX_BACKFILL = 1000


def _parse(app: AppState, record: FlowRecord) -> Flow | None:
    try:
        return app.flows.parse(record)
    except FlowError:
        return None


#: the filters a trigger search takes (Kestra 1.x ``filters[field][OPERATION]``)
TRIGGER_FILTERS = {
    "namespace": NAMESPACE_OPS,
    "flowId": ("EQUALS",),
    "triggerId": ("EQUALS",),
    "q": ("EQUALS", "CONTAINS"),
}


async def _matching(
    request: Request, flow_id: str | None = None
) -> list[tuple[Flow, Trigger, TriggerState | None]]:
    app = state(request)
    filters = Filters(request, TRIGGER_FILTERS)
    in_namespace = namespace_matcher(request, filters)
    flow_id = flow_id or q_str(request, "flowId") or filters.value("flowId")
    trigger_id = filters.value("triggerId")
    queries = [q.lower() for q in (q_str(request, "q"), *filters.values("q")) if q]
    saved = {(s.namespace, s.flow_id, s.trigger_id): s for s in await app.backend.triggers.list()}
    items = []
    for record in await app.backend.flows.list():
        if not in_namespace(record.namespace) or (flow_id and record.id != flow_id):
            continue
        flow = _parse(app, record)
        if flow is None:
            continue
        for trigger in flow.triggers:
            if trigger_id and trigger.id != trigger_id:
                continue
            names = (trigger.id, flow.id, flow.namespace)
            if any(not any(q in x.lower() for x in names) for q in queries):
                continue
            items.append((flow, trigger, saved.get((flow.namespace, flow.id, trigger.id))))
    return items


async def _page(request: Request, flow_id: str | None = None) -> Response:
    app = state(request)
    limit, offset = paging(request)
    now = app.backend.clock()
    both = tenant_path_used(request)
    items = [trigger_json(f, t, s, now, both) for f, t, s in await _matching(request, flow_id)]
    return json_response(paged(items[offset : offset + limit], len(items)))


async def search(request: Request) -> Response:
    return await _page(request)


async def of_flow(request: Request) -> Response:
    """The triggers of one flow (``/triggers/{namespace}/{flowId}``)."""
    namespace, flow_id = request.path_params["namespace"], request.path_params["flowId"]
    if await state(request).backend.flows.get(namespace, flow_id) is None:
        raise not_found(f"flow {namespace}.{flow_id}")
    return await _page(request, flow_id)


async def set_disabled_by_query(request: Request) -> Response:
    app = state(request)
    disabled = q_bool(request, "disabled", True)
    found = await _matching(request)
    for flow, trigger, _ in found:
        await _set_disabled(app, flow, trigger, disabled)
    return json_response({"count": len(found)})


class Backfill(msgspec.Struct, frozen=True, rename="camel"):
    start: str
    end: str | None = None
    inputs: dict[str, Any] = {}
    labels: list[dict[str, str]] | dict[str, str] = {}


class TriggerUpdate(msgspec.Struct, frozen=True, rename="camel"):
    namespace: str
    flow_id: str
    trigger_id: str
    disabled: bool | None = None
    backfill: Backfill | None = None


async def _find(
    app: AppState, namespace: str, flow_id: str, trigger_id: str
) -> tuple[Flow, Trigger]:
    record = await app.backend.flows.get(namespace, flow_id)
    flow = _parse(app, record) if record is not None else None
    if flow is None:
        raise not_found(f"flow {namespace}.{flow_id}")
    trigger = next((t for t in flow.triggers if t.id == trigger_id), None)
    if trigger is None:
        raise not_found(f"trigger {trigger_id!r} of flow {namespace}.{flow_id}")
    return flow, trigger


async def _set_disabled(app: AppState, flow: Flow, trigger: Trigger, disabled: bool) -> None:
    store = app.backend.triggers
    saved = await store.get(flow.namespace, flow.id, trigger.id)
    if saved is None:
        saved = TriggerState(namespace=flow.namespace, flow_id=flow.id, trigger_id=trigger.id)
    if disabled:
        await store.save(msgspec.structs.replace(saved, disabled=True))
    else:
        # Forget the schedule's cursor too: re-enabled, it fires from now on, not for
        # every date missed while it was off.
        await store.save(msgspec.structs.replace(saved, disabled=False, data={}, next_date=None))


async def _backfill(app: AppState, flow: Flow, trigger: Trigger, backfill: Backfill) -> int:
    if trigger.type not in SCHEDULE_TYPES:
        raise ApiError(422, f"trigger {trigger.id!r} is not a Schedule: only those backfill")
    now = app.backend.clock()
    start = parse_datetime(backfill.start, "backfill.start")
    end = parse_datetime(backfill.end, "backfill.end") if backfill.end else now
    if end < start:
        raise ApiError(422, "backfill.end is before backfill.start")
    dates = []
    try:
        for date in schedule_iter(trigger, start - timedelta(microseconds=1)):
            if date > end:
                break
            dates.append(date)
            if len(dates) > MAX_BACKFILL:
                raise ApiError(
                    422, f"the backfill covers more than {MAX_BACKFILL} dates: split the range"
                )
    except (OverflowError, ValueError) as exc:
        raise ApiError(422, f"the backfill's dates are out of range: {exc}") from None
    labels = (
        backfill.labels
        if isinstance(backfill.labels, dict)
        else {i.get("key", ""): i.get("value", "") for i in backfill.labels}
    )
    source = msgspec.structs.replace(trigger, inputs={**trigger.inputs, **backfill.inputs})
    created = 0
    # One transaction: the whole backfill is queued, or nothing (stable ids per date,
    # so a date already fired, by the scheduler or an earlier backfill, is skipped).
    async with app.backend.transaction() as tx:
        for date in dates:
            try:
                execution = await budget.evaluate(schedule_execution, flow, source, date, now)
            except InputError as exc:
                raise invalid_inputs(exc) from None
            except TemplateError as exc:
                raise ApiError(422, f"the trigger's inputs cannot be rendered: {exc}") from None
            if await tx.executions.get(execution.id) is not None:
                continue
            if labels:
                merged = {**{x["key"]: x["value"] for x in execution.labels}, **labels}
                execution = msgspec.structs.replace(
                    execution, labels=tuple({"key": k, "value": v} for k, v in merged.items())
                )
            await submit_in(tx, execution, now=now)
            created += 1
    return created


async def update(request: Request) -> Response:
    app = state(request)
    body = await json_body(request, TriggerUpdate)
    flow, trigger = await _find(app, body.namespace, body.flow_id, body.trigger_id)
    if body.disabled is not None:
        await _set_disabled(app, flow, trigger, body.disabled)
    created = None
    if body.backfill is not None:
        created = await _backfill(app, flow, trigger, body.backfill)
    saved = await app.backend.triggers.get(flow.namespace, flow.id, trigger.id)
    out = trigger_json(flow, trigger, saved, app.backend.clock())
    if created is not None:
        out["backfill"] = {"executions": created}
    return json_response(out)


class TriggerRef(msgspec.Struct, frozen=True, rename="camel"):
    namespace: str
    flow_id: str
    trigger_id: str


class SetDisabled(msgspec.Struct, frozen=True):
    triggers: list[TriggerRef]
    disabled: bool


async def set_disabled(request: Request) -> Response:
    app = state(request)
    body = await json_body(request, SetDisabled)
    found = [await _find(app, t.namespace, t.flow_id, t.trigger_id) for t in body.triggers]
    for flow, trigger in found:
        await _set_disabled(app, flow, trigger, body.disabled)
    return json_response({"count": len(found)})


routes = [
    Route("/api/v1/triggers/search", search, methods=["GET"]),
    Route("/api/v1/triggers", update, methods=["PUT"]),
    Route("/api/v1/triggers/set-disabled/by-triggers", set_disabled, methods=["POST"]),
    Route("/api/v1/triggers/set-disabled/by-query", set_disabled_by_query, methods=["POST"]),
    Route("/api/v1/triggers/{namespace}/{flowId}", of_flow, methods=["GET"]),
]
