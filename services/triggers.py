"""Triggers: when Schedule triggers are due, and which Flow triggers an ended
execution fires.

Kestra's trigger types and their older names are both accepted. Flow triggers
support the core ``conditions`` and ``preconditions``, joins over several flows
included (:mod:`services.trigger_conditions`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from croniter import croniter

from backends.protocols import Backend, Stores, TriggerState
from runtime.flow import budget, template
from runtime.flow.context import iso
from runtime.flow.events import ExecutionEnded
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import derived_id
from runtime.flow.inputs import InputError, resolve_inputs
from runtime.flow.loader import FlowError
from runtime.flow.model import Flow, Trigger
from runtime.log import get_logger
from services import trigger_conditions as conditions
from services.flows import FlowCache

log = get_logger(__name__)

SCHEDULE_TYPES = frozenset(
    {
        "io.kestra.plugin.core.trigger.Schedule",
        "io.kestra.core.models.triggers.types.Schedule",
    }
)
FLOW_TYPES = frozenset(
    {
        "io.kestra.plugin.core.trigger.Flow",
        "io.kestra.core.models.triggers.types.Flow",
    }
)
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


# -- schedules -----------------------------------------------------------------------
def schedule_iter(trigger: Trigger, after: datetime) -> Iterator[datetime]:
    """The trigger's fire dates strictly after ``after``, in UTC."""
    if trigger.cron is None:
        return iter(())
    expression = _NICKNAMES.get(trigger.cron.strip().lower(), trigger.cron.strip())
    if trigger.with_seconds:
        # Kestra puts seconds first; croniter wants them last.
        fields = expression.split()
        expression = " ".join([*fields[1:], fields[0]])
    zone = ZoneInfo(trigger.timezone) if trigger.timezone else UTC
    start = after.astimezone(zone)
    itr = croniter(expression, start)

    def dates() -> Iterator[datetime]:
        while True:
            yield itr.get_next(datetime).astimezone(UTC)

    return dates()


def next_fire(trigger: Trigger, after: datetime) -> datetime | None:
    return next(schedule_iter(trigger, after), None)


def last_fire(trigger: Trigger, until: datetime) -> datetime | None:
    """The latest fire date at or before ``until``, in UTC (without walking there)."""
    if trigger.cron is None:
        return None
    expression = _NICKNAMES.get(trigger.cron.strip().lower(), trigger.cron.strip())
    if trigger.with_seconds:
        fields = expression.split()
        expression = " ".join([*fields[1:], fields[0]])
    zone = ZoneInfo(trigger.timezone) if trigger.timezone else UTC
    itr = croniter(expression, (until + timedelta(microseconds=1)).astimezone(zone))
    found: datetime = itr.get_prev(datetime)
    return found.astimezone(UTC)


def schedule_execution(flow: Flow, trigger: Trigger, date: datetime, at: datetime) -> Execution:
    """The execution a Schedule trigger creates for ``date`` (a stable id per date, so
    firing the same date twice creates nothing new)."""
    following = next_fire(trigger, date)
    variables = {
        "date": iso(date),
        "next": iso(following),
        "previous": None,
    }
    inputs = _trigger_inputs(flow, trigger, {"trigger": variables}, at)
    return new_execution(
        id=derived_id(flow.namespace, flow.id, trigger.id, date.isoformat()),
        namespace=flow.namespace,
        flow_id=flow.id,
        flow_revision=flow.revision,
        at=at,
        inputs=inputs,
        labels=flow.label_map(),
        trigger={"id": trigger.id, "type": trigger.type, "variables": variables, **variables},
    )


# -- flow triggers ---------------------------------------------------------------------
async def list_triggers(
    backend: Backend,
    flows: FlowCache,
    *,
    namespace: str | None = None,
    flow_id: str | None = None,
    query: str | None = None,
) -> list[dict[str, Any]]:
    """Every trigger of the deployed flows, in the API's shape (``abstractTrigger``,
    ``triggerContext`` with the next fire date), filtered as the API's search is:
    ``namespace`` matches it and the namespaces below, ``query`` any of the ids."""
    needle = (query or "").lower()
    saved = {(s.namespace, s.flow_id, s.trigger_id): s for s in await backend.triggers.list()}
    now = backend.clock()
    items = []
    for record in await backend.flows.list():
        if namespace and not (
            record.namespace == namespace or record.namespace.startswith(namespace + ".")
        ):
            continue
        if flow_id and record.id != flow_id:
            continue
        try:
            flow = flows.parse(record)
        except FlowError:
            continue
        for trigger in flow.triggers:
            if needle and not any(
                needle in x.lower() for x in (trigger.id, flow.id, flow.namespace)
            ):
                continue
            key = (flow.namespace, flow.id, trigger.id)
            items.append(trigger_json(flow, trigger, saved.get(key), now))
    return items


def _context(
    flow: Flow,
    trigger: Trigger,
    saved: TriggerState | None,
    next_date: datetime | None,
    disabled: bool,
) -> dict[str, Any]:
    return {
        "namespace": flow.namespace,
        "flowId": flow.id,
        "triggerId": trigger.id,
        "flowRevision": flow.revision,
        "date": saved.last_date if saved else None,
        "nextExecutionDate": next_date,
        "disabled": disabled,
    }


def trigger_json(
    flow: Flow,
    trigger: Trigger,
    saved: TriggerState | None,
    now: datetime,
    kestra_2: bool = False,
) -> dict[str, Any]:
    """A trigger and its state: Kestra 1.x's ``abstractTrigger`` and
    ``triggerContext``, and with ``kestra_2`` (the tenant paths) also the SDK's
    ``trigger`` and ``state``."""
    disabled = trigger.disabled or flow.disabled or (saved is not None and saved.disabled)
    next_date = None
    if trigger.type in SCHEDULE_TYPES and not disabled:
        next_date = saved.next_date if saved and saved.next_date else next_fire(trigger, now)
    declared = {k: v for k, v in msgspec.to_builtins(trigger).items() if v not in (None, [], {})}
    out: dict[str, Any] = {
        "abstractTrigger": declared,
        "triggerContext": _context(flow, trigger, saved, next_date, disabled),
    }
    if kestra_2:
        # the SDK's shape (ApiTriggerAndState); the state keeps no update date, so
        # `updatedAt` is its last fire, else now
        out["trigger"] = declared
        out["state"] = {
            "namespace": flow.namespace,
            "flowId": flow.id,
            "triggerId": trigger.id,
            "updatedAt": (saved.last_date if saved else None) or now,
            "nextEvaluationDate": next_date,
            "lastTriggeredDate": saved.last_date if saved else None,
            "disabled": disabled,
        }
    return out


async def flows_with_flow_triggers(tx: Stores, cache: FlowCache) -> list[Flow]:
    """Deployed flows with an enabled Flow trigger (parsing is cached per revision)."""
    flows = []
    for record in await tx.flows.list():
        flow = cache.parse(record)
        if not flow.disabled and any(
            t.type in FLOW_TYPES and not t.disabled for t in flow.triggers
        ):
            flows.append(flow)
    return flows


async def flow_trigger_executions(
    tx: Stores, candidates: list[Flow], ended: Execution, command: ExecutionEnded
) -> list[Execution]:
    """The executions Flow triggers create because ``ended`` ended; ``candidates`` are
    the flows with Flow triggers (:func:`flows_with_flow_triggers`)."""
    out = []
    for flow in candidates:
        if (flow.namespace, flow.id) == (ended.namespace, ended.flow_id):
            continue  # as in Kestra: a flow never triggers itself
        for trigger in flow.triggers:
            if trigger.type not in FLOW_TYPES or trigger.disabled:
                continue
            if not _matches(flow, trigger, ended, command):
                continue
            join = conditions.join_of(trigger)
            if join is not None and not await conditions.join_fires(
                tx, flow, trigger, join, ended, command
            ):
                continue
            execution_id = derived_id(flow.namespace, flow.id, trigger.id, ended.id)
            if await tx.executions.get(execution_id) is not None:
                continue
            variables = {
                "executionId": ended.id,
                "namespace": ended.namespace,
                "flowId": ended.flow_id,
                "flowRevision": ended.flow_revision,
                "state": command.state.value,
                "outputs": command.outputs or {},
            }
            try:
                inputs = await budget.evaluate(
                    _trigger_inputs, flow, trigger, {"trigger": variables}, command.at
                )
            except InputError as exc:
                # Kestra starts a Flow trigger's execution with the inputs as rendered,
                # unchecked (its own test listener has a required input no trigger
                # gives); a task reading a missing one fails, naming it.
                log.warning(
                    "trigger.inputs_unchecked", flow=flow.uid, trigger=trigger.id, error=str(exc)
                )
                inputs = await budget.evaluate(
                    _rendered_inputs, flow, trigger, {"trigger": variables}, command.at
                )
            except template.TemplateError as exc:
                log.error(
                    "trigger.inputs_invalid", flow=flow.uid, trigger=trigger.id, error=str(exc)
                )
                continue
            out.append(
                new_execution(
                    id=execution_id,
                    namespace=flow.namespace,
                    flow_id=flow.id,
                    flow_revision=flow.revision,
                    at=command.at,
                    inputs=inputs,
                    labels=flow.label_map(),
                    trigger={"id": trigger.id, "type": trigger.type, **variables},
                )
            )
    return out


def _matches(flow: Flow, trigger: Trigger, ended: Execution, command: ExecutionEnded) -> bool:
    if trigger.states and command.state.value not in trigger.states:
        return False
    for condition in trigger.conditions:
        if str(condition.get("type", "")).endswith("MultipleCondition"):
            continue  # a join: see trigger_conditions.join_fires
        if not conditions.holds(condition, flow, ended, command):
            return False
    pre = trigger.preconditions
    if pre and conditions.join_of(trigger) is None:
        for rule in pre.get("flows") or []:
            if rule.get("namespace") and rule["namespace"] != ended.namespace:
                return False
            if rule.get("flowId") and rule["flowId"] != ended.flow_id:
                return False
            states = rule.get("states")
            if states and command.state.value not in states:
                return False
    # Without any state condition Kestra's Flow trigger fires on every terminal state.
    return True


def _trigger_inputs(
    flow: Flow, trigger: Trigger, extra: dict[str, Any], at: datetime
) -> dict[str, Any]:
    return resolve_inputs(flow, _rendered_inputs(flow, trigger, extra, at), now=at)


def _rendered_inputs(
    flow: Flow, trigger: Trigger, extra: dict[str, Any], at: datetime
) -> dict[str, Any]:
    context = {
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
        "vars": flow.variables,
        **extra,
    }
    with template.fixed_now(at):
        rendered: dict[str, Any] = template.render_value(dict(trigger.inputs), context)
    return rendered


__all__ = [
    "FLOW_TYPES",
    "SCHEDULE_TYPES",
    "flow_trigger_executions",
    "flows_with_flow_triggers",
    "next_fire",
    "schedule_execution",
    "schedule_iter",
]
