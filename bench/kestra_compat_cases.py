"""Kestra's test flows run with the inputs their Java tests give, checked against
what those tests assert (the flows :mod:`bench.kestra_compat` cannot compare by
itself: they need inputs, or their tests assert more than the end state).

Each :class:`Case` names a flow of ``core/src/test/resources/flows/valids``, the
Kestra test it was read from, the inputs that test passes and the assertions it
makes, restated as data (end state, task-run count, the state, attempts or
outputs of given runs). Nothing of Kestra is kept here but those facts; the flows
are read from the checkout given.

Usage::

    python -m bench.kestra_compat_cases KESTRA_CHECKOUT [--only FLOW ...] [--jobs 2] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: what a FILE input of the ForEachItem tests holds: 102 lines, each a padded number
ITEMS = "".join(f"{n:>20}\n" for n in range(102))

Check = Callable[[dict[str, Any]], str | None]


@dataclass(frozen=True)
class Case:
    """One Kestra test's run of one flow, and what it asserts."""

    flow: str
    source: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    state: str | None = None
    runs: int | None = None
    #: FILE inputs: name -> content
    files: Mapping[str, str] = field(default_factory=dict)
    #: task id -> the state of its first run
    tasks: Mapping[str, str] = field(default_factory=dict)
    #: task ids that must not have run
    absent: tuple[str, ...] = ()
    #: index in the task run list -> task id
    order: Mapping[int, str] = field(default_factory=dict)
    #: index in the task run list -> (at least, at most) attempts
    attempts: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    #: task id -> output name -> expected value, or a check of it
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    #: a note on what the case leaves out of its Kestra test
    note: str = ""


def _exactly(n: int) -> tuple[int, int]:
    return (n, n)


def _at_least(n: int) -> tuple[int, int]:
    return (n, 1_000_000)


def _failed_runs_at_least(n: int) -> Check:
    def check(execution: dict[str, Any]) -> str | None:
        failed = [r for r in _runs(execution) if r["state"]["current"] == "FAILED"]
        return None if len(failed) >= n else f"{len(failed)} FAILED task runs, Kestra: >= {n}"

    return check


def _first_output_matches(pattern: str) -> Check:
    def check(execution: dict[str, Any]) -> str | None:
        value = str((_runs(execution)[0].get("outputs") or {}).get("value"))
        ok = re.fullmatch(pattern, value) is not None
        return None if ok else f"first output {value!r} does not match {pattern}"

    return check


def _iterations(**counts: int | None) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, dict) and all(value.get(k) == v for k, v in counts.items())

    return check


def _history_count(index: int, state: str, count: int) -> Check:
    def check(execution: dict[str, Any]) -> str | None:
        runs = _runs(execution)
        if index >= len(runs):
            return f"no run #{index}"
        seen = [h["state"] for h in runs[index]["state"]["histories"]].count(state)
        return None if seen == count else f"run #{index}: {seen} x {state}, Kestra: {count}"

    return check


def _loop_values(task_id: str, prefix: str, expected: int) -> Check:
    """Each run of ``task_id`` returned ``prefix`` + its loop values joined by '-'
    (Kestra's test reads them in the nested ``outputs``)."""

    def check(execution: dict[str, Any]) -> str | None:
        runs = _runs(execution)
        by_id = {r["id"]: r for r in runs}
        mine = [r for r in runs if r["taskId"] == task_id]
        if len(mine) != expected:
            return f"{len(mine)} runs of {task_id}, Kestra: {expected}"
        for run in mine:
            values, parent = [], by_id.get(run.get("parentTaskRunId") or "")
            while parent is not None:
                if parent.get("value") is not None:
                    values.append(parent["value"])
                parent = by_id.get(parent.get("parentTaskRunId") or "")
            path = "-".join([*reversed(values), *([run["value"]] if run.get("value") else [])])
            got = (run.get("outputs") or {}).get("value")
            if got != prefix + path:
                return f"{task_id} under {path}: {got!r}"
        return None

    return check


CASES: tuple[Case, ...] = (
    # IfTest
    Case(
        "if.yaml",
        "IfTest.multipleIf",
        {"if1": "true", "if2": "false", "if3": "true"},
        "SUCCESS",
        12,
    ),
    *(
        Case(
            "if-condition.yaml",
            "IfTest.ifTruthy",
            {"param": p},
            "SUCCESS",
            2,
            tasks={"when-true": "SUCCESS"},
        )
        for p in ("true", "1")
    ),
    *(
        Case(
            "if-condition.yaml",
            "IfTest.ifFalsy",
            {"param": p},
            "SUCCESS",
            2,
            tasks={"when-false": "SUCCESS"},
        )
        for p in ("false", "0", "-0")
    ),
    Case(
        "if-without-else.yaml",
        "IfTest.ifWithoutElse",
        {"param": "true"},
        "SUCCESS",
        2,
        tasks={"when-true": "SUCCESS"},
    ),
    Case(
        "if-without-else.yaml",
        "IfTest.ifWithoutElse",
        {"param": "false"},
        "SUCCESS",
        1,
        absent=("when-true",),
    ),
    Case(
        "if-in-flowable.yaml",
        "IfTest.ifInFlowable",
        {"param": "true"},
        "SUCCESS",
        8,
        tasks={"after_if": "SUCCESS"},
    ),
    # SwitchTest
    Case(
        "switch.yaml",
        "SwitchTest.switchFirst",
        {"string": "FIRST"},
        order={1: "t1"},
        outputs={"parent-seq": {"value": "FIRST", "defaults": False}},
    ),
    Case(
        "switch.yaml",
        "SwitchTest.switchSecond",
        {"string": "SECOND"},
        order={1: "t2", 2: "t2_sub"},
        outputs={"parent-seq": {"value": "SECOND", "defaults": False}},
    ),
    Case(
        "switch.yaml",
        "SwitchTest.switchThird",
        {"string": "THIRD"},
        order={1: "t3", 2: "failed", 3: "error-t1"},
        outputs={"parent-seq": {"value": "THIRD", "defaults": False}},
    ),
    Case(
        "switch.yaml",
        "SwitchTest.switchDefault",
        {"string": "DEFAULT"},
        order={1: "default"},
        outputs={"parent-seq": {"value": "DEFAULT", "defaults": True}},
    ),
    Case(
        "switch-impossible.yaml", "SwitchTest.switchImpossible", {"string": "impossible"}, "FAILED"
    ),
    # FailTest
    Case(
        "fail-on-switch.yaml",
        "FailTest.failOnSwitch",
        {"param": "fail"},
        "FAILED",
        1,
        tasks={"switch": "FAILED"},
    ),
    Case(
        "fail-on-condition.yaml",
        "FailTest.failOnCondition",
        {"param": "fail"},
        "FAILED",
        2,
        tasks={"fail": "FAILED"},
    ),
    Case(
        "fail-on-condition.yaml",
        "FailTest.dontFailOnCondition",
        {"param": "success"},
        "SUCCESS",
        3,
        tasks={"fail": "SUCCESS"},
    ),
    # AllowFailureTest.failed (its `success` case starts the execution without the
    # required input, which only Kestra's test runner can)
    Case(
        "allow-failure.yaml",
        "AllowFailureTest.failed",
        {"crash": "1"},
        "FAILED",
        10,
        tasks={
            "global-error": "SUCCESS",
            "switch": "FAILED",
            "crash": "FAILED",
            "first": "WARNING",
            "1-1-allow-failure": "WARNING",
            "1-1-1_seq": "FAILED",
            "1-1-1-1": "SUCCESS",
            "ko": "FAILED",
            "local-error": "SUCCESS",
            "1-2-todo": "SUCCESS",
        },
    ),
    Case(
        "empty-variables.yml",
        "EmptyVariablesTest.emptyVariables",
        {"emptyKey": '{ "foo": "" }', "emptySubObject": '{"json":{"someEmptyObject":{}}}'},
        "SUCCESS",
        3,
    ),
    # ForEachItemCaseTest (the subflows' own assertions are the repository's tests')
    Case(
        "for-each-item-no-wait.yaml",
        "ForEachItemCaseTest.forEachItemNoWait",
        files={"file": ITEMS},
        state="SUCCESS",
        runs=4,
        attempts={2: _exactly(1)},
        outputs={
            "each_items": {
                "numberOfBatches": 26,
                "iterations": _iterations(CREATED=None, RUNNING=0, SUCCESS=26),
            }
        },
    ),
    Case(
        "for-each-item-failed.yaml",
        "ForEachItemCaseTest.forEachItemFailed",
        files={"file": ITEMS},
        state="FAILED",
        runs=3,
        attempts={2: _exactly(1)},
        outputs={
            "each_items": {
                "numberOfBatches": 26,
                "iterations": _iterations(CREATED=0, RUNNING=0, FAILED=26),
            }
        },
    ),
    Case(
        "for-each-item-outputs.yaml",
        "ForEachItemCaseTest.forEachItemWithSubflowOutputs",
        files={"file": ITEMS},
        state="SUCCESS",
        runs=5,
        attempts={2: _exactly(1)},
        outputs={
            "each_items": {
                "numberOfBatches": 26,
                "iterations": _iterations(CREATED=0, RUNNING=0, SUCCESS=26),
            }
        },
    ),
    Case(
        "task-allow-failure-executable-foreachitem.yml",
        "TaskWithAllowFailureTest.executableTask_ForEachItem",
        files={"file": ITEMS},
        state="WARNING",
        runs=4,
    ),
    Case(
        "task-allow-warning-executable-foreachitem.yml",
        "TaskWithAllowWarningTest.executableTask_ForEachItem",
        files={"file": ITEMS},
        state="SUCCESS",
        runs=4,
    ),
    Case("inputs-large.yaml", "RunContextTest.inputsLarge", {"string": "a" * 11264}, "SUCCESS", 10),
    # RetryCaseTest, as JdbcRunnerRetryTest runs it
    Case(
        "retry-success.yaml",
        "RetryCaseTest.retrySuccess",
        state="WARNING",
        runs=1,
        attempts={0: _exactly(4)},
    ),
    Case(
        "retry-success-first-attempt.yaml",
        "RetryCaseTest.retrySuccessAtFirstAttempt",
        state="SUCCESS",
        runs=1,
        attempts={0: _exactly(1)},
    ),
    Case(
        "retry-failed.yaml",
        "RetryCaseTest.retryFailed",
        state="FAILED",
        runs=2,
        attempts={0: _exactly(5)},
    ),
    Case(
        "retry-random.yaml",
        "RetryCaseTest.retryRandom",
        state="FAILED",
        runs=1,
        attempts={0: _exactly(3)},
    ),
    Case(
        "retry-expo.yaml",
        "RetryCaseTest.retryExpo",
        state="FAILED",
        runs=1,
        attempts={0: _exactly(3)},
    ),
    Case(
        "retry-fail.yaml",
        "RetryCaseTest.retryFail",
        state="FAILED",
        runs=2,
        attempts={0: _exactly(3)},
    ),
    Case(
        "retry-failed-task-duration.yml",
        "RetryCaseTest.retryFailedTaskDuration",
        state="FAILED",
        attempts={0: _exactly(3)},
    ),
    Case(
        "retry-failed-task-attempts.yml",
        "RetryCaseTest.retryFailedTaskAttempts",
        state="FAILED",
        attempts={0: _exactly(4)},
    ),
    Case(
        "retry-failed-flow-duration.yml",
        "RetryCaseTest.retryFailedFlowDuration",
        state="FAILED",
        attempts={0: _exactly(3)},
    ),
    Case(
        "retry-failed-flow-attempts.yml",
        "RetryCaseTest.retryFailedFlowAttempts",
        state="FAILED",
        attempts={0: _exactly(4)},
    ),
    Case(
        "retry-flowable.yaml",
        "RetryCaseTest.retryFlowable",
        state="FAILED",
        attempts={1: _exactly(3)},
    ),
    Case(
        "retry-subflow.yaml",
        "RetryCaseTest.retrySubflow",
        state="FAILED",
        attempts={0: _exactly(3)},
    ),
    Case(
        "retry-flowable-child.yaml",
        "RetryCaseTest.retryFlowableChild",
        state="FAILED",
        attempts={1: _exactly(3)},
    ),
    Case(
        "retry-flowable-nested-child.yaml",
        "RetryCaseTest.retryFlowableNestedChild",
        state="FAILED",
        attempts={2: _exactly(3)},
    ),
    Case(
        "retry-flowable-parallel.yaml",
        "RetryCaseTest.retryFlowableParallel",
        state="FAILED",
        attempts={1: _at_least(2), 2: _at_least(2)},
    ),
    # JdbcRunnerTest
    Case(
        "each-parallel-subflow-notfound.yml",
        "JdbcRunnerTest.eachParallelWithSubflowMissing",
        state="FAILED",
        checks=(_failed_runs_at_least(2),),
    ),
    Case(
        "execution.yaml",
        "JdbcRunnerTest.executionDate",
        checks=(_first_output_matches(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z"),),
    ),
    Case(
        "current-output.yaml",
        "CurrentEachOutputFunctionTest.parallel",
        checks=(
            _loop_values("1-1-1_return", "return-", 8),
            _loop_values("2-1_return", "return-", 2),
        ),
    ),
    # PauseTest.runDelay: paused, then resumed by itself
    Case(
        "pause-delay.yaml",
        "PauseTest.runDelay",
        state="SUCCESS",
        runs=3,
        checks=(_history_count(0, "PAUSED", 1), _history_count(0, "RUNNING", 2)),
    ),
    Case(
        "trigger-toggle.yaml",
        "ToggleTest.toggle",
        state="SUCCESS",
        runs=1,
        note="the trigger's state (enabled again) is checked by the repository's own tests",
    ),
    Case(
        "working-directory-cache.yml",
        "WorkingDirectoryTest.cache (first run)",
        state="SUCCESS",
        runs=3,
        outputs={"exists": {"uris": {}}},
        note="its second run reads the cache, which is not implemented",
    ),
    Case(
        "state.yaml",
        "StateTest.set (first run)",
        {"state": "compat-state"},
        "SUCCESS",
        5,
        outputs={"createGet": {"data": lambda d: isinstance(d, dict) and d.get("value") == 1}},
    ),
    Case("state.yaml", "StateTest.each", {"state": "each"}, "SUCCESS", 17),
    Case(
        "input-log-secret.yaml",
        "InputsTest.shouldNotLogSecretInput",
        state="SUCCESS",
        runs=1,
        note="the masked log line is checked by tests/e2e/test_kestra_compat.py (secrets)",
    ),
    # FlowCaseTest (the parent's side; the subflow's labels are the repository's tests')
    Case(
        "task-flow.yaml",
        "FlowCaseTest.waitSuccess",
        {"string": "OK"},
        "SUCCESS",
        1,
        attempts={0: _exactly(1)},
        outputs={
            "launch": {
                "outputs": lambda o: "default > amazing" in str(o.get("extracted")),
                "state": "SUCCESS",
            }
        },
    ),
    Case(
        "task-flow.yaml",
        "FlowCaseTest.waitFailed",
        {"string": "THIRD"},
        "FAILED",
        1,
        attempts={0: _exactly(1)},
        outputs={
            "launch": {
                "outputs": lambda o: "Error Trigger ! error-t1" in str(o.get("extracted")),
                "state": "FAILED",
            }
        },
    ),
    Case(
        "task-flow.yaml",
        "FlowCaseTest.invalidOutputs",
        {"string": "FIRST"},
        "FAILED",
        1,
        attempts={0: _exactly(1)},
    ),
    Case(
        "task-flow-inherited-labels.yaml",
        "FlowCaseTest.noLabels",
        {"string": "OK"},
        "SUCCESS",
        1,
        attempts={0: _exactly(1)},
        outputs={"launch": {"state": "SUCCESS"}},
    ),
)


def _runs(execution: dict[str, Any]) -> list[dict[str, Any]]:
    return list(execution.get("taskRunList") or [])


def differences(case: Case, execution: dict[str, Any]) -> list[str]:
    """What ``execution`` does not have of what the case's Kestra test asserts."""
    out = []
    runs = _runs(execution)
    state = execution["state"]["current"]
    if case.state is not None and state != case.state:
        out.append(f"state {state}, Kestra: {case.state}")
    if case.runs is not None and len(runs) != case.runs:
        out.append(f"{len(runs)} task runs, Kestra: {case.runs}")
    first: dict[str, dict[str, Any]] = {}
    for run in runs:
        first.setdefault(run["taskId"], run)
    for task_id, want in case.tasks.items():
        got = first.get(task_id, {}).get("state", {}).get("current")
        if got != want:
            out.append(f"{task_id}: {got}, Kestra: {want}")
    out += [f"{t} ran, Kestra: it does not" for t in case.absent if t in first]
    for index, task_id in case.order.items():
        got = runs[index]["taskId"] if index < len(runs) else None
        if got != task_id:
            out.append(f"run #{index} is {got}, Kestra: {task_id}")
    for index, (low, high) in case.attempts.items():
        count = len(runs[index].get("attempts") or []) if index < len(runs) else 0
        if not low <= count <= high:
            out.append(f"run #{index}: {count} attempts, Kestra: {low}..{high}")
    for task_id, wanted in case.outputs.items():
        outputs = first.get(task_id, {}).get("outputs") or {}
        for name, want in wanted.items():
            value = outputs.get(name)
            ok = want(value) if callable(want) else value == want
            if not ok:
                out.append(f"{task_id}.outputs.{name} = {value!r}")
    out += [problem for check in case.checks if (problem := check(execution))]
    return out


async def run_case(case: Case, valids: Path, limit: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        args = [f"--input={k}={v}" for k, v in case.inputs.items()]
        for name, content in case.files.items():
            path = Path(folder) / f"{name}.txt"
            path.write_text(content)
            args.append(f"--input={name}=@{path}")
        cmd = [sys.executable, "-m", "services.cli", "flow", "test", str(valids / case.flow)]
        cmd += ["--flows", str(valids), "--json", "--timeout", f"{int(limit)}s", *args]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit + 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"case": case, "verdict": "did not run", "problems": ["harness timeout"]}
    try:
        execution = json.loads(out)
    except ValueError:
        tail = err.decode().strip().splitlines()[-1:] or ["no output"]
        return {"case": case, "verdict": "did not run", "problems": tail}
    problems = differences(case, execution)
    print(f"{case.flow} ({case.source}): {problems or 'as asserted'}", file=sys.stderr)
    return {"case": case, "verdict": "differs" if problems else "as asserted", "problems": problems}


async def measure(root: Path, only: list[str], jobs: int, limit: float) -> list[dict[str, Any]]:
    valids = root / "core/src/test/resources/flows/valids"
    gate = asyncio.Semaphore(jobs)
    chosen = [c for c in CASES if not only or c.flow in only or c.flow.rsplit(".", 1)[0] in only]

    async def one(case: Case) -> dict[str, Any]:
        async with gate:
            return await run_case(case, valids, limit)

    return list(await asyncio.gather(*(one(c) for c in chosen)))


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| flow | Kestra test | verdict | differences |", "|---|---|---|---|"]
    for row in rows:
        case = row["case"]
        problems = "; ".join(row["problems"]).replace("|", "/")
        lines.append(f"| {case.flow} | {case.source} | {row['verdict']} | {problems} |")
    flows: dict[str, bool] = {}
    for row in rows:
        flow = row["case"].flow
        flows[flow] = flows.get(flow, True) and row["verdict"] == "as asserted"
    lines += [
        "",
        f"- cases: {len(rows)}, as asserted: {sum(r['verdict'] == 'as asserted' for r in rows)}",
        f"- flows: {len(flows)}, every case as asserted: {sum(flows.values())}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kestra", type=Path, help="a checkout of kestra-io/kestra")
    parser.add_argument("--only", nargs="*", default=[], help="flow files or ids")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per flow run")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.kestra, args.only, args.jobs, args.timeout))
    if args.markdown:
        print(markdown(rows))
    else:
        print(json.dumps([{**r, "case": r["case"].source + " " + r["case"].flow} for r in rows]))


if __name__ == "__main__":
    main()
