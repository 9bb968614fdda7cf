"""The scheduler: fires Schedule triggers, exactly once per date.

On each tick (while it holds the ``scheduler`` leader lock, so replicas can stand
by) it reads every deployed flow's Schedule triggers and their stored state. A
due date creates one execution whose id derives from the trigger and the date, in
the same transaction that moves the trigger's ``next_date`` on: a crash before the
commit fires the date again after restart, and the stable id makes that the same
execution, never a second one.

Dates missed while the scheduler was down are recovered per the trigger's
``recoverMissedSchedules``: ALL (the default) fires each, LAST only the most recent,
NONE none of them. ``lateMaximumDelay`` skips dates older than that delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime, timedelta

import msgspec

from backends.errors import Transient
from backends.protocols import Backend, ServiceInstance, TriggerState
from runtime.actors import ChildContext, ServiceState
from runtime.config import SchedulerConfig
from runtime.flow import budget
from runtime.flow.inputs import InputError
from runtime.flow.model import Flow, Trigger
from runtime.flow.template import TemplateError
from runtime.log import get_logger
from services import metrics, trigger_conditions
from services.common import host, sleep_or_stop
from services.flows import FlowCache
from services.submit import submit_in
from services.triggers import SCHEDULE_TYPES, last_fire, next_fire, schedule_execution

log = get_logger(__name__)

#: at most this many missed dates are recovered for one trigger in one tick
MAX_CATCH_UP = 1000


class Scheduler:
    """One scheduler replica; run it as a supervised child with :meth:`run`."""

    def __init__(
        self,
        backend: Backend,
        flows: FlowCache,
        *,
        scheduler_id: str,
        settings: SchedulerConfig | None = None,
    ) -> None:
        self.backend = backend
        self.flows = flows
        self.id = scheduler_id
        self.settings = settings or SchedulerConfig()
        self.fired = 0
        self._started = backend.clock()

    async def run(self, ctx: ChildContext) -> None:
        stopping = asyncio.Event()
        ctx.on_stop_requested(stopping.set)
        ctx.ready()
        leading = False
        while not stopping.is_set():
            try:
                now = self.backend.clock()
                is_leader = await self.backend.leader.acquire(
                    "scheduler", self.id, self.settings.leader_ttl_seconds
                )
                if is_leader != leading:
                    leading = is_leader
                    log.info("scheduler.leadership", scheduler=self.id, leader=leading)
                await self._heartbeat(now, leading)
                if leading:
                    await self.tick(now)
            except Transient as exc:
                log.warning("scheduler.backend_unavailable", error=str(exc))
            await sleep_or_stop(stopping, self.settings.tick_seconds)
        if leading:
            with contextlib.suppress(Transient):
                await self.backend.leader.release("scheduler", self.id)

    async def _heartbeat(self, now: datetime, leading: bool) -> None:
        await self.backend.services.heartbeat(
            ServiceInstance(
                id=self.id,
                kind="scheduler",
                state=ServiceState.RUNNING.value,
                host=host(),
                pid=os.getpid(),
                started=self._started,
                heartbeat=now,
                info={"leader": leading, "fired": self.fired},
            )
        )

    async def tick(self, now: datetime) -> int:
        """Fire every due date of every Schedule trigger; returns how many fired."""
        fired = 0
        for record in await self.backend.flows.list():
            try:
                flow = self.flows.parse(record)
            except ValueError as exc:
                log.error(
                    "scheduler.flow_invalid", flow=f"{record.namespace}.{record.id}", error=str(exc)
                )
                continue
            if flow.disabled:
                continue
            for trigger in flow.triggers:
                if trigger.type in SCHEDULE_TYPES and not trigger.disabled:
                    fired += await self._evaluate(flow, trigger, now)
        self.fired += fired
        return fired

    async def _evaluate(self, flow: Flow, trigger: Trigger, now: datetime) -> int:
        triggers = self.backend.triggers
        state = await triggers.get(flow.namespace, flow.id, trigger.id)
        if state is not None and state.disabled:
            return 0
        cron = f"{trigger.cron}|{trigger.timezone}|{trigger.with_seconds}"
        if state is None or state.data.get("cron") != cron or state.next_date is None:
            start = now
            if trigger.backfill and trigger.backfill.get("start") and state is None:
                start = datetime.fromisoformat(str(trigger.backfill["start"])) - timedelta(
                    microseconds=1
                )
            await triggers.save(
                TriggerState(
                    namespace=flow.namespace,
                    flow_id=flow.id,
                    trigger_id=trigger.id,
                    next_date=next_fire(trigger, start),
                    last_date=state.last_date if state else None,
                    flow_revision=flow.revision,
                    data={"cron": cron},
                )
            )
            state = await triggers.get(flow.namespace, flow.id, trigger.id)
            assert state is not None
        policy = (trigger.recover_missed_schedules or "ALL").upper()
        due: list[datetime] = []
        date = state.next_date
        while date is not None and date <= now and len(due) < MAX_CATCH_UP:
            due.append(date)
            date = next_fire(trigger, date)
        if policy != "ALL" and date is not None and date <= now:
            # A long downtime: only the latest date matters; find it without walking.
            last = last_fire(trigger, now)
            due = [last] if last is not None else due
            date = next_fire(trigger, now)
        if not due:
            return 0
        to_fire = [
            when
            for when in self._recover(trigger, due, now)
            # a date its conditions refuse (a holiday, a weekend...) is skipped
            if all(trigger_conditions.schedule_allows(c, flow, when) for c in trigger.conditions)
        ]
        fired = 0
        async with self.backend.transaction() as tx:
            for when in to_fire:
                try:
                    execution = await budget.evaluate(schedule_execution, flow, trigger, when, now)
                except (InputError, TemplateError) as exc:
                    log.error(
                        "scheduler.inputs_invalid",
                        flow=flow.uid,
                        trigger=trigger.id,
                        error=str(exc),
                    )
                    continue
                if await tx.executions.get(execution.id) is not None:
                    continue
                await submit_in(tx, execution, now=now)
                fired += 1
            await tx.triggers.save(
                msgspec.structs.replace(
                    state, next_date=date, last_date=due[-1], flow_revision=flow.revision
                )
            )
        for when in to_fire:
            metrics.SCHEDULER_LAG.observe(max(0.0, (now - when).total_seconds()))
        if fired:
            log.info("scheduler.fired", flow=flow.uid, trigger=trigger.id, executions=fired)
        return fired

    def _recover(self, trigger: Trigger, due: list[datetime], now: datetime) -> list[datetime]:
        late_after = timedelta(seconds=self.settings.late_after_seconds)
        missed = [d for d in due if now - d > late_after]
        current = [d for d in due if now - d <= late_after]
        policy = (trigger.recover_missed_schedules or "ALL").upper()
        if missed:
            log.info("scheduler.missed", trigger=trigger.id, missed=len(missed), policy=policy)
        if policy == "NONE":
            chosen = current
        elif policy == "LAST":
            chosen = [due[-1]]
        else:
            chosen = due
        if trigger.late_maximum_delay is not None:
            chosen = [d for d in chosen if now - d <= trigger.late_maximum_delay]
        return chosen
