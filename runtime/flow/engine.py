"""The execution engine: ``apply(execution, flow, event) -> (execution, commands)``.

Pure: no I/O and no clock; every date comes from ``event.at``. Applying the same
event twice, or a stale one (an older attempt, a task run already ended), changes
nothing. The engine never mutates its input: it works on a copy of the task run
list and returns a new Execution (the same object when nothing changed).

How it decides: after applying the event, it *drives* the tree. Each scope (the
flow itself, or a running flowable task run) looks at its children's task runs,
creates the next ones its type calls for, and ends once nothing is left to run.
Driving repeats until nothing moves, so a flowable that ends lets its parent
continue within the same event. See :mod:`runtime.flow.scopes` for the per-type
rules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from runtime.flow import dynamic, for_each_item, sla, template
from runtime.flow.context import is_truthy, outputs_map, variables
from runtime.flow.events import (
    Command,
    CreateExecution,
    CreateSubflow,
    DelayElapsed,
    DelayKind,
    Event,
    ExecutionCreated,
    ExecutionEnded,
    Kill,
    KillExecution,
    KillTask,
    Log,
    Replay,
    Restart,
    Resume,
    RunTask,
    SubflowEnded,
    WakeAt,
    WorkerResult,
)
from runtime.flow.execution import CORRELATION_ID, Attempt, Execution, ExecutionMetadata, TaskRun
from runtime.flow.ids import derived_id
from runtime.flow.model import (
    ConcurrencyBehavior,
    Flow,
    FlowableTask,
    Pause,
    PauseBehavior,
    RetryBehavior,
    Subflow,
    Task,
    TaskKind,
)
from runtime.flow.scopes import Scope, guess_state, scope_for
from runtime.flow.states import State, StateType

S = StateType


class EngineError(Exception):
    """The event cannot apply to this execution (e.g. restarting a running one)."""


class EventRefused(EngineError):
    """The engine's rules refuse this event for this execution as it is now (a restart
    of a running one, a replay from a task run it lacks): the execution is sound, the
    event is not. The executor drops it after its retries instead of quarantining."""


def apply(execution: Execution, flow: Flow, event: Event) -> tuple[Execution, list[Command]]:
    """Apply one event; return the new execution and the commands to carry out."""
    run = _Pass(execution, flow, event.at)
    if isinstance(event, WorkerResult):
        run.on_worker_result(event)
    elif isinstance(event, ExecutionCreated):
        run.on_created(event)
    elif isinstance(event, Kill):
        run.on_kill()
    elif isinstance(event, Resume):
        run.on_resume(event)
    elif isinstance(event, DelayElapsed):
        run.on_delay(event)
    elif isinstance(event, SubflowEnded):
        run.on_subflow_ended(event)
    elif isinstance(event, Restart):
        run.on_restart(event)
    elif isinstance(event, Replay):
        run.on_replay(event)
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"not an engine event: {event!r}")
    run.drive()
    return run.result()


# -- whether an outside event applies: one rule, read by the engine and by whoever
# answers the person asking (the API's 409s, the CLI) before the event is queued


def kill_refusal(execution: Execution) -> str | None:
    """Why ``execution`` cannot be killed, or None."""
    current = execution.state.current
    if current.terminated or current is S.KILLING:
        return f"execution {execution.id} is {current.value}: nothing to kill"
    return None


def restart_refusal(execution: Execution) -> str | None:
    """Why ``execution`` cannot be restarted, or None: only an ended (or paused) one
    with a failed (or paused) task run can."""
    current = execution.state.current
    if not (current.terminated or current is S.PAUSED):
        return (
            f"execution {execution.id} is {current.value}: only a terminated or paused "
            "execution can be restarted"
        )
    if not any(r.state.current in (S.FAILED, S.PAUSED) for r in execution.task_run_list):
        return f"execution {execution.id} has no failed task run to restart"
    return None


def replay_refusal(execution: Execution, task_run_id: str | None) -> str | None:
    """Why ``execution`` cannot be replayed (from ``task_run_id``), or None."""
    if not execution.state.terminated:
        return (
            f"execution {execution.id} is {execution.state.current.value}: "
            "only an ended execution can be replayed"
        )
    if task_run_id is not None and execution.find(task_run_id) is None:
        return f"execution {execution.id} has no task run {task_run_id!r}"
    return None


def resume_refusal(execution: Execution) -> str | None:
    """Why ``execution`` cannot be resumed, or None."""
    if execution.state.current is not S.PAUSED:
        return (
            f"execution {execution.id} is {execution.state.current.value}: only a paused "
            "execution can be resumed"
        )
    return None


class _Pass:
    """The working state of one ``apply`` call."""

    def __init__(self, execution: Execution, flow: Flow, at: datetime) -> None:
        self.original = execution
        self.flow = flow
        self.at = at
        self.tasks = task_index(flow)
        self.runs: list[TaskRun] = list(execution.task_run_list)
        self.index: dict[str, int] = {r.id: i for i, r in enumerate(self.runs)}
        self.children: dict[str | None, list[int]] = {}
        for i, r in enumerate(self.runs):
            self.children.setdefault(r.parent_task_run_id, []).append(i)
        self.state = execution.state
        self.outputs = execution.outputs
        self.memo = dict(execution.memo or {})
        self.metadata = execution.metadata
        self.commands: list[Command] = []
        self.changed = False
        self._outputs_cache: dict[str, Any] | None = None

    # -- bookkeeping ---------------------------------------------------------
    def result(self) -> tuple[Execution, list[Command]]:
        if not self.changed:
            return self.original, self.commands
        new = msgspec.structs.replace(
            self.original,
            state=self.state,
            task_run_list=tuple(self.runs),
            outputs=self.outputs,
            memo=self.memo or None,
            metadata=self.metadata,
        )
        return new, self.commands

    def execution(self) -> Execution:
        """The execution as it stands in this pass (for rendering templates)."""
        return msgspec.structs.replace(
            self.original, state=self.state, task_run_list=tuple(self.runs)
        )

    def set_run(self, run: TaskRun) -> None:
        self.runs[self.index[run.id]] = run
        self.changed = True
        self._outputs_cache = None

    def add_run(self, run: TaskRun) -> None:
        self.index[run.id] = len(self.runs)
        self.runs.append(run)
        self.children.setdefault(run.parent_task_run_id, []).append(len(self.runs) - 1)
        self.changed = True
        self._outputs_cache = None

    def move_run(self, run: TaskRun, state: StateType) -> TaskRun:
        run = self.runs[self.index[run.id]]  # callers may hold an older copy
        moved = run.with_state(state, self.at)
        if moved is not run:
            self.set_run(moved)
        return moved

    def move_execution(self, state: StateType) -> None:
        new = self.state.to(state, self.at)
        if new is not self.state:
            self.state = new
            self.changed = True

    def task_of(self, run: TaskRun) -> Task:
        return self.tasks[run.task_id]

    def children_of(self, parent_id: str | None) -> list[TaskRun]:
        return [self.runs[i] for i in self.children.get(parent_id, ())]

    def log(self, level: str, message: str, run: TaskRun | None = None) -> None:
        self.commands.append(
            Log(
                at=self.at,
                level=level,
                message=message,
                task_run_id=run.id if run else None,
                task_id=run.task_id if run else None,
            )
        )

    def render(self, value: Any, task: Task | None, run: TaskRun | None) -> Any:
        """Render a template property; TemplateError propagates to the caller."""
        if isinstance(value, str) and not template.has_expression(value):
            return value
        if not isinstance(value, (str, list, dict)):
            return value
        if self._outputs_cache is None:
            self._outputs_cache = outputs_map(self.runs)
        context = variables(
            self.flow, self.execution(), task=task, task_run=run, outputs=self._outputs_cache
        )
        with template.fixed_now(self.at):
            return template.render_value(value, context)

    # -- events --------------------------------------------------------------
    def on_created(self, event: ExecutionCreated) -> None:
        current = self.state.current
        if current is S.RESTARTED:
            self.move_execution(S.RUNNING)
            self.dispatch_restarted()
            return
        if current not in (S.CREATED, S.QUEUED):
            return  # already started: a duplicate
        limit = self.flow.concurrency
        if limit is not None and not event.force and event.running >= limit.limit:
            if limit.behavior is ConcurrencyBehavior.QUEUE:
                self.move_execution(S.QUEUED)
                return
            final = S.CANCELLED if limit.behavior is ConcurrencyBehavior.CANCEL else S.FAILED
            self.log(
                "WARNING" if final is S.CANCELLED else "ERROR",
                f"flow concurrency limit of {limit.limit} reached: execution {final.value}",
            )
            self.end_execution(final)
            return
        self.move_execution(S.RUNNING)
        # Kestra writes this line into every execution's logs (log.Fetch counts it)
        self.log("INFO", "Flow started")
        for index, wait in sla.max_durations(self.flow, lambda m: self.log("ERROR", m)):
            self.wake(self.at + wait, DelayKind.SLA, None, index)
        if self.flow.timeout is not None:
            self.wake(self.at + self.flow.timeout, DelayKind.FLOW_TIMEOUT, None)

    def on_worker_result(self, event: WorkerResult) -> None:
        run = self.find(event.task_run_id)
        if run is None or run.state.terminated:
            return
        count = run.attempt_count
        attempt = event.attempt
        if attempt not in (count, count + 1) or attempt < 1:
            return  # a stale attempt
        attempts = list(run.attempts)
        if event.state is S.RUNNING:
            if attempt != count + 1:
                return
            started = min(event.started, self.at) if event.started is not None else self.at
            attempts.append(Attempt(state=State.new(S.RUNNING, started), worker_id=event.worker_id))
            run = msgspec.structs.replace(run, attempts=tuple(attempts))
            self.set_run(run.with_state(S.RUNNING, started))
            return
        if not event.state.terminated:
            return
        started = min(event.started, self.at) if event.started is not None else self.at
        if attempt == count + 1:
            attempts.append(
                Attempt(
                    state=State.new(S.RUNNING, started).to(event.state, self.at),
                    worker_id=event.worker_id,
                )
            )
        else:
            last = attempts[-1]
            if last.state.terminated:
                return  # a duplicate
            attempts[-1] = msgspec.structs.replace(last, state=last.state.to(event.state, self.at))
        run = msgspec.structs.replace(
            run,
            attempts=tuple(attempts),
            outputs=event.outputs if event.outputs is not None else run.outputs,
            metrics=(*run.metrics, *event.metrics) if event.metrics else run.metrics,
        )
        if run.state.current is not S.RUNNING:
            run = run.with_state(S.RUNNING, started)
        self.set_run(run)
        task = self.task_of(run)
        if task.reports_children and event.outputs:
            self.record_children(run, task, event.outputs.get("children"), started)
        if getattr(task, "sets_execution_labels", False) and event.state is S.SUCCESS:
            self.merge_labels((event.outputs or {}).get("labels"))
        if getattr(task, "exits_execution", False) and event.state is S.SUCCESS:
            self.finish_attempt(run, S.SUCCESS)
            self.exit_execution(str((event.outputs or {}).get("state", "SUCCESS")))
            return
        self.finish_attempt(run, event.state)

    def merge_labels(self, labels: Any) -> None:
        """Labels a task set on the execution (execution.Labels): new keys are added,
        existing ones take the new value."""
        if not isinstance(labels, dict) or not labels:
            return
        merged = {lb["key"]: lb["value"] for lb in self.original.labels}
        merged.update({str(k): str(v) for k, v in labels.items()})
        items = tuple({"key": k, "value": v} for k, v in merged.items())
        self.original = msgspec.structs.replace(self.original, labels=items)
        self.changed = True

    def record_children(
        self, parent: TaskRun, task: Task, reported: Any, started: datetime
    ) -> None:
        """Task runs for the children a task ran itself (WorkingDirectory)."""
        if not isinstance(reported, list):
            return
        known = {child.id for _, tasks in task.child_lists() for child in tasks}
        for index, item in enumerate(reported):
            if not isinstance(item, dict) or item.get("taskId") not in known:
                continue
            try:
                state = S(item.get("state", "SUCCESS"))
            except ValueError:
                continue
            run_id = derived_id(parent.id, item["taskId"], parent.attempt_count, index)
            if run_id in self.index:
                continue
            history = State.new(S.CREATED, started)
            if state is not S.SKIPPED:
                history = history.to(S.RUNNING, started)
            self.add_run(
                TaskRun(
                    id=run_id,
                    execution_id=self.original.id,
                    namespace=self.original.namespace,
                    flow_id=self.original.flow_id,
                    task_id=str(item["taskId"]),
                    parent_task_run_id=parent.id,
                    attempts=()
                    if state is S.SKIPPED
                    else (Attempt(state=State.new(S.RUNNING, started).to(state, self.at)),),
                    outputs=item.get("outputs"),
                    state=history.to(state, self.at),
                    # The parent's loop value is already an ancestor's: no repeat.
                    value=None,
                )
            )

    def finish_attempt(self, run: TaskRun, state: StateType) -> None:
        """A task run's attempt ended in ``state``: retry it, or give it its final state."""
        task = self.task_of(run)
        if state is S.FAILED and self.state.current is not S.KILLING:
            if self.schedule_retry(run, task):
                return
            if task.allow_failure:
                state = S.SUCCESS if task.allow_warning else S.WARNING
        elif state is S.WARNING and task.allow_warning:
            state = S.SUCCESS
        elif state is S.SUCCESS and run.attempt_count > 1 and self.retry_of(task) is not None:
            retry = self.retry_of(task)
            if retry is not None and retry.warning_on_retry:
                state = S.WARNING
        self.move_run(run, state)

    def resolved(self, task: Task, run: TaskRun | None) -> Task:
        """``task`` with its dynamic properties rendered for ``run``."""
        if not task.dynamic:
            return task
        return dynamic.resolve(task, lambda raw: self.render(raw, task, run))

    def retry_of(self, task: Task) -> Any:
        """The retry policy for ``task``: its own, its nearest ancestor's, the flow's."""
        current: Task | None = task
        while current is not None:
            if "retry" in current.dynamic:
                try:
                    return self.resolved(current, None).retry
                except (dynamic.DynamicPropertyError, template.TemplateError) as exc:
                    self.log("ERROR", f"{exc}: not retried")
                    return None
            if current.retry is not None:
                return current.retry
            current = self.tasks.parent(current.id)
        return self.flow.retry

    def schedule_retry(self, run: TaskRun, task: Task) -> bool:
        if task.kind not in (TaskKind.RUNNABLE, TaskKind.SUBFLOW):
            return False
        retry = self.retry_of(task)
        if retry is None:
            return False
        new_execution = retry.behavior is RetryBehavior.CREATE_NEW_EXECUTION
        count = self.metadata.attempt_number if new_execution else run.attempt_count
        if retry.max_attempt is not None and count >= retry.max_attempt:
            return False
        last = run.attempts[-1].state if run.attempts else run.state
        base = last.histories[-1].date if last.histories else self.at
        jitter = (int(derived_id(run.id, count)[:6], 36) % 10_000) / 10_000
        next_date = base + retry.delay(count, jitter)
        if retry.max_duration is not None:
            first = (
                self.metadata.original_created_date
                if new_execution
                else (run.attempts[0].state.start_date if run.attempts else None)
            ) or self.at
            if next_date > first + retry.max_duration:
                return False
        if new_execution:
            self.move_run(run, S.RETRIED)
            self.memo["retry_new_execution"] = True
            self.wake(next_date, DelayKind.NEW_EXECUTION, run.id)
        else:
            self.move_run(run, S.RETRYING)
            self.wake(next_date, DelayKind.RETRY, run.id, run.attempt_count)
        return True

    def on_kill(self) -> None:
        current = self.state.current
        if current.terminated or current is S.KILLING:
            return
        if current in (S.CREATED, S.QUEUED):
            self.end_execution(S.KILLED)
            return
        self.move_execution(S.KILLING)
        self.kill_runs(self.runs)

    def kill_runs(self, runs: Sequence[TaskRun]) -> None:
        """Stop every non-terminated run among ``runs``: workers get KillTask, paused
        and waiting runs end KILLED now, flowables end once their children have."""
        for run in list(runs):
            run = self.runs[self.index[run.id]]
            if run.state.terminated:
                continue
            task = self.task_of(run)
            if task.kind is TaskKind.RUNNABLE:
                self.commands.append(KillTask(at=self.at, task_run_id=run.id))
                if run.state.current is not S.RUNNING:
                    self.move_run(run, S.KILLED)
            elif task.kind is TaskKind.SUBFLOW:
                memo = run.memo or {}
                ended = memo.get("ended") or {}
                children = [memo["executionId"]] if memo.get("executionId") else []
                children += [c for c in memo.get("children") or {} if c not in ended]
                for child in children:
                    self.commands.append(KillExecution(at=self.at, execution_id=child))
                self.move_run(run, S.KILLED)
            elif task.kind is TaskKind.PAUSE and not isinstance(task, FlowableTask):
                if run.state.current is S.PAUSED or not self.children.get(run.id):
                    self.move_run(run, S.KILLED)
                else:
                    self.move_run(run, S.KILLING)
            else:
                self.move_run(run, S.KILLING)

    def on_resume(self, event: Resume) -> None:
        paused = [
            r
            for r in self.runs
            if r.state.current is S.PAUSED
            and (event.task_run_id is None or r.id == event.task_run_id)
        ]
        if not paused:
            return
        for run in paused:
            self.resume_run(run, event.inputs)
        if self.state.current is S.PAUSED:
            self.move_execution(S.RUNNING)

    def resume_run(self, run: TaskRun, inputs: dict[str, Any]) -> None:
        task = self.task_of(run)
        outputs = {"onResume": inputs} if inputs else run.outputs
        run = msgspec.structs.replace(run, outputs=outputs).with_state(S.RUNNING, self.at)
        self.set_run(run)
        if not (isinstance(task, Pause) and task.tasks):
            self.move_run(run, S.SUCCESS)

    def on_delay(self, event: DelayElapsed) -> None:
        kind = event.delay
        if kind is DelayKind.FLOW_TIMEOUT:
            if not self.state.terminated and self.state.current is not S.KILLING:
                self.log("ERROR", f"flow timeout of {self.flow.timeout} reached: killing")
                self.memo["timed_out"] = True
                self.move_execution(S.KILLING)
                self.kill_runs(self.runs)
            return
        if kind is DelayKind.NEW_EXECUTION:
            self.retry_as_new_execution()
            return
        if kind is DelayKind.SLA:
            if not self.state.terminated and event.attempt is not None:
                self.sla_violated(sla.entry(self.flow, event.attempt), "max duration exceeded")
            return
        run = self.find(event.task_run_id)
        if run is None:
            return
        if (
            kind is DelayKind.RETRY
            and run.state.current is S.RETRYING
            and event.attempt in (None, run.attempt_count)
        ):
            if self.state.current is S.KILLING:
                self.move_run(run, S.KILLED)
                return
            run = self.move_run(run, S.RUNNING)
            self.start_attempt(run, self.task_of(run))
        elif kind is DelayKind.PAUSE and run.state.current is S.PAUSED:
            task = self.task_of(run)
            behavior = task.behavior if isinstance(task, Pause) else PauseBehavior.RESUME
            if behavior is PauseBehavior.RESUME:
                self.resume_run(run, {})
            else:
                self.move_run(run, S.RUNNING)
                final = {
                    PauseBehavior.WARN: S.WARNING,
                    PauseBehavior.FAIL: S.FAILED,
                    PauseBehavior.CANCEL: S.CANCELLED,
                }[behavior]
                if final is S.CANCELLED:
                    self.memo["cancelled"] = True
                self.move_run(self.runs[self.index[run.id]], final)
            if self.state.current is S.PAUSED and not any(
                r.state.current is S.PAUSED for r in self.runs
            ):
                self.move_execution(S.RUNNING)
        elif kind is DelayKind.WAIT_FOR and run.state.current is S.RUNNING:
            memo = dict(run.memo or {})
            if memo.get("waiting") and event.attempt in (None, memo.get("iteration", 0)):
                memo["waiting"] = False
                memo["iteration"] = int(memo.get("iteration", 0)) + 1
                self.set_run(msgspec.structs.replace(run, memo=memo))
        elif kind is DelayKind.TIMEOUT and not run.state.terminated:
            task = self.task_of(run)
            self.log("ERROR", f"task {task.id!r} timed out after {task.timeout}", run)
            memo = dict(run.memo or {})
            memo["timed_out"] = True
            run = msgspec.structs.replace(run, memo=memo)
            self.set_run(run)
            self.kill_runs(self.descendants(run.id))
            if run.state.current is S.PAUSED:
                # A Pause nobody resumed in time fails straight from PAUSED (Kestra:
                # one RUNNING in its history), its children never started.
                self.move_run(run, S.FAILED)
                if self.state.current is S.PAUSED and not any(
                    r.state.current is S.PAUSED for r in self.runs
                ):
                    self.move_execution(S.RUNNING)

    def on_subflow_ended(self, event: SubflowEnded) -> None:
        run = self.find(event.task_run_id)
        if run is None or run.state.terminated:
            return
        if isinstance(self.task_of(run), for_each_item.ForEachItemExecutable):
            items = self.task_of(run)
            assert isinstance(items, for_each_item.ForEachItemExecutable)
            for_each_item.child_ended(self, run, items, event)
            return
        if (run.memo or {}).get("executionId") != event.execution_id:
            return  # the child of an earlier attempt
        task = self.task_of(run)
        assert isinstance(task, Subflow)
        outputs = {
            "executionId": event.execution_id,
            "state": event.state.value,
            "outputs": event.outputs or {},
        }
        extracted = True
        if event.outputs is None and task.outputs:
            extracted = self.extract_subflow_outputs(task, run, event, outputs)
        run = msgspec.structs.replace(run, outputs=outputs)
        attempts = list(run.attempts)
        if attempts and not attempts[-1].state.terminated:
            attempts[-1] = msgspec.structs.replace(
                attempts[-1], state=attempts[-1].state.to(event.state, self.at)
            )
            run = msgspec.structs.replace(run, attempts=tuple(attempts))
        self.set_run(run)
        child = event.state
        if not extracted or (child in (S.FAILED, S.KILLED, S.CANCELLED) and task.transmit_failed):
            state = S.FAILED
        elif child is S.WARNING and task.transmit_failed:
            state = S.WARNING
        else:
            state = S.SUCCESS
        self.finish_attempt(run, state)

    def extract_subflow_outputs(
        self, task: Subflow, run: TaskRun, event: SubflowEnded, outputs: dict[str, Any]
    ) -> bool:
        """Kestra's Subflow ``outputs`` property (when the child flow declares no
        outputs): rendered over the child's task outputs into ``outputs.outputs``.
        False (the task run fails, as in Kestra) when it does not render."""
        context = variables(
            self.flow, self.execution(), task=task, task_run=run, outputs=event.task_outputs or {}
        )
        try:
            with template.fixed_now(self.at):
                outputs["outputs"] = template.render_value(dict(task.outputs), context)
        except template.TemplateError as exc:
            self.log("WARN", f"Failed to extract outputs with the error: '{exc}'", run)
            return False
        return True

    def on_restart(self, event: Restart) -> None:
        if event.task_run_id is not None:
            # Kestra's "mark as": one task run's state, on an ended or paused execution
            current = self.state.current
            if not (current.terminated or current is S.PAUSED):
                raise EventRefused(
                    f"execution {self.original.id} is {current.value}: only a terminated or "
                    "paused execution can have a task run marked"
                )
            self.mark(event.task_run_id, event.state or S.SUCCESS)
            return
        refusal = restart_refusal(self.original)
        if refusal is not None:
            raise EventRefused(refusal)
        failed = [r for r in self.runs if r.state.current in (S.FAILED, S.PAUSED)]
        restart = self.with_ancestors(failed)
        drop = self.error_and_finally_runs(restart)
        self.runs = [r for r in self.runs if r.id not in drop]
        self._reindex()
        for run in list(self.runs):
            if run.id not in restart:
                continue
            task = self.task_of(run)
            if task.kind in (TaskKind.RUNNABLE, TaskKind.SUBFLOW):
                self.move_run(run, S.RESTARTED)
            else:
                self.set_run(_forget_cursor(run))
                run = self.move_run(run, S.RESTARTED)
                self.move_run(run, S.RUNNING)
        self.memo.pop("timed_out", None)
        self.memo.pop("cancelled", None)
        self.memo.pop("exit", None)
        self.outputs = None
        self.metadata = msgspec.structs.replace(
            self.metadata, attempt_number=self.metadata.attempt_number + 1
        )
        self.move_execution(S.RESTARTED)
        self.move_execution(S.RUNNING)
        self.dispatch_restarted()

    def mark(self, run_id: str, state: StateType) -> None:
        """The run ends ``state``; its ancestors run again (their errors and finally
        branches forgotten) so that their scopes go on from it: after a SUCCESS the
        next tasks run, after a FAILED the errors branch does."""
        run = self.find(run_id)
        if run is None:
            raise EventRefused(f"execution {self.original.id} has no task run {run_id!r}")
        if not state.terminated:
            raise EventRefused(f"a task run is marked with an end state, not {state.value}")
        ancestors = self.with_ancestors([run]) - {run.id}
        drop = self.error_and_finally_runs(ancestors) | {d.id for d in self.descendants(run.id)}
        drop.discard(run.id)
        self.runs = [r for r in self.runs if r.id not in drop]
        self._reindex()
        self.set_run(run.with_state(state, self.at))
        for ancestor_id in ancestors:
            ancestor = self.runs[self.index[ancestor_id]]
            if ancestor.state.terminated:
                self.set_run(_forget_cursor(ancestor))
                ancestor = self.move_run(ancestor, S.RESTARTED)
                self.move_run(ancestor, S.RUNNING)
        self.memo.pop("timed_out", None)
        self.memo.pop("cancelled", None)
        self.outputs = None
        self.metadata = msgspec.structs.replace(
            self.metadata, attempt_number=self.metadata.attempt_number + 1
        )
        self.move_execution(S.RESTARTED)
        self.move_execution(S.RUNNING)

    def on_replay(self, event: Replay) -> None:
        self.commands.append(CreateExecution(at=self.at, execution=self.replayed(event)))

    # -- starting and ending runs -------------------------------------------
    def dispatch_restarted(self) -> None:
        for run in list(self.runs):
            if run.state.current is S.RESTARTED:
                self.start_attempt(run, self.task_of(run))

    def start_attempt(self, run: TaskRun, task: Task) -> None:
        """Send a runnable to a worker, or create a Subflow's child execution."""
        if task.kind is TaskKind.SUBFLOW:
            self.start_subflow(run, task)
            return
        self.commands.append(
            RunTask(at=self.at, task_run_id=run.id, task_id=task.id, attempt=run.attempt_count + 1)
        )

    def start_subflow(self, run: TaskRun, task: Task) -> None:
        if isinstance(task, for_each_item.ForEachItemExecutable):
            attempts = (*run.attempts, Attempt(state=State.new(S.RUNNING, self.at)))
            self.set_run(msgspec.structs.replace(run, attempts=attempts))
            for_each_item.start(self, self.runs[self.index[run.id]], task)
            return
        assert isinstance(task, Subflow)
        try:
            inputs = self.render(dict(task.inputs), task, run)
            labels_raw = task.labels
            if isinstance(labels_raw, list):
                labels_raw = {item["key"]: item["value"] for item in labels_raw}
            labels = {str(k): str(v) for k, v in self.render(dict(labels_raw), task, run).items()}
        except template.TemplateError as exc:
            self.log("ERROR", f"subflow {task.id!r}: {exc}", run)
            self.move_run(self.move_run(run, S.RUNNING), S.FAILED)
            return
        own = {lb["key"]: lb["value"] for lb in self.original.labels}
        if task.inherit_labels:
            labels = {**own, **labels}
        # Kestra ties a subflow to the execution tree it belongs to.
        labels.setdefault(CORRELATION_ID, own.get(CORRELATION_ID, self.original.id))
        child_id = derived_id(self.original.id, run.id, run.attempt_count + 1)
        attempts = (*run.attempts, Attempt(state=State.new(S.RUNNING, self.at)))
        run = msgspec.structs.replace(
            run, memo={**(run.memo or {}), "executionId": child_id}, attempts=attempts
        )
        self.set_run(run)
        run = self.move_run(run, S.RUNNING)
        self.commands.append(
            CreateSubflow(
                at=self.at,
                task_run_id=run.id,
                execution_id=child_id,
                namespace=task.namespace,
                flow_id=task.flow_id,
                revision=task.revision,
                inputs=inputs,
                labels=labels,
                wait=task.wait,
            )
        )
        if not task.wait:
            done = msgspec.structs.replace(run, outputs={"executionId": child_id})
            self.set_run(done)
            self.move_run(done, S.SUCCESS)

    def create_run(
        self, task: Task, parent: TaskRun | None, value: str | None, iteration: int | None
    ) -> TaskRun:
        """Create and start one task run; returns it as it stands afterwards."""
        run_id = self._create_run(task, parent, value, iteration)
        return self.runs[self.index[run_id]]

    def _create_run(
        self, task: Task, parent: TaskRun | None, value: str | None, iteration: int | None
    ) -> str:
        parent_id = parent.id if parent else None
        run_id = derived_id(self.original.id, parent_id, task.id, value, iteration)
        generation = self.metadata.attempt_number
        if generation > 1:
            # Each restart is a new generation: a run it dropped (an errors branch) and
            # creates again gets a new id, so the old one's wake-ups still queued (its
            # timeout, a retry) find no run instead of ending the new one early.
            run_id = derived_id(run_id, generation)
        run = TaskRun(
            id=run_id,
            execution_id=self.original.id,
            namespace=self.original.namespace,
            flow_id=self.original.flow_id,
            task_id=task.id,
            parent_task_run_id=parent_id,
            value=value,
            iteration=iteration,
            state=State.new(S.CREATED, self.at),
        )
        self.add_run(run)
        try:
            run_if = self.render(task.run_if, task, run)
        except template.TemplateError as exc:
            self.log("ERROR", f"runIf of task {task.id!r}: {exc}", run)
            self.move_run(run, S.FAILED)
            return run_id
        if not is_truthy(run_if):
            self.move_run(run, S.SKIPPED)
            return run_id
        try:
            task = self.resolved(task, run)
        except (dynamic.DynamicPropertyError, template.TemplateError) as exc:
            self.log("ERROR", str(exc), run)
            self.move_run(run, S.FAILED)
            return run_id
        if task.timeout is not None and task.kind is not TaskKind.RUNNABLE:
            self.wake(self.at + task.timeout, DelayKind.TIMEOUT, run.id)
        if task.kind is TaskKind.RUNNABLE:
            self.start_attempt(run, task)
        elif task.kind is TaskKind.SUBFLOW:
            self.start_subflow(run, task)
        elif task.kind is TaskKind.PAUSE:
            assert isinstance(task, Pause)
            run = self.move_run(run, S.RUNNING)
            self.move_run(run, S.PAUSED)
            if task.wait is not None:
                self.wake(self.at + task.wait, DelayKind.PAUSE, run.id)
            if self.state.current is S.RUNNING:
                self.move_execution(S.PAUSED)
        else:
            self.move_run(run, S.RUNNING)
        return run_id

    def end_scope(self, run: TaskRun, state: StateType, outputs: dict[str, Any] | None) -> None:
        run = self.runs[self.index[run.id]]
        if outputs is not None:
            run = msgspec.structs.replace(run, outputs={**(run.outputs or {}), **outputs})
            self.set_run(run)
        self.move_run(run, state)

    def end_execution(self, state: StateType) -> None:
        if state in (S.SUCCESS, S.WARNING) and self.flow.outputs:
            try:
                self.outputs = self.flow_outputs()
            except (template.TemplateError, ValueError) as exc:
                self.log("ERROR", f"flow outputs: {exc}")
                state = S.FAILED
        for entry in sla.assertions(self.flow):
            try:
                holds = is_truthy(self.render(entry.get("assert"), None, None))
            except template.TemplateError as exc:
                self.log("ERROR", f"sla {entry.get('id')!r}: {exc}")
                holds = False
            if not holds:
                state = self.sla_violated(entry, "assertion does not hold", state)
        self.move_execution(state)
        self.changed = True
        original = self.original
        self.commands.append(
            ExecutionEnded(
                at=self.at,
                execution_id=original.id,
                state=state,
                outputs=self.outputs,
                parent_id=original.parent_id,
                parent_task_run_id=original.parent_task_run_id,
                task_outputs=self.task_outputs() if original.parent_task_run_id else None,
            )
        )

    def sla_violated(
        self, entry: dict[str, Any], why: str, ending: StateType | None = None
    ) -> StateType:
        """Apply a violated SLA: its labels, then its behavior (FAIL or CANCEL end the
        execution so, killing what runs; NONE only labels). Returns the end state an
        ending execution takes."""
        behavior = str(entry.get("behavior", "NONE")).upper()
        self.log("WARNING", f"SLA {entry.get('id')!r} violated ({why}): behavior {behavior}")
        self.merge_labels(sla.labels(entry))
        if behavior not in ("FAIL", "CANCEL"):
            return ending or self.state.current
        if ending is not None:
            return S.FAILED if behavior == "FAIL" else S.CANCELLED
        self.memo["timed_out" if behavior == "FAIL" else "cancelled"] = True
        if self.state.current is not S.KILLING:
            self.move_execution(S.KILLING)
            self.kill_runs(self.runs)
        return self.state.current

    def task_outputs(self) -> dict[str, Any]:
        """Every task's outputs (``outputs.<task>``), as the templates see them."""
        if self._outputs_cache is None:
            self._outputs_cache = outputs_map(self.runs)
        return self._outputs_cache

    def flow_outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for output in self.flow.outputs:
            value = self.render(output.value, None, None)
            out[output.id] = _convert_output(output.id, output.type, value)
        return out

    def wake(
        self, when: datetime, kind: DelayKind, run_id: str | None, attempt: int | None = None
    ) -> None:
        self.commands.append(
            WakeAt(at=self.at, when=when, delay=kind, task_run_id=run_id, attempt=attempt)
        )

    # -- driving -------------------------------------------------------------
    def drive(self) -> None:
        if self.state.current not in (S.RUNNING, S.KILLING, S.PAUSED):
            return
        for _ in range(10_000):
            if self.state.terminated or not self.drive_scope(None):
                break
        else:  # pragma: no cover - a bug, not a flow
            raise EngineError("the engine did not settle within 10,000 steps")

    def drive_scope(self, parent: TaskRun | None) -> bool:
        """Move one scope forward; True when anything changed."""
        moved = False
        for child in self.children_of(parent.id if parent else None):
            child = self.runs[self.index[child.id]]
            if child.state.current in (S.RUNNING, S.KILLING) and self.is_scope(child):
                moved |= self.drive_scope(child)
        if parent is not None:
            parent = self.runs[self.index[parent.id]]
            if parent.state.terminated:
                return moved
        scope = self.scope(parent)
        if scope is None:
            return moved
        killing = self.state.current is S.KILLING or (
            parent is not None and parent.state.current is S.KILLING
        )
        timed_out = parent is not None and bool((parent.memo or {}).get("timed_out"))
        if not killing and not timed_out:
            nexts = scope.nexts()
            if nexts:
                again = False
                for task, value, iteration in nexts:
                    created = self.create_run(task, parent, value, iteration)
                    # Another pass only if something can move without a new event.
                    again |= created.state.terminated or self.is_scope(created)
                return moved or again
            if scope.waiting():
                return moved
        elif any(not r.state.terminated for r in scope.runs):
            return moved
        final = scope.final_state() if not (killing or timed_out) else None
        if killing or timed_out:
            final = S.FAILED if timed_out else S.KILLED
        if final is None:
            return moved
        if parent is None:
            self.end_execution(self.execution_final(final))
        else:
            self.end_scope(parent, final, scope.outputs())
        return True

    def exit_execution(self, state: str) -> None:
        """execution.Exit: end now in ``state``; what still runs is killed."""
        try:
            target = S(state)
        except ValueError:
            target = S.FAILED
        self.log("INFO", f"execution.Exit: the execution ends {target.value}")
        self.memo["exit"] = target.value
        if self.state.current is not S.KILLING:
            self.move_execution(S.KILLING)
            self.kill_runs(self.runs)

    def execution_final(self, state: StateType) -> StateType:
        if self.memo.get("exit"):
            return S(self.memo["exit"])
        if self.memo.get("timed_out"):
            return S.FAILED
        if self.memo.get("cancelled"):
            return S.CANCELLED
        if self.memo.get("retry_new_execution"):
            return S.RETRIED
        return state

    def is_scope(self, run: TaskRun) -> bool:
        task = self.task_of(run)
        return task.kind is TaskKind.FLOWABLE or (isinstance(task, Pause) and bool(task.tasks))

    def scope(self, parent: TaskRun | None) -> Scope | None:
        if parent is None:
            return scope_for(self, None, None)
        task = self.task_of(parent)
        if not self.is_scope(parent):
            return None
        return scope_for(self, task, parent)

    # -- helpers -------------------------------------------------------------
    def find(self, run_id: str | None) -> TaskRun | None:
        if run_id is None:
            return None
        i = self.index.get(run_id)
        return self.runs[i] if i is not None else None

    def descendants(self, run_id: str) -> list[TaskRun]:
        out: list[TaskRun] = []
        stack = [run_id]
        while stack:
            for child in self.children_of(stack.pop()):
                out.append(child)
                stack.append(child.id)
        return out

    def with_ancestors(self, runs: Sequence[TaskRun]) -> set[str]:
        ids: set[str] = set()
        for run in runs:
            current: TaskRun | None = run
            while current is not None and current.id not in ids:
                ids.add(current.id)
                current = self.find(current.parent_task_run_id)
        return ids

    def error_and_finally_runs(self, scopes: set[str]) -> set[str]:
        """Runs of errors/finally branches in the root or in ``scopes``, with descendants."""
        handler_ids = {t.id for t in (*self.flow.errors, *self.flow.finally_)}
        for task in self.tasks.values():
            if isinstance(task, FlowableTask):
                handler_ids.update(t.id for t in (*task.errors, *task.finally_))
        drop: set[str] = set()
        for run in self.runs:
            parent = run.parent_task_run_id
            if run.task_id in handler_ids and (parent is None or parent in scopes):
                drop.add(run.id)
                drop.update(d.id for d in self.descendants(run.id))
        return drop

    def _reindex(self) -> None:
        self.index = {r.id: i for i, r in enumerate(self.runs)}
        self.children = {}
        for i, r in enumerate(self.runs):
            self.children.setdefault(r.parent_task_run_id, []).append(i)
        self.changed = True
        self._outputs_cache = None

    def replayed(self, event: Replay) -> Execution:
        original = self.original
        new_id = event.new_execution_id
        base = msgspec.structs.replace(
            original,
            id=new_id,
            original_id=original.original_id or original.id,
            outputs=None,
            memo=None,
            metadata=ExecutionMetadata(
                attempt_number=original.metadata.attempt_number + 1,
                original_created_date=original.metadata.original_created_date,
            ),
        )
        if event.task_run_id is None:
            return msgspec.structs.replace(
                base, state=State.new(S.CREATED, self.at), task_run_list=()
            )
        target = self.find(event.task_run_id)
        if target is None:
            raise EventRefused(
                f"execution {original.id} has no task run {event.task_run_id!r} to replay from"
            )
        keep_ancestors = self.with_ancestors([target]) - {target.id}
        cut = self.index[target.id]
        removed = {d.id for d in self.descendants(target.id)}
        mapping = {r.id: derived_id(new_id, r.id) for r in self.runs}
        runs = []
        for i, run in enumerate(self.runs):
            if run.id in removed or (i > cut and run.id not in keep_ancestors):
                continue
            moved = run
            if run.id in keep_ancestors:
                moved = _forget_cursor(run)
                moved = moved.with_state(S.RESTARTED, self.at).with_state(S.RUNNING, self.at)
            elif run.id == target.id:
                if self.task_of(run).kind in (TaskKind.RUNNABLE, TaskKind.SUBFLOW):
                    moved = run.with_state(S.RESTARTED, self.at)
                else:
                    moved = run.with_state(S.RESTARTED, self.at).with_state(S.RUNNING, self.at)
            runs.append(
                msgspec.structs.replace(
                    moved,
                    id=mapping[run.id],
                    execution_id=new_id,
                    parent_task_run_id=mapping.get(run.parent_task_run_id or ""),
                )
            )
        return msgspec.structs.replace(
            base,
            state=original.state.to(S.RESTARTED, self.at),
            task_run_list=tuple(runs),
        )

    def retry_as_new_execution(self) -> None:
        new_id = derived_id(self.original.id, "retry", self.metadata.attempt_number + 1)
        execution = msgspec.structs.replace(
            self.original,
            id=new_id,
            state=State.new(S.CREATED, self.at),
            task_run_list=(),
            outputs=None,
            memo=None,
            original_id=self.original.original_id or self.original.id,
            metadata=ExecutionMetadata(
                attempt_number=self.metadata.attempt_number + 1,
                original_created_date=self.metadata.original_created_date,
            ),
        )
        self.commands.append(CreateExecution(at=self.at, execution=execution))


def _forget_cursor(run: TaskRun) -> TaskRun:
    """A loop that runs again must re-check its lanes (see scopes.Scope._main_nexts)."""
    if not run.memo or "lanes_done" not in run.memo:
        return run
    memo = {k: v for k, v in run.memo.items() if k != "lanes_done"}
    return msgspec.structs.replace(run, memo=memo or None)


def _convert_output(output_id: str, kind: str, value: Any) -> Any:
    kind = kind.upper()
    try:
        if kind == "INT":
            return int(value)
        if kind == "FLOAT":
            return float(value)
        if kind in ("BOOLEAN", "BOOL"):
            return is_truthy(value)
        if kind == "JSON" and isinstance(value, str):
            return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"output {output_id!r} is not a valid {kind}: {value!r}") from exc
    return value


class TaskIndex(dict[str, Task]):
    """Task id -> task, plus each task's parent task for retry inheritance."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self._parents: dict[str, Task | None] = {}
        for group in (flow.tasks, flow.errors, flow.finally_, flow.after_execution):
            for task in group:
                self._add(task, None)

    def _add(self, task: Task, parent: Task | None) -> None:
        self[task.id] = task
        self._parents[task.id] = parent
        for _, children in task.child_lists():
            for child in children:
                self._add(child, task)

    def parent(self, task_id: str) -> Task | None:
        return self._parents.get(task_id)


_INDEX_CACHE: dict[int, tuple[Flow, TaskIndex]] = {}


def task_index(flow: Flow) -> TaskIndex:
    """Indexes are cached per flow object: flows are immutable and reused across events."""
    cached = _INDEX_CACHE.get(id(flow))
    if cached is not None and cached[0] is flow:
        return cached[1]
    index = TaskIndex(flow)
    if len(_INDEX_CACHE) > 256:
        _INDEX_CACHE.clear()
    _INDEX_CACHE[id(flow)] = (flow, index)
    return index


__all__ = ["EngineError", "TaskIndex", "apply", "guess_state", "task_index"]
