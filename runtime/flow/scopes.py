"""How each flowable decides what runs next and how it ends.

A scope is the flow itself or one running flowable task run. Its children are
grouped in *lanes*: a list of tasks run sequentially, in parallel or as a DAG,
tagged with a loop value and iteration when the scope is a loop (one lane per
ForEach value, one per WaitFor iteration). A scope runs in three phases, as
Kestra does:

1. the main lanes, until they are done or one of their task runs FAILED;
2. on a failure, the ``errors`` tasks, one after another;
3. the ``finally`` tasks, one after another, whatever happened before.

It ends once every phase is done and every child run has terminated. Its state is
Kestra's guess over the main and finally runs (KILLED, else FAILED, else WARNING,
else PAUSED, else SUCCESS), softened by the flowable's ``allowFailure`` and
``allowWarning``; the errors branch never changes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from runtime.flow import template
from runtime.flow.context import is_truthy
from runtime.flow.events import DelayKind
from runtime.flow.execution import TaskRun
from runtime.flow.model import FlowableTask, Task, WaitFor
from runtime.flow.states import StateType

if TYPE_CHECKING:
    from runtime.flow.engine import _Pass

S = StateType
Next = tuple[Task, str | None, int | None]

_GUESS_ORDER = (S.KILLED, S.FAILED, S.WARNING, S.PAUSED)


def guess_state(
    runs: Sequence[TaskRun], allow_failure: bool = False, allow_warning: bool = False
) -> StateType:
    """Kestra's final state of a group of task runs."""
    present = {run.state.current for run in runs}
    state = next((s for s in _GUESS_ORDER if s in present), S.SUCCESS)
    if state is S.FAILED and allow_failure:
        return S.SUCCESS if allow_warning else S.WARNING
    if state is S.WARNING and allow_warning:
        return S.SUCCESS
    return state


class Lane:
    """Tasks run together under one loop value (or none)."""

    __slots__ = ("deps", "iteration", "mode", "tasks", "value")

    def __init__(
        self,
        tasks: Sequence[Task],
        mode: str = "seq",
        value: str | None = None,
        iteration: int | None = None,
        deps: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.tasks = _enabled(tasks)
        self.mode = mode
        self.value = value
        self.iteration = iteration
        self.deps = deps or {}

    def key(self, task_id: str) -> tuple[str, str | None, int | None]:
        return (task_id, self.value, self.iteration)


_ENABLED: dict[int, tuple[Sequence[Task], list[Task]]] = {}


def _enabled(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` without the disabled ones, cached per (immutable) task list."""
    cached = _ENABLED.get(id(tasks))
    if cached is not None and cached[0] is tasks:
        return cached[1]
    enabled = [t for t in tasks if not t.disabled]
    if len(_ENABLED) > 4096:
        _ENABLED.clear()
    _ENABLED[id(tasks)] = (tasks, enabled)
    return enabled


class Scope:
    """One scope's view of its children; see the module docstring."""

    def __init__(
        self,
        engine: _Pass,
        task: Task | None,
        parent: TaskRun | None,
        lanes: list[Lane],
        *,
        lane_concurrency: int = 0,
        task_concurrency: int = 0,
        errors: Sequence[Task] = (),
        finally_: Sequence[Task] = (),
        allow_failure: bool = False,
        allow_warning: bool = False,
        forced: StateType | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.task = task
        self.parent = parent
        self.lanes = lanes
        self.lane_concurrency = lane_concurrency
        self.task_concurrency = task_concurrency
        self.errors = Lane(errors)
        self.finally_ = Lane(finally_)
        self.allow_failure = allow_failure
        self.allow_warning = allow_warning
        self.forced = forced
        self._outputs = outputs
        self.runs = engine.children_of(parent.id if parent else None)
        self._by_key: dict[tuple[str, str | None, int | None], TaskRun] = {}
        for run in self.runs:
            self._by_key[(run.task_id, run.value, run.iteration)] = run
        self._error_ids = {t.id for t in self.errors.tasks}
        self._finally_ids = {t.id for t in self.finally_.tasks}
        self._final: StateType | None = None
        self._nexts: list[Next] | None = None

    # -- the engine's questions ---------------------------------------------
    def nexts(self) -> list[Next]:
        self._compute()
        assert self._nexts is not None
        return self._nexts

    def waiting(self) -> bool:
        self._compute()
        return self._final is None

    def final_state(self) -> StateType | None:
        self._compute()
        return self._final

    def outputs(self) -> dict[str, Any] | None:
        return self._outputs

    # -- the rules -----------------------------------------------------------
    def _compute(self) -> None:
        if self._nexts is not None:
            return
        self._nexts = []
        if self.forced is not None:
            if all(r.state.terminated for r in self.runs):
                self._final = self.forced
            return
        main_runs = [r for r in self.runs if r.task_id not in self._error_ids | self._finally_ids]
        failed = any(r.state.current is S.FAILED for r in main_runs)
        main_nexts = [] if failed else self._main_nexts()
        if main_nexts:
            self._nexts = main_nexts
            return
        main_settled = all(r.state.terminated for r in main_runs)
        if failed and self.errors.tasks:
            error_nexts, errors_done = self._lane_step(self.errors)
            if error_nexts:
                self._nexts = error_nexts
                return
            if not errors_done:
                return
        if not main_settled:
            return
        finally_nexts, finally_done = self._lane_step(self.finally_)
        if finally_nexts:
            self._nexts = finally_nexts
            return
        if not finally_done or not all(r.state.terminated for r in self.runs):
            return
        counted = [r for r in self.runs if r.task_id not in self._error_ids]
        self._final = self.end_state(guess_state(counted, self.allow_failure, self.allow_warning))

    def end_state(self, guessed: StateType) -> StateType | None:
        """Hook for scopes that end differently (WaitFor); None: not yet."""
        return guessed

    def _main_nexts(self) -> list[Next]:
        nexts: list[Next] = []
        active = 0
        running = sum(1 for r in self.runs if not r.state.current.terminated)
        budget = self.task_concurrency - running if self.task_concurrency > 0 else None
        # Lanes before the cursor are known to have succeeded (kept in the parent's
        # memo), so a long loop does not re-check every finished iteration.
        parent = self.parent
        cursor = int((parent.memo or {}).get("lanes_done", 0)) if parent is not None else 0
        prefix = cursor
        for position in range(cursor, len(self.lanes)):
            lane = self.lanes[position]
            lane_runs = [self._by_key.get(lane.key(t.id)) for t in lane.tasks]
            started = any(r is not None for r in lane_runs)
            lane_done = started and self._lane_done(lane, lane_runs)
            if lane_done:
                if prefix == position and all(
                    r is not None and r.state.current is not S.FAILED for r in lane_runs
                ):
                    prefix += 1
                continue
            if not started and self.lane_concurrency > 0 and active >= self.lane_concurrency:
                break
            active += 1
            for task in self._lane_candidates(lane, lane_runs):
                if budget is not None and budget <= 0:
                    self._save_cursor(cursor, prefix)
                    return nexts
                nexts.append((task, lane.value, lane.iteration))
                if budget is not None:
                    budget -= 1
        self._save_cursor(cursor, prefix)
        return nexts

    def _save_cursor(self, old: int, new: int) -> None:
        if new > old and self.parent is not None and len(self.lanes) > 1:
            parent = self.engine.runs[self.engine.index[self.parent.id]]
            memo = {**(parent.memo or {}), "lanes_done": new}
            self.parent = msgspec.structs.replace(parent, memo=memo)
            self.engine.set_run(self.parent)

    def _lane_done(self, lane: Lane, runs: list[TaskRun | None]) -> bool:
        if any(r is not None and r.state.current is S.FAILED for r in runs):
            return all(r is None or r.state.terminated for r in runs)
        return all(r is not None and r.state.terminated for r in runs)

    def _lane_candidates(self, lane: Lane, runs: list[TaskRun | None]) -> list[Task]:
        if lane.mode == "seq":
            for task, run in zip(lane.tasks, runs, strict=True):
                if run is None:
                    return [task]
                if not run.state.terminated or run.state.current is S.FAILED:
                    return []
            return []
        if any(r is not None and r.state.current is S.FAILED for r in runs):
            return []
        missing = [t for t, r in zip(lane.tasks, runs, strict=True) if r is None]
        if lane.mode == "par":
            return missing
        terminated = {
            t.id
            for t, r in zip(lane.tasks, runs, strict=True)
            if r is not None and r.state.terminated
        }
        return [t for t in missing if all(dep in terminated for dep in lane.deps.get(t.id, ()))]

    def _lane_step(self, lane: Lane) -> tuple[list[Next], bool]:
        """The next task of an errors or finally lane. As in Kestra, a failed handler
        task does not stop the ones after it."""
        for task in lane.tasks:
            run = self._by_key.get(lane.key(task.id))
            if run is None:
                return [(task, lane.value, lane.iteration)], False
            if not run.state.terminated:
                return [], False
        return [], True


class _WaitForScope(Scope):
    """Lanes are iterations; after each one the condition decides whether to go on."""

    def __init__(self, engine: _Pass, task: WaitFor, parent: TaskRun) -> None:
        memo = parent.memo or {}
        iteration = int(memo.get("iteration", 0))
        if (parent.outputs or {}).get("iterationCount") != iteration + 1:
            # Kestra lets the children read the loop's count while it runs.
            parent = msgspec.structs.replace(
                parent, outputs={**(parent.outputs or {}), "iterationCount": iteration + 1}
            )
            engine.set_run(parent)
        self.iteration = iteration
        self.waiting_for_delay = bool(memo.get("waiting"))
        self.wait_task = task
        super().__init__(
            engine,
            task,
            parent,
            [Lane(task.tasks, "seq", None, i) for i in range(iteration + 1)],
            lane_concurrency=1,
            errors=task.errors,
            finally_=task.finally_,
            allow_failure=task.allow_failure,
            allow_warning=task.allow_warning,
            outputs={"iterationCount": iteration + 1},
        )

    def _compute(self) -> None:
        if self._nexts is not None:
            return
        if self.waiting_for_delay:
            self._nexts = []
            return
        super()._compute()

    def end_state(self, guessed: StateType) -> StateType | None:
        if guessed is not S.SUCCESS and guessed is not S.WARNING:
            return guessed
        engine, task, parent = self.engine, self.wait_task, self.parent
        assert parent is not None
        try:
            done = is_truthy(engine.render(task.condition, task, parent))
        except template.TemplateError as exc:
            engine.log("ERROR", f"WaitFor condition of {task.id!r}: {exc}", parent)
            return S.FAILED
        if done:
            return guessed
        started = parent.state.start_date
        frequency = task.check_frequency
        out_of_time = started is not None and engine.at - started >= frequency.max_duration
        if self.iteration + 1 >= frequency.max_iterations or out_of_time:
            engine.log("WARNING", f"WaitFor {task.id!r} reached its limit", parent)
            return S.FAILED if task.fail_on_max_reached else guessed
        memo = {**(parent.memo or {}), "waiting": True, "iteration": self.iteration}
        engine.set_run(msgspec.structs.replace(parent, memo=memo))
        engine.wake(engine.at + frequency.interval, DelayKind.WAIT_FOR, parent.id, self.iteration)
        return None


@runtime_checkable
class Flowable(Protocol):
    """A task whose children the engine runs: its class says how, in ``scope``, with
    the builder's pieces (lanes, limits, rendering, loop values). A plugin's flowable
    (a FlowableTask subclass registered through the ``runtime.tasks`` entry points)
    implements this, as the core ones do."""

    def scope(self, build: ScopeBuilder) -> Scope: ...


class ScopeBuilder:
    """What a flowable's ``scope`` builds its scope with, for one of its task runs."""

    def __init__(self, engine: _Pass, task: Task, parent: TaskRun) -> None:
        self.engine = engine
        self.task = task
        #: the flowable's task run (updated when something is remembered on it)
        self.parent = parent

    def lane(
        self,
        tasks: Sequence[Task],
        mode: str = "seq",
        value: str | None = None,
        iteration: int | None = None,
        deps: dict[str, tuple[str, ...]] | None = None,
    ) -> Lane:
        """Children run one after another (``seq``), together (``par``) or as a DAG
        (``dag``, with ``deps``), under a loop value and iteration."""
        return Lane(tasks, mode, value, iteration, deps)

    def scope(
        self,
        lanes: list[Lane],
        *,
        lane_concurrency: int = 0,
        task_concurrency: int = 0,
        allow_failure: bool | None = None,
        forced: StateType | None = None,
    ) -> Scope:
        """The scope: at most ``lane_concurrency`` lanes and ``task_concurrency`` runs
        at once (0: no limit), with the task's errors, finally and allow settings."""
        task = self.task
        return Scope(
            self.engine,
            task,
            self.parent,
            lanes,
            lane_concurrency=lane_concurrency,
            task_concurrency=task_concurrency,
            errors=task.errors if isinstance(task, FlowableTask) else (),
            finally_=task.finally_ if isinstance(task, FlowableTask) else (),
            allow_failure=task.allow_failure if allow_failure is None else allow_failure,
            allow_warning=task.allow_warning,
            forced=forced,
        )

    def render(self, value: Any) -> Any:
        """``value`` rendered with the variables this task run sees."""
        return self.engine.render(value, self.task, self.parent)

    def holds(self, condition: Any) -> bool:
        """Whether ``condition``, rendered, is true as Kestra reads it."""
        return is_truthy(self.render(condition))

    def remembered(self, key: str) -> Any:
        """An output this task run kept with :meth:`remember` (None: not yet)."""
        return (self.parent.outputs or {}).get(key)

    def remember(self, outputs: dict[str, Any]) -> None:
        """Keep ``outputs`` on this task run (an evaluated branch, as Kestra does)."""
        self.parent = _remember_output(self.engine, self.parent, outputs)

    def loop_values(self, raw: Any) -> list[str]:
        """``raw`` rendered to the loop's distinct values (JSON for non-strings), once."""
        return _loop_values(self.engine, self.task, self.parent, raw)

    def fail(self, message: str) -> Scope:
        """A scope that ends FAILED (softened by allowFailure/allowWarning), logging why."""
        self.engine.log("ERROR", message, self.parent)
        parent = self.parent
        forced = guess_state(
            [msgspec.structs.replace(parent, state=parent.state.to(S.FAILED, self.engine.at))],
            self.task.allow_failure,
            self.task.allow_warning,
        )
        return Scope(self.engine, self.task, parent, [], forced=forced)

    def wait_for(self, task: WaitFor) -> Scope:
        """WaitFor's scope: one lane per iteration, the condition checked after each."""
        return _WaitForScope(self.engine, task, self.parent)


def scope_for(engine: _Pass, task: Task | None, parent: TaskRun | None) -> Scope:
    """The scope of the flow (``task`` None) or of one flowable task run."""
    if task is None or parent is None:
        flow = engine.flow
        return Scope(
            engine, None, None, [Lane(flow.tasks)], errors=flow.errors, finally_=flow.finally_
        )
    try:
        # dynamic properties (an expression where a typed value goes) rendered first
        task = engine.resolved(task, parent)
        if not isinstance(task, Flowable):
            raise ValueError(
                f"no scope rules for task type {task.type!r}: its class needs a "
                "scope(build) method (runtime.flow.scopes.Flowable)"
            )
        return task.scope(ScopeBuilder(engine, task, parent))
    except template.TemplateError as exc:
        engine.log("ERROR", f"task {task.id!r}: {exc}", parent)
        return Scope(engine, task, parent, [], forced=S.FAILED)
    except ValueError as exc:
        engine.log("ERROR", f"task {task.id!r}: {exc}", parent)
        return Scope(engine, task, parent, [], forced=S.FAILED)


def _remember_output(engine: _Pass, run: TaskRun, outputs: dict[str, Any]) -> TaskRun:
    run = msgspec.structs.replace(run, outputs={**(run.outputs or {}), **outputs})
    engine.set_run(run)
    return run


def _loop_values(engine: _Pass, task: Task, parent: TaskRun, raw: Any) -> list[str]:
    """The loop's values as strings (JSON for non-strings), computed once and kept."""
    memo = parent.memo or {}
    if "values" in memo:
        return list(memo["values"])
    rendered = engine.render(raw, task, parent)
    if isinstance(rendered, str):
        try:
            rendered = json.loads(rendered)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"values must be a list or a JSON array, got {rendered[:80]!r}"
            ) from exc
    if isinstance(rendered, dict):
        rendered = [{"key": k, "value": v} for k, v in rendered.items()]
    if not isinstance(rendered, list):
        raise ValueError(f"values must be a list, got {type(rendered).__name__}")
    if None in rendered:  # Kestra's rule and message (nulls counted once, as it does)
        raise ValueError(f"Found '1' null values on Each, with values={java_text(rendered)}")
    # Kestra runs each distinct value once (resolveEachTasks; keeping repeats was
    # proposed there and not taken, as outputs are keyed by value).
    values = list(
        dict.fromkeys(
            v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in rendered
        )
    )
    engine.set_run(msgspec.structs.replace(parent, memo={**memo, "values": values}))
    return values


def java_text(value: Any) -> str:
    """``value`` as Java's ``toString`` writes lists and maps (Kestra's messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(java_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={java_text(v)}" for k, v in value.items()) + "}"
    return str(value)
