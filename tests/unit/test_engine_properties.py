"""Property tests of the engine: random flows, random task outcomes, random delivery orders.

A flow is a random tree of Sequential, Parallel, If, Switch, ForEach and AllowFailure
tasks over Log leaves, with errors / finally branches, ``allowFailure`` and retries.
Each attempt of a leaf ends as a drawn table says, keyed by task id, loop value and
attempt, so what a worker reports never depends on the delivery order. The driver
below plays the executor and the workers: it keeps the events not yet delivered in a
pool and lets hypothesis pick which one goes next, now and then handing an event it
already delivered to the engine again (a duplicate, or a stale worker result).
Every delivery is handled by the real executor on the memory backend
(services.dry_run), the code a server runs.

The expected end of a flow comes from :class:`Reference`, a small recursive evaluator
of Kestra's rules (its documentation, and FlowableUtils where the documentation is
silent), written independently of the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.flow.engine import apply
from runtime.flow.events import (
    DelayElapsed,
    Event,
    ExecutionCreated,
    ExecutionEnded,
    Kill,
    KillTask,
    Log,
    RunTask,
    WakeAt,
    WorkerResult,
)
from runtime.flow.execution import Execution, new_execution
from runtime.flow.loader import build_flow
from runtime.flow.model import Flow, ForEach, Parallel, Task
from runtime.flow.states import StateType
from services.dry_run import EPOCH, DryRun

S = StateType

LOG = "io.kestra.plugin.core.log.Log"
CORE = "io.kestra.plugin.core.flow."
#: flowable kinds the generator draws from; "Log" first so hypothesis shrinks to leaves
KINDS = ("Log", "Sequential", "Parallel", "If", "Switch", "ForEach", "AllowFailure")
#: tasks in main branches, and tasks directly in errors / finally branches
MAX_TASKS = 18
MAX_HANDLERS = 6
MAX_DEPTH = 4
#: at most this many runs of one task (the product of the enclosing ForEach sizes)
MAX_FAN_OUT = 9
MAX_VALUES = 3
MAX_STEPS = 2_000
OK = (S.SUCCESS,) * 3
KO = (S.FAILED,) * 3
#: what the attempts of one leaf end with; all SUCCESS first so failures shrink away
OUTCOMES = st.sampled_from(
    [OK] * 6
    + [(S.WARNING,) * 3] * 2
    + [KO, (S.FAILED, S.SUCCESS, S.SUCCESS), (S.FAILED, S.FAILED, S.SUCCESS)]
    + [(S.FAILED, S.WARNING, S.WARNING)]
)

Step = tuple[str, str, int]  # (task id, loop value or "", iteration or -1)
Key = tuple[Step, ...]  # a task run's path from the root of the execution
Record = tuple[StateType, tuple[StateType, ...]]  # final state, state of each attempt


# -- flows -------------------------------------------------------------------------
@dataclass
class _Budget:
    """Hands out task ids unique across the flow and keeps the flow small. Handlers
    have their own budget, so that the main branches never leave them none."""

    used: int = 0
    handlers: int = 0

    def take(self, prefix: str) -> str:
        self.used += 1
        return f"{prefix}{self.used}"

    @property
    def left(self) -> int:
        return MAX_TASKS - self.used


@dataclass
class _Leaf:
    task_id: str
    loop_values: tuple[str, ...]  # the values its outcome may depend on ("" out of loops)


def _task_list(
    draw: st.DrawFn,
    ids: _Budget,
    leaves: list[_Leaf],
    depth: int,
    loops: tuple[str, ...],
    fan_out: int,
    low: int,
    high: int,
    handlers: bool = False,
) -> list[dict[str, Any]]:
    if handlers:
        high = min(high, MAX_HANDLERS - ids.handlers)
    elif ids.left <= 0:
        high = low
    count = draw(st.integers(low, max(low, high)))
    if handlers:
        ids.handlers += count
    return [_task(draw, ids, leaves, depth, loops, fan_out) for _ in range(count)]


def _task(
    draw: st.DrawFn,
    ids: _Budget,
    leaves: list[_Leaf],
    depth: int,
    loops: tuple[str, ...],
    fan_out: int,
) -> dict[str, Any]:
    kinds: tuple[str, ...] = KINDS if depth < MAX_DEPTH and ids.left >= 3 else KINDS[:1]
    if fan_out * MAX_VALUES > MAX_FAN_OUT:
        kinds = tuple(k for k in kinds if k != "ForEach")
    kind = draw(st.sampled_from(kinds))
    if kind == "Log":
        task: dict[str, Any] = {"id": ids.take("t"), "type": LOG, "message": "m"}
        leaves.append(_Leaf(task["id"], loops))
        if draw(st.sampled_from([False, False, False, True])):
            task["allowFailure"] = True
        attempts = draw(st.sampled_from([0, 0, 1, 2, 3]))
        if attempts:
            task["retry"] = {"type": "constant", "interval": "PT1S", "maxAttempt": attempts}
        return task

    task = {"id": ids.take(kind[0].lower()), "type": CORE + kind}
    below = depth + 1

    def tasks(low: int, high: int, loops: tuple[str, ...] = loops, fan: int = fan_out) -> Any:
        return _task_list(draw, ids, leaves, below, loops, fan, low, high)

    if kind in ("Sequential", "AllowFailure"):
        task["tasks"] = tasks(1, 3)
    elif kind == "Parallel":
        task["concurrent"] = draw(st.integers(0, 2))
        task["tasks"] = tasks(2, 3)
    elif kind == "If":
        task["condition"] = draw(st.sampled_from(["true", "false"]))
        task["then"] = tasks(1, 2)
        if otherwise := tasks(0, 2):
            task["else"] = otherwise
    elif kind == "Switch":
        task["value"] = draw(st.sampled_from(["x", "y", "z"]))
        keys = draw(st.lists(st.sampled_from(["x", "y"]), unique=True, max_size=2))
        if keys:
            task["cases"] = {key: tasks(1, 2) for key in keys}
        defaults = tasks(0 if keys else 1, 2)
        if defaults:
            task["defaults"] = defaults
    elif kind == "ForEach":
        values = draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=MAX_VALUES))
        task["values"] = values
        task["concurrencyLimit"] = draw(st.integers(0, 2))
        task["tasks"] = tasks(1, 2, ("a", "b", "c"), fan_out * max(1, len(set(values))))
    if errors := _task_list(draw, ids, leaves, below, loops, fan_out, 0, 2, handlers=True):
        task["errors"] = errors
    if finally_ := _task_list(draw, ids, leaves, below, loops, fan_out, 0, 1, handlers=True):
        task["finally"] = finally_
    if draw(st.sampled_from([False, False, False, True])):
        task["allowFailure"] = True
    return task


@dataclass(frozen=True)
class Outcomes:
    """What each attempt of a leaf ends with: by task id, nearest loop value, attempt."""

    table: Mapping[tuple[str, str], tuple[StateType, ...]]

    def __call__(self, task_id: str, key: Key, attempt: int) -> StateType:
        value = next((v for _, v, _ in reversed(key) if v), "")
        return self.table[(task_id, value)][attempt - 1]


@dataclass(frozen=True)
class Scenario:
    doc: dict[str, Any]
    flow: Flow
    outcomes: Outcomes

    def __repr__(self) -> str:
        table = {
            f"{t}[{v}]" if v else t: " ".join(s.value for s in states)
            for (t, v), states in self.outcomes.table.items()
            if states != (S.SUCCESS,) * 3
        }
        return f"\n{yaml.safe_dump(self.doc, sort_keys=False)}outcomes (else SUCCESS): {table}\n"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """What hypothesis prints for a falsifying example: the YAML and the outcomes."""
        printer.text(repr(self))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids = _Budget()
    leaves: list[_Leaf] = []
    doc: dict[str, Any] = {"id": "prop", "namespace": "company.team"}
    doc["tasks"] = _task_list(draw, ids, leaves, 1, ("",), 1, 1, 3)
    if errors := _task_list(draw, ids, leaves, 1, ("",), 1, 0, 2, handlers=True):
        doc["errors"] = errors
    if finally_ := _task_list(draw, ids, leaves, 1, ("",), 1, 0, 2, handlers=True):
        doc["finally"] = finally_
    table = {(leaf.task_id, value): draw(OUTCOMES) for leaf in leaves for value in leaf.loop_values}
    return Scenario(doc, build_flow(doc), Outcomes(table))


# -- the driver --------------------------------------------------------------------
class Order(Protocol):
    def pick(self, pending: int, delivered: int) -> tuple[bool, int]:
        """(False, i): deliver pending event i; (True, j): deliver delivered event j again."""
        ...


class Fifo:
    def pick(self, pending: int, delivered: int) -> tuple[bool, int]:
        return False, 0


class Lifo:
    def pick(self, pending: int, delivered: int) -> tuple[bool, int]:
        return False, pending - 1


class Drawn:
    """Hypothesis chooses every step; at most ``again`` re-deliveries per run."""

    def __init__(self, data: st.DataObject, again: int = 0) -> None:
        self.data = data
        self.again = again

    def pick(self, pending: int, delivered: int) -> tuple[bool, int]:
        extra = 1 if delivered and self.again > 0 else 0
        choice = self.data.draw(st.integers(0, pending - 1 + extra))
        if choice < pending:
            return False, choice
        self.again -= 1
        return True, self.data.draw(st.integers(0, delivered - 1))


@dataclass
class Trace:
    """Everything one driven execution did."""

    execution: Execution
    delivered: list[Event] = field(default_factory=list)
    ended: list[ExecutionEnded] = field(default_factory=list)
    #: re-delivered events (duplicates, stale results) that changed something
    redelivery_effects: list[str] = field(default_factory=list)
    #: events that changed the execution after it had terminated
    after_end_effects: list[str] = field(default_factory=list)
    #: the execution state when the Kill arrived, and what happened after it
    state_at_kill: StateType | None = None
    runs_at_kill: int = 0
    run_tasks_after_kill: list[RunTask] = field(default_factory=list)
    #: moments when more children ran at once than their parent allows
    overlaps: list[str] = field(default_factory=list)
    steps: int = 0


def run_keys(execution: Execution) -> dict[str, Key]:
    """Each task run's path from the root: (task id, value, iteration) per level."""
    keys: dict[str, Key] = {}
    for run in execution.task_run_list:  # parents are always created before children
        parent = keys[run.parent_task_run_id] if run.parent_task_run_id else ()
        value = "" if run.value is None else run.value
        iteration = -1 if run.iteration is None else run.iteration
        keys[run.id] = (*parent, (run.task_id, value, iteration))
    return keys


def drive(
    scenario: Scenario, order: Order, kill_at: int | None = None, echo: bool = False
) -> Trace:
    """Run the scenario's flow to its end through the real executor (on the memory
    backend), delivering events in ``order``; with ``kill_at``, deliver a Kill at that
    step (or at the end, if it comes sooner). With ``echo``, after each step also
    try the last few delivered events and every delivered wake-up again on the new
    execution (with the pure engine, without keeping the result): the order seldom
    draws those re-deliveries at the moments they matter."""
    return asyncio.run(_drive(scenario, order, kill_at, echo))


async def _drive(scenario: Scenario, order: Order, kill_at: int | None, echo: bool) -> Trace:
    flow = scenario.flow
    tasks = flow.task_index()
    # One event per executor batch, so that the order below is the order it sees.
    dry = DryRun(flow, execution_id="exec", batch=1)
    await dry.prepare()
    trace = Trace(dry.execution)
    # The driver plays the workers and the queue's delivery order: what the executor
    # queued (the start, jobs, wake-ups) is taken back, and the events it stands for
    # wait in ``pending`` for the order to pick them.
    queued, _ = await dry.sweep()
    pending: list[Event] = [event for _, event in queued]
    attempts: dict[str, int] = {}
    killed = False
    while pending or (kill_at is not None and not killed):
        assert trace.steps < MAX_STEPS, f"no end after {MAX_STEPS} events: {trace.execution}"
        now = EPOCH + timedelta(seconds=trace.steps)
        dry.now = now
        trace.steps += 1
        again = False
        if kill_at is not None and not killed and (trace.steps > kill_at or not pending):
            event: Event = Kill(at=now)
            killed = True
            trace.state_at_kill = trace.execution.state.current
            trace.runs_at_kill = len(trace.execution.task_run_list)
        else:
            again, index = order.pick(len(pending), len(trace.delivered))
            event = trace.delivered[index] if again else pending.pop(index)
        old = trace.execution
        commands = await dry.step_async("exec", event)
        await dry.sweep()  # what it queued is in ``commands``, delivered below
        new = dry.execution
        changed = new is not old or bool(commands)
        if again and changed:
            trace.redelivery_effects.append(f"{event!r} -> {commands!r}")
        if old.state.terminated and changed:
            trace.after_end_effects.append(f"{event!r} -> {commands!r}")
        if killed:
            trace.run_tasks_after_kill += [c for c in commands if isinstance(c, RunTask)]
        if not again:
            trace.delivered.append(event)
        trace.execution = new
        if echo:
            wake_ups = [e for e in trace.delivered if isinstance(e, DelayElapsed)]
            for earlier in {id(e): e for e in (*trace.delivered[-3:], *wake_ups)}.values():
                echoed, echo_commands = apply(new, flow, earlier)
                if echoed is not new or echo_commands:
                    trace.redelivery_effects.append(f"{earlier!r} -> {echo_commands!r}")
        if new is not old:
            trace.overlaps += overlapping_runs(tasks, new)
        keys: dict[str, Key] | None = None
        for command in commands:
            if isinstance(command, RunTask):
                attempts[command.task_run_id] = command.attempt
                keys = keys or run_keys(new)
                final = scenario.outcomes(
                    command.task_id, keys[command.task_run_id], command.attempt
                )
                for state in (S.RUNNING, final):
                    pending.append(
                        WorkerResult(
                            at=now,
                            task_run_id=command.task_run_id,
                            attempt=command.attempt,
                            state=state,
                        )
                    )
            elif isinstance(command, KillTask):
                attempt = attempts[command.task_run_id]
                pending.append(
                    WorkerResult(
                        at=now, task_run_id=command.task_run_id, attempt=attempt, state=S.KILLED
                    )
                )
            elif isinstance(command, WakeAt):
                pending.append(
                    DelayElapsed(
                        at=command.when,
                        delay=command.delay,
                        task_run_id=command.task_run_id,
                        attempt=command.attempt,
                    )
                )
            elif isinstance(command, ExecutionEnded):
                trace.ended.append(command)
            elif not isinstance(command, Log):
                raise AssertionError(f"unexpected command for these flows: {command!r}")
    return trace


def overlapping_runs(tasks: dict[str, Task], execution: Execution) -> list[str]:
    """Scopes running more children at once than they allow: one at a time in a
    sequence, in each ForEach iteration and in errors / finally; at most
    ``concurrent`` Parallel children and ``concurrencyLimit`` ForEach iterations."""
    by_id = {run.id: run for run in execution.task_run_list}
    running: dict[str | None, list[tuple[str, int]]] = {}
    for run in execution.task_run_list:
        if not run.state.terminated:
            lane = -1 if run.iteration is None else run.iteration
            running.setdefault(run.parent_task_run_id, []).append((run.task_id, lane))
    problems = []
    for parent_id, children in running.items():
        parent = by_id[parent_id] if parent_id else None
        task: Task | None = tasks[parent.task_id] if parent else None
        main = {t.id for t in task.tasks} if isinstance(task, (Parallel, ForEach)) else set()
        handlers = [c for c in children if c[0] not in main]
        lanes = [lane for task_id, lane in children if task_id in main]
        limit = 1
        if isinstance(task, Parallel):
            limit = task.concurrent or len(main)
        elif isinstance(task, ForEach):
            limit = task.concurrency_limit or len(lanes)
            if len(set(lanes)) < len(lanes):
                problems.append(f"{task.id}: two runs at once in one iteration: {children}")
            lanes = sorted(set(lanes))
        if len(handlers) > 1 or len(lanes) > limit:
            name = task.id if task else "the flow"
            problems.append(f"{name}: {children} running at once")
    return problems


def records(execution: Execution) -> dict[Key, Record]:
    """Each task run's end, by its path; fails on two runs for the same path."""
    keys = run_keys(execution)
    out: dict[Key, Record] = {}
    for run in execution.task_run_list:
        key = keys[run.id]
        assert key not in out, f"two task runs for {key}"
        out[key] = (run.state.current, tuple(a.state.current for a in run.attempts))
    return out


def comparable(runs: dict[Key, Record]) -> list[tuple[Key, str, tuple[str, ...]]]:
    """Runs modulo creation order: sorted (path, final state, attempt states)."""
    return sorted((k, s.value, tuple(a.value for a in atts)) for k, (s, atts) in runs.items())


# -- the reference model -------------------------------------------------------------
_GUESS = (S.KILLED, S.FAILED, S.WARNING, S.PAUSED)


def guess(states: Sequence[StateType], allow_failure: bool) -> StateType:
    """Kestra's state of a group of runs: the worst present, FAILED softened to WARNING."""
    state = next((s for s in _GUESS if s in states), S.SUCCESS)
    return S.WARNING if state is S.FAILED and allow_failure else state


@dataclass
class Expected:
    """How a task (or a whole flow) ends: its state, and the task runs it creates.

    With concurrency, a failure stops new runs from starting, so which runs exist can
    depend on the delivery order: ``must`` holds the runs every order creates, ``may``
    those some order creates, with the end each of them has whenever it exists.
    """

    state: StateType
    may: dict[Key, Record] = field(default_factory=dict)
    must: set[Key] = field(default_factory=set)

    def add(self, other: Expected, certain: bool) -> None:
        self.may.update(other.may)
        if certain:
            self.must |= other.must

    @property
    def determinate(self) -> bool:
        return self.must == set(self.may)


@dataclass
class _Group:
    """The main children of a scope."""

    runs: Expected  # their runs (state unused)
    states: list[StateType]  # the end state of each child that may run
    failed: bool


class Reference:
    """Kestra's rules, one task type at a time:

    - a sequence stops at its first FAILED child; Parallel starts children in order,
      at most ``concurrent`` at once (0: all); ForEach runs one sequence per value,
      at most ``concurrencyLimit`` at once (0: all); once a child FAILED, no new one
      starts, the running ones end;
    - If runs ``then`` or ``else``; Switch the matching case, else ``defaults``, else
      it FAILS without running anything;
    - ``errors`` run only after a failure and never change the state; ``finally``
      always runs, after the main children; both run every task in turn, a failed
      one does not stop the next (Kestra's innerResolveSequentialNexts);
    - ForEach runs each distinct value once (Kestra's resolveEachTasks);
    - the state is the worst of the main and finally runs (KILLED > FAILED > WARNING
      > SUCCESS); ``allowFailure`` and AllowFailure turn FAILED into WARNING;
    - a leaf with ``maxAttempt`` n has up to n attempts and ends with the first one
      that did not fail (else FAILED).
    """

    def __init__(self, outcomes: Outcomes) -> None:
        self.outcomes = outcomes

    def flow(self, doc: dict[str, Any]) -> Expected:
        group = self._sequence(doc["tasks"], (), ("", -1))
        return self._scope(group, doc.get("errors", []), doc.get("finally", []), (), False)

    def task(self, task: dict[str, Any], parent: Key, tag: tuple[str, int]) -> Expected:
        key = (*parent, (task["id"], *tag))
        kind = task["type"].rsplit(".", 1)[-1]
        if kind == "Log":
            return self._leaf(task, key)
        allow = bool(task.get("allowFailure")) or kind == "AllowFailure"
        untagged = ("", -1)
        if kind in ("Sequential", "AllowFailure"):
            group = self._sequence(task["tasks"], key, untagged)
        elif kind == "Parallel":
            lanes = [[child] for child in task["tasks"]]
            group = self._lanes(lanes, [untagged] * len(lanes), task["concurrent"], key)
        elif kind == "If":
            branch = task["then"] if task["condition"] == "true" else task.get("else", [])
            group = self._sequence(branch, key, untagged)
        elif kind == "Switch":
            cases = task.get("cases", {})
            branch = cases.get(task["value"]) or task.get("defaults")
            if not branch:
                state = guess([S.FAILED], allow)
                return Expected(state, {key: (state, ())}, {key})
            group = self._sequence(branch, key, untagged)
        elif kind == "ForEach":
            values = list(dict.fromkeys(task["values"]))  # a repeated value runs once
            tags = [(value, i) for i, value in enumerate(values)]
            group = self._lanes([task["tasks"]] * len(values), tags, task["concurrencyLimit"], key)
        else:  # pragma: no cover - the generator only makes the kinds above
            raise AssertionError(kind)
        out = self._scope(group, task.get("errors", []), task.get("finally", []), key, allow)
        out.may[key] = (out.state, ())
        out.must.add(key)
        return out

    def _leaf(self, task: dict[str, Any], key: Key) -> Expected:
        attempts: list[StateType] = []
        for attempt in range(1, task.get("retry", {}).get("maxAttempt", 1) + 1):
            attempts.append(self.outcomes(task["id"], key, attempt))
            if attempts[-1] is not S.FAILED:
                break
        state = attempts[-1]
        if state is S.FAILED and task.get("allowFailure"):
            state = S.WARNING
        return Expected(state, {key: (state, tuple(attempts))}, {key})

    def _chain(
        self, tasks: Sequence[dict[str, Any]], parent: Key, tag: tuple[str, int], stop: bool
    ) -> tuple[list[Expected], bool]:
        """Tasks one after another; with ``stop``, none after the first FAILED one."""
        out: list[Expected] = []
        failed = False
        for task in tasks:
            out.append(self.task(task, parent, tag))
            failed = failed or out[-1].state is S.FAILED
            if failed and stop:
                break
        return out, failed

    def _sequence(
        self, tasks: Sequence[dict[str, Any]], parent: Key, tag: tuple[str, int]
    ) -> _Group:
        children, failed = self._chain(tasks, parent, tag, stop=True)
        runs = Expected(S.SUCCESS)
        for child in children:
            runs.add(child, certain=True)
        return _Group(runs, [c.state for c in children], failed)

    def _lanes(
        self,
        lanes: Sequence[Sequence[dict[str, Any]]],
        tags: Sequence[tuple[str, int]],
        limit: int,
        parent: Key,
    ) -> _Group:
        """Sequences started in order, ``limit`` of them at once (0: all)."""
        chains = [
            self._chain(tasks, parent, tag, True) for tasks, tag in zip(lanes, tags, strict=True)
        ]
        fails = [failed for _, failed in chains]
        width = len(lanes) if limit == 0 else limit

        def ok_before(j: int, skip: int = -1) -> int:
            return sum(1 for i in range(j) if i != skip and not fails[i])

        def may_start(j: int) -> bool:  # enough lanes before it can end first
            return j < width or ok_before(j) >= j - width + 1

        def must_start(j: int) -> bool:  # no failure can come before its turn
            return j < width or not any(fails[:j])

        def overlaps(other: int, j: int) -> bool:  # `other` can run while j runs
            return other < j or other < width or ok_before(other, skip=j) >= other - width + 1

        runs = Expected(S.SUCCESS)
        states: list[StateType] = []
        for j, (children, _) in enumerate(chains):
            if not may_start(j):
                continue
            # Another lane's failure may come first and stop this lane after its head.
            cut = any(fails[o] and overlaps(o, j) for o in range(len(lanes)) if o != j)
            for i, child in enumerate(children):
                runs.add(child, certain=must_start(j) and (i == 0 or not cut))
                states.append(child.state)
        return _Group(runs, states, any(fails))

    def _handlers(self, tasks: Sequence[dict[str, Any]], parent: Key) -> list[Expected]:
        children, _ = self._chain(tasks, parent, ("", -1), stop=False)
        return children

    def _scope(
        self,
        group: _Group,
        errors: Sequence[dict[str, Any]],
        finally_: Sequence[dict[str, Any]],
        key: Key,
        allow_failure: bool,
    ) -> Expected:
        out = Expected(S.SUCCESS, dict(group.runs.may), set(group.runs.must))
        states = list(group.states)
        if group.failed:
            for child in self._handlers(errors, key):
                out.add(child, certain=True)
        for child in self._handlers(finally_, key):
            out.add(child, certain=True)
            states.append(child.state)
        out.state = guess(states, allow_failure)
        return out


def check_against(expected: Expected, execution: Execution) -> None:
    runs = records(execution)
    unexpected = sorted(k for k in runs if k not in expected.may)
    missing = sorted(expected.must - set(runs))
    wrong = {k: (runs[k], expected.may[k]) for k in runs if k in expected.may}
    wrong = {k: pair for k, pair in wrong.items() if pair[0] != pair[1]}
    assert not unexpected, f"runs the reference does not expect: {unexpected}"
    assert not missing, f"runs every order should create: {missing}"
    assert not wrong, f"runs ending otherwise, (engine, reference): {wrong}"
    assert execution.state.current is expected.state, "execution state"


def _assert_cleanly_ended(trace: Trace) -> None:
    execution = trace.execution
    assert execution.state.terminated, f"execution left {execution.state.current.value}"
    terminal = [h.state for h in execution.state.histories if h.state.terminated]
    assert terminal == [execution.state.current], f"terminal states: {terminal}"
    assert [c.state for c in trace.ended] == [execution.state.current], trace.ended
    left = [(r.task_id, r.state.current.value) for r in execution.task_run_list]
    assert all(r.state.terminated for r in execution.task_run_list), left
    assert not trace.after_end_effects, trace.after_end_effects
    assert not trace.overlaps, trace.overlaps


# -- the properties ------------------------------------------------------------------
#: One falsifying example, shrunk, is enough; shrinking several at once takes minutes.
#: Neither a deadline nor the too_slow health check: on a shared, loaded CI machine
#: they measure the machine, and fail the suite with the engine right.
#: Seeded (derandomize): the same examples on every run, so CI is stable; a local hunt
#: for new failures sets derandomize=False.
PROPERTY = settings(
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def examples(base: int) -> int:
    """``base`` examples under the ``ci`` profile, scaled by the profile loaded in
    tests/conftest.py (``mutation`` runs twice as many)."""
    return base * settings.default.max_examples // 100


#: Shrinking a failure can outlast the suite's 120 s (Hypothesis gives up after 5 min).
SHRINK_TIMEOUT = pytest.mark.timeout(600)


@SHRINK_TIMEOUT
@settings(PROPERTY, max_examples=examples(300))
@given(scenario=scenarios(), data=st.data())
def test_every_flow_terminates_once_with_every_run_ended(
    scenario: Scenario, data: st.DataObject
) -> None:
    trace = drive(scenario, Drawn(data, again=10))
    _assert_cleanly_ended(trace)


@SHRINK_TIMEOUT
@settings(PROPERTY, max_examples=examples(160))
@given(scenario=scenarios(), data=st.data())
def test_delivery_order_does_not_change_the_end(scenario: Scenario, data: st.DataObject) -> None:
    expected = Reference(scenario.outcomes).flow(scenario.doc)
    ends = [drive(scenario, order).execution for order in (Fifo(), Lifo(), Drawn(data))]
    assert len({e.state.current for e in ends}) == 1, [e.state.current for e in ends]
    if expected.determinate:
        first, *others = (comparable(records(e)) for e in ends)
        for other in others:
            assert other == first
    else:
        # A failure under concurrency: which runs started before it depends on the
        # order, as in Kestra; each end must still be one the rules allow.
        for end in ends:
            check_against(expected, end)


@SHRINK_TIMEOUT
@settings(PROPERTY, max_examples=examples(250))
@given(scenario=scenarios(), data=st.data())
def test_duplicate_and_stale_events_change_nothing(scenario: Scenario, data: st.DataObject) -> None:
    trace = drive(scenario, Drawn(data, again=30), echo=True)
    assert not trace.redelivery_effects, trace.redelivery_effects
    final = trace.execution
    for event in trace.delivered:
        again, commands = apply(final, scenario.flow, event)
        assert again is final, f"re-applying {event!r} changed the execution"
        assert commands == [], f"re-applying {event!r} asked for {commands!r}"


@SHRINK_TIMEOUT
@settings(PROPERTY, max_examples=examples(400))
@given(scenario=scenarios(), data=st.data())
def test_the_end_matches_the_reference_model(scenario: Scenario, data: st.DataObject) -> None:
    expected = Reference(scenario.outcomes).flow(scenario.doc)
    trace = drive(scenario, Drawn(data, again=5))
    check_against(expected, trace.execution)


@SHRINK_TIMEOUT
@settings(PROPERTY, max_examples=examples(250))
@given(scenario=scenarios(), data=st.data(), kill_at=st.integers(0, 30))
def test_a_kill_at_any_point_ends_killed_and_starts_nothing(
    scenario: Scenario, data: st.DataObject, kill_at: int
) -> None:
    trace = drive(scenario, Drawn(data, again=5), kill_at=kill_at)
    _assert_cleanly_ended(trace)
    before = trace.state_at_kill
    assert before is not None
    if before.terminated:
        assert trace.execution.state.current is before
    else:
        assert trace.execution.state.current is S.KILLED
    assert trace.run_tasks_after_kill == []
    assert len(trace.execution.task_run_list) == trace.runs_at_kill


# -- the cases the properties first found, pinned by one small flow each ---------------------
def _play(doc: dict[str, Any], table: Mapping[tuple[str, str], tuple[StateType, ...]]) -> Trace:
    flow = build_flow(doc)
    return drive(Scenario(doc, flow, Outcomes(table)), Fifo())


def _log(task_id: str) -> dict[str, Any]:
    return {"id": task_id, "type": LOG, "message": "m"}


@pytest.mark.parametrize("branch", ["errors", "finally"])
def test_a_failed_handler_task_does_not_stop_the_next_ones(branch: str) -> None:
    # Kestra's innerResolveSequentialNexts moves on after any terminated handler task.
    doc = {
        "id": "t",
        "namespace": "company.team",
        "tasks": [_log("a")],
        branch: [_log("h1"), _log("h2")],
    }
    trace = _play(doc, {("a", ""): KO, ("h1", ""): KO, ("h2", ""): OK})
    assert [r.task_id for r in trace.execution.task_run_list] == ["a", "h1", "h2"]


def test_foreach_runs_a_repeated_value_once() -> None:
    # Kestra's resolveEachTasks keeps the distinct values.
    doc = {
        "id": "t",
        "namespace": "company.team",
        "tasks": [
            {
                "id": "each",
                "type": CORE + "ForEach",
                "values": ["a", "a"],
                "concurrencyLimit": 1,
                "tasks": [_log("one")],
            }
        ],
    }
    trace = _play(doc, {("one", "a"): OK})
    assert [r.value for r in trace.execution.runs_of("one")] == ["a"]


def test_a_stale_retry_wake_up_does_not_start_an_attempt_early() -> None:
    retry = {"type": "constant", "interval": "PT1S", "maxAttempt": 3}
    flow = build_flow(
        {"id": "t", "namespace": "company.team", "tasks": [{**_log("a"), "retry": retry}]}
    )
    ex = new_execution(id="e", namespace="company.team", flow_id="t", flow_revision=1, at=EPOCH)
    ex, commands = apply(ex, flow, ExecutionCreated(at=EPOCH))
    run_id = next(c for c in commands if isinstance(c, RunTask)).task_run_id
    wake_ups = []
    for attempt in (1, 2):
        failed = WorkerResult(at=EPOCH, task_run_id=run_id, attempt=attempt, state=S.FAILED)
        ex, commands = apply(ex, flow, failed)
        wake = next(c for c in commands if isinstance(c, WakeAt))
        wake_ups.append(
            DelayElapsed(at=wake.when, delay=wake.delay, task_run_id=run_id, attempt=wake.attempt)
        )
        if attempt == 1:
            ex, commands = apply(ex, flow, wake_ups[0])
            assert [c.attempt for c in commands if isinstance(c, RunTask)] == [2]
    # The run now waits for wake_ups[1]; the first one is delivered again.
    again, commands = apply(ex, flow, wake_ups[0])
    assert [c for c in commands if isinstance(c, RunTask)] == []
    assert again is ex


def test_the_reference_marks_a_failure_under_concurrency_as_order_dependent() -> None:
    # p runs a and b together (concurrent 2), c waits for a slot: whether c starts
    # depends on whether b ends before a fails.
    doc = {
        "id": "t",
        "namespace": "company.team",
        "tasks": [
            {
                "id": "p",
                "type": CORE + "Parallel",
                "concurrent": 2,
                "tasks": [_log("a"), _log("b"), _log("c")],
            }
        ],
    }
    table = {("a", ""): KO, ("b", ""): OK, ("c", ""): OK}
    expected = Reference(Outcomes(table)).flow(doc)
    assert not expected.determinate
    assert {k[-1][0] for k in expected.must} == {"p", "a", "b"}
    flow = build_flow(doc)
    seen = set()
    for order in (Fifo(), Lifo()):
        end = drive(Scenario(doc, flow, Outcomes(table)), order).execution
        check_against(expected, end)
        seen.add(tuple(sorted(r.task_id for r in end.task_run_list)))
    assert seen == {("a", "b", "c", "p"), ("a", "b", "p")}
