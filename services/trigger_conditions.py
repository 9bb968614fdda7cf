"""The conditions of Flow triggers (``io.kestra.plugin.core.condition.*``), and the
joins over several upstream flows (``MultipleCondition``, ``preconditions``).

A condition is evaluated against the execution that just ended. A join remembers,
in the listening trigger's state (``TriggerState.data["join"]``), which of its named
conditions have held within its time window; it fires when all have, then starts
over. Windows are Kestra's ``DURATION_WINDOW`` (the default: ``window`` long, from
the first condition that held, ``windowAdvance`` ignored) and ``SLIDING_WINDOW``
(each result expires ``window`` after it was seen); the daily deadline windows are
not supported (logged once as such, treated as a duration window of a day).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

import msgspec

from backends.protocols import Stores, TriggerState
from runtime.flow import template
from runtime.flow.context import is_truthy, iso
from runtime.flow.durations import DurationError, parse_duration
from runtime.flow.events import ExecutionEnded
from runtime.flow.execution import Execution
from runtime.flow.model import Flow, Trigger
from runtime.log import get_logger
from services import holidays_calendar

log = get_logger(__name__)

_DAYS = [day.upper() for day in calendar.day_name]  # MONDAY .. SUNDAY


def _kind(condition: Mapping[str, Any]) -> str:
    return str(condition.get("type", "")).rsplit(".", 1)[-1].removesuffix("Condition")


def _labels(execution: Execution) -> dict[str, str]:
    return {item["key"]: item["value"] for item in execution.labels}


def variables(flow: Flow, ended: Execution, command: ExecutionEnded) -> dict[str, Any]:
    """What an Expression condition sees: the ended execution, its outputs and labels,
    and the listening flow."""
    execution = {
        "id": ended.id,
        "namespace": ended.namespace,
        "flowId": ended.flow_id,
        "flowRevision": ended.flow_revision,
        "state": command.state.value,
        "startDate": iso(ended.state.start_date),
        "outputs": command.outputs or {},
        "labels": _labels(ended),
    }
    return {
        "execution": execution,
        "trigger": execution,
        "outputs": command.outputs or {},
        "labels": _labels(ended),
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
        "vars": flow.variables,
    }


def holds(
    condition: Mapping[str, Any], flow: Flow, ended: Execution, command: ExecutionEnded
) -> bool:
    """Whether one (non-join) condition holds for ``ended``."""
    kind = _kind(condition)
    state = command.state.value
    if kind == "ExecutionFlow":
        return bool(
            condition.get("namespace") == ended.namespace
            and condition.get("flowId") == ended.flow_id
        )
    if kind == "ExecutionStatus":
        allowed, refused = condition.get("in"), condition.get("notIn")
        return (not allowed or state in allowed) and (not refused or state not in refused)
    if kind in ("ExecutionNamespace", "FlowNamespace"):
        target = ended.namespace if kind == "ExecutionNamespace" else flow.namespace
        return _namespace_matches(condition, target)
    if kind == "Flow":  # FlowCondition: the listening flow is the one named
        return bool(
            condition.get("namespace") == flow.namespace and condition.get("flowId") == flow.id
        )
    if kind == "ExecutionLabels":
        wanted = condition.get("labels") or {}
        if isinstance(wanted, list):
            wanted = {item.get("key"): item.get("value") for item in wanted}
        have = _labels(ended)
        return all(have.get(str(k)) == str(v) for k, v in wanted.items())
    if kind in ("Expression", "ExecutionOutputs"):
        expression = condition.get("expression")
        if not isinstance(expression, str):
            return False
        context = variables(flow, ended, command)
        try:
            with template.fixed_now(command.at):
                return is_truthy(template.render(expression, context))
        except template.TemplateError as exc:
            log.warning("trigger.condition_failed", condition=kind, error=str(exc))
            return False
    if kind == "Not":
        inner = condition.get("conditions") or []
        return not any(holds(c, flow, ended, command) for c in inner)
    if kind == "Or":
        inner = condition.get("conditions") or []
        return any(holds(c, flow, ended, command) for c in inner)
    if kind in _CALENDAR_KINDS:
        return _calendar(kind, condition, command.at, variables(flow, ended, command))
    if kind == "HasRetryAttempt":
        allowed, refused = condition.get("in"), condition.get("notIn")
        for run in ended.task_run_list:
            for attempt in run.attempts[:-1]:  # the attempts that were retried
                seen = attempt.state.current.value
                if (not allowed or seen in allowed) and (not refused or seen not in refused):
                    return True
        return False
    log.warning("trigger.unknown_condition", condition=condition.get("type"))
    return False


def _namespace_matches(condition: Mapping[str, Any], namespace: str) -> bool:
    wanted = str(condition.get("namespace", ""))
    comparison = str(condition.get("comparison") or "").upper()
    if condition.get("prefix") or comparison == "PREFIX":
        return namespace == wanted or namespace.startswith(wanted)
    if comparison == "SUFFIX":
        return namespace.endswith(wanted)
    return namespace == wanted


_CALENDAR_KINDS = frozenset(
    ("DateTimeBetween", "TimeBetween", "DayWeek", "DayWeekInMonth", "Weekend", "PublicHoliday")
)


def schedule_allows(condition: Mapping[str, Any], flow: Flow, date: datetime) -> bool:
    """Whether a Schedule trigger's condition lets it fire at ``date`` (Kestra's
    ScheduleCondition: the calendar kinds, Expression, and Not/Or of them)."""
    kind = _kind(condition)
    context = {
        # in the trigger's zone, as Kestra's ZonedDateTime: the local day is the one tested
        "trigger": {"date": date.isoformat()},
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
        "vars": flow.variables,
    }
    if kind in _CALENDAR_KINDS:
        return _calendar(kind, condition, date, context)
    if kind == "Not":
        return not any(schedule_allows(c, flow, date) for c in condition.get("conditions") or [])
    if kind == "Or":
        return any(schedule_allows(c, flow, date) for c in condition.get("conditions") or [])
    if kind == "Expression":
        try:
            with template.fixed_now(date):
                return is_truthy(template.render(str(condition.get("expression", "")), context))
        except template.TemplateError as exc:
            log.warning("trigger.condition_failed", condition=kind, error=str(exc))
            return False
    log.warning("trigger.unsupported_schedule_condition", condition=condition.get("type"))
    return False


def _rendered(value: Any, context: Mapping[str, Any]) -> Any:
    """A dynamic property of a calendar condition (``date`` may be ``{{ trigger.date }}``)."""
    if isinstance(value, str) and template.has_expression(value):
        return template.render(value, context)
    return value


def _calendar(
    kind: str, condition: Mapping[str, Any], at: datetime, context: Mapping[str, Any]
) -> bool:
    trigger = dict(context.get("trigger") or {})
    trigger.setdefault("date", iso(at))
    context = {**context, "trigger": trigger}
    try:
        when = _when(_rendered(condition.get("date"), context), at)
    except (template.TemplateError, ValueError) as exc:
        log.warning("trigger.condition_failed", condition=kind, error=str(exc))
        return False
    if kind == "PublicHoliday":
        return holidays_calendar.is_holiday(
            when.date(),
            _rendered(condition.get("country"), context),
            _rendered(condition.get("subDivision"), context),
        )
    if kind == "DateTimeBetween":
        after, before = _maybe_when(condition.get("after")), _maybe_when(condition.get("before"))
        return (after is None or when >= after) and (before is None or when <= before)
    if kind == "TimeBetween":
        moment = when.timetz().replace(tzinfo=None)
        start, end = _time(condition.get("after")), _time(condition.get("before"))
        return (start is None or moment >= start) and (end is None or moment <= end)
    day = _DAYS[when.weekday()]
    if kind == "Weekend":
        return day in ("SATURDAY", "SUNDAY")
    if kind == "DayWeek":
        return day == str(condition.get("dayOfWeek", "")).upper()
    # DayWeekInMonth: FIRST, SECOND, THIRD, FOURTH or LAST such weekday of the month
    if day != str(condition.get("dayOfWeek", "")).upper():
        return False
    which = str(condition.get("dayInMonth", "FIRST")).upper()
    if which == "LAST":
        return when.day + 7 > calendar.monthrange(when.year, when.month)[1]
    order = {"FIRST": 1, "SECOND": 2, "THIRD": 3, "FOURTH": 4}.get(which)
    return order is not None and (when.day - 1) // 7 + 1 == order


def _when(value: Any, default: datetime | None) -> datetime:
    if value in (None, ""):
        return default or datetime.now(UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _maybe_when(value: Any) -> datetime | None:
    return None if value in (None, "") else _when(value, None)


def _time(value: Any) -> time | None:
    if value in (None, ""):
        return None
    text = str(value)
    for suffix in ("Z", "+00:00"):
        text = text.removesuffix(suffix)
    return time.fromisoformat(text)


# -- joins over several flows ------------------------------------------------------
def join_of(trigger: Trigger) -> tuple[dict[str, Any], timedelta, bool] | None:
    """The named conditions of the trigger's join, its window and whether it slides;
    None when the trigger has no join over several flows."""
    for condition in trigger.conditions:
        if _kind(condition) == "Multiple":
            named = dict(condition.get("conditions") or {})
            return named, _duration(condition.get("window"), timedelta(days=1)), False
    pre = trigger.preconditions or {}
    flows = pre.get("flows") or []
    if len(flows) <= 1 and not pre.get("where"):
        return None
    named = {}
    for index, rule in enumerate(flows):
        named[f"flow-{index}"] = {"type": "_Upstream", **rule}
    for index, rule in enumerate(pre.get("where") or []):
        named[str(rule.get("id") or f"where-{index}")] = {"type": "_Filters", **rule}
    window = pre.get("timeWindow") or {}
    kind = str(window.get("type") or "DURATION_WINDOW").upper()
    if kind not in ("DURATION_WINDOW", "SLIDING_WINDOW"):
        log.warning("trigger.unsupported_time_window", trigger=trigger.id, window=kind)
    return named, _duration(window.get("window"), timedelta(days=1)), kind == "SLIDING_WINDOW"


def _duration(value: Any, default: timedelta) -> timedelta:
    if value in (None, ""):
        return default
    try:
        return parse_duration(value)
    except DurationError:
        return default


def _named_holds(
    condition: Mapping[str, Any], flow: Flow, ended: Execution, command: ExecutionEnded
) -> bool:
    kind = condition.get("type")
    if kind == "_Upstream":
        states = condition.get("states")
        labels = condition.get("labels") or {}
        have = _labels(ended)
        return (
            condition.get("namespace") in (None, ended.namespace)
            and condition.get("flowId") in (None, ended.flow_id)
            and (not states or command.state.value in states)
            and all(have.get(str(k)) == str(v) for k, v in dict(labels).items())
        )
    if kind == "_Filters":
        return all(_filter(f, flow, ended, command) for f in condition.get("filters") or [])
    return holds(condition, flow, ended, command)


def _filter(rule: Mapping[str, Any], flow: Flow, ended: Execution, command: ExecutionEnded) -> bool:
    field = str(rule.get("field", "")).upper()
    kind = str(rule.get("type", "")).upper()
    value = rule.get("value")
    values = rule.get("values") or ([] if value is None else [value])
    if field == "EXPRESSION":
        context = variables(flow, ended, command)
        try:
            text = template.render(str(value), context)
        except template.TemplateError:
            return False
        return is_truthy(text) == (kind != "IS_FALSE")
    subject = {
        "NAMESPACE": ended.namespace,
        "FLOW_ID": ended.flow_id,
        "STATE": command.state.value,
    }.get(field)
    if subject is None:
        log.warning("trigger.unknown_filter", field=field)
        return False
    return _compare(kind, subject, str(value), [str(v) for v in values])


def _compare(kind: str, subject: str, value: str, values: list[str]) -> bool:
    if kind == "EQUAL_TO":
        return subject == value
    if kind == "NOT_EQUAL_TO":
        return subject != value
    if kind == "STARTS_WITH":
        return subject.startswith(value)
    if kind == "ENDS_WITH":
        return subject.endswith(value)
    if kind == "CONTAINS":
        return value in subject
    if kind == "REGEX":
        return re.fullmatch(value, subject) is not None
    if kind == "IN":
        return subject in values
    if kind == "NOT_IN":
        return subject not in values
    log.warning("trigger.unknown_filter", type=kind)
    return False


async def join_fires(
    tx: Stores,
    flow: Flow,
    trigger: Trigger,
    join: tuple[dict[str, Any], timedelta, bool],
    ended: Execution,
    command: ExecutionEnded,
) -> bool:
    """Record which named conditions ``ended`` satisfies; True when, with what was
    seen before within the window, all of them have held (the join then starts over)."""
    named, window, sliding = join
    matched = [name for name, c in named.items() if _named_holds(c, flow, ended, command)]
    if not matched:
        return False
    state = await tx.triggers.get(flow.namespace, flow.id, trigger.id)
    if state is None:
        state = TriggerState(namespace=flow.namespace, flow_id=flow.id, trigger_id=trigger.id)
    data = dict(state.data)
    seen: dict[str, str] = dict((data.get("join") or {}).get("seen") or {})
    started = (data.get("join") or {}).get("start")
    now = command.at
    if sliding:
        seen = {k: v for k, v in seen.items() if now - _when(v, now) <= window}
    elif started is not None and now - _when(started, now) > window:
        seen, started = {}, None
    if started is None:
        started = iso(now)
    for name in matched:
        seen[name] = iso(now) or ""
    fired = set(seen) >= set(named)
    data["join"] = {} if fired else {"start": started, "seen": seen}
    await tx.triggers.save(msgspec.structs.replace(state, data=data))
    return fired


__all__ = ["holds", "join_fires", "join_of", "schedule_allows", "variables"]
