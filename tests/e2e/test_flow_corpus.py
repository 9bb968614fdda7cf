"""End-to-end corpus: every flow of ``flows/`` runs through ``runtime flow test --json``.

Each flow has its expectations declared here: the execution's final state, the
exact set of task runs with their states (keyed ``taskId`` or ``taskId[loop
values]``, see ``FlowRun.runs``), chosen task outputs (a subset match), retry
attempts, flow outputs and, for some, timing checks read from the state
histories. Runs go through click's CliRunner in-process; one flow also runs as a
real ``python -m services.cli`` subprocess.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli import cli
from tests.e2e.helpers import (
    FlowRun,
    flow_test_args,
    http_server,
    instant,
    interval,
    is_storage_uri,
    matches,
    max_overlap,
    parse_output,
    run_in_process,
)

ROOT = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).resolve().parent / "flows"
SUBFLOWS = FLOWS / "subflows"


@dataclass(frozen=True)
class Case:
    """What one corpus flow must end with."""

    state: str
    #: every task run, by key, with its final state (an exact match: no more, no fewer)
    runs: Mapping[str, str]
    #: run key -> expected outputs (a subset: only the keys given are compared)
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: run key -> the states of its attempts, in order
    attempts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: the execution's flow outputs (exact), when the flow declares some
    flow_outputs: Mapping[str, Any] | None = None
    #: the execution's resolved inputs (a subset)
    inputs_seen: Mapping[str, Any] = field(default_factory=dict)
    #: --input values; ``{http}`` and ``{upload}`` are filled in by the test
    inputs: Sequence[str] = ()
    #: deploy flows/subflows with --flows
    subflows: bool = False
    #: extra assertions on the run
    check: Callable[[FlowRun], None] | None = None
    #: a known product bug: the test must fail until it is fixed
    bug: str | None = None
    #: runs for about a second (flows that start processes are marked slow anyway)
    slow: bool = False


# -- extra checks -------------------------------------------------------------------------
def _runs_of(run: FlowRun, task_id: str) -> list[dict[str, Any]]:
    return [r for r in run.execution["taskRunList"] if r["taskId"] == task_id]


def _parallel_is_bounded(run: FlowRun) -> None:
    naps = [r for r in run.execution["taskRunList"] if r["taskId"].startswith("nap_")]
    # concurrent: 2 -> never three sleeps at once, but two did overlap
    assert max_overlap(naps) == 2
    (third,) = _runs_of(run, "nap_c")
    first_end = min(interval(r)[1] for r in naps if r["taskId"] != "nap_c")
    assert interval(third)[0] >= first_end


def _foreach_concurrency(run: FlowRun) -> None:
    assert max_overlap(_runs_of(run, "serial_nap")) == 1
    assert max_overlap(_runs_of(run, "parallel_nap")) == 3


def _dag_order(run: FlowRun) -> None:
    runs = run.runs()
    start = {key: interval(r)[0] for key, r in runs.items()}
    end = {key: interval(r)[1] for key, r in runs.items()}
    assert start["clean"] >= end["extract"]
    assert start["nap"] >= end["extract"]
    assert start["enrich"] >= end["nap"]
    assert start["load"] >= max(end["clean"], end["enrich"])
    # the independent task did not wait for the slow branch
    assert start["standalone"] < end["nap"]


def _retry_intervals(run: FlowRun) -> None:
    (fail_twice,) = _runs_of(run, "fail_twice")
    attempts = fail_twice["attempts"]
    for before, after in itertools.pairwise(attempts):
        ended = instant(before["state"]["histories"][-1]["date"])
        started = instant(after["state"]["histories"][0]["date"])
        # interval PT0.1S between attempts (a little slack for clock rounding)
        assert (started - ended).total_seconds() >= 0.09


def _stopped_by_timeout(task_id: str, timeout: float) -> Callable[[FlowRun], None]:
    """The task ended about ``timeout`` seconds after it was created, far sooner than
    it would have (measured from CREATED: see long_task_dates for RUNNING dates)."""

    def check(run: FlowRun) -> None:
        (stopped,) = _runs_of(run, task_id)
        histories = stopped["state"]["histories"]
        created, ended = instant(histories[0]["date"]), instant(histories[-1]["date"])
        assert timeout * 0.8 <= (ended - created).total_seconds() < timeout + 5

    return check


def _went_through_paused(run: FlowRun) -> None:
    history = [h["state"] for h in run.execution["state"]["histories"]]
    assert history == ["CREATED", "RUNNING", "PAUSED", "RUNNING", "SUCCESS"]
    (pause,) = _runs_of(run, "wait_a_bit")
    started, ended = interval(pause)
    assert (ended - started).total_seconds() >= 0.45


def _stopped_at_pause(run: FlowRun) -> None:
    assert run.exit_code == 1
    assert [h["state"] for h in run.execution["state"]["histories"]][-1] == "PAUSED"


def _running_dates_match_durations(run: FlowRun) -> None:
    runs = run.runs()
    for key, slept in (("short_nap", 0.2), ("long_nap", 0.9)):
        started, ended = interval(runs[key])
        created = instant(runs[key]["state"]["histories"][0]["date"])
        # (no upper bound on the wait before it started: that is the machine's load;
        # a RUNNING date taken from the late "still running" report instead of the
        # start would make long_nap look shorter than it slept, caught below)
        assert created <= started, f"{key} started before it was created"
        assert (ended - started).total_seconds() >= slept * 0.9, f"{key} ran too briefly"
        attempt_start = runs[key]["attempts"][0]["state"]["histories"][0]
        assert attempt_start["state"] == "RUNNING"
        assert instant(attempt_start["date"]) == started


def _without_outputs(*task_ids: str) -> Callable[[FlowRun], None]:
    def check(run: FlowRun) -> None:
        for task_id in task_ids:
            assert [r["outputs"] for r in _runs_of(run, task_id)] == [None], task_id

    return check


def _children_with_outputs(wdir: str, children: set[str]) -> Callable[[FlowRun], None]:
    """Only the children that ran (not the skipped or disabled ones) have outputs."""

    def check(run: FlowRun) -> None:
        assert set(run.runs()[wdir]["outputs"]["outputs"]) == children

    return check


def _iterations(task_id: str, expected: list[int]) -> Callable[[FlowRun], None]:
    def check(run: FlowRun) -> None:
        assert [r["iteration"] for r in _runs_of(run, task_id)] == expected

    return check


def _labels(expected: dict[str, str]) -> Callable[[FlowRun], None]:
    def check(run: FlowRun) -> None:
        labels = {item["key"]: item["value"] for item in run.execution.get("labels", [])}
        # every execution also carries its correlation id, as in Kestra
        assert labels.pop("system.correlationId") == run.execution["id"]
        assert labels == expected

    return check


def _uri_under(flow_id: str) -> Callable[[Any], bool]:
    return lambda value: is_storage_uri(value) and f"/{flow_id}/executions/" in value


# -- the corpus ---------------------------------------------------------------------------
CASES: dict[str, Case] = {
    "basic_outputs": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            ["hello", "hello_old", "answer", "answer_old", "shout", "bundle", "reread"],
            "SUCCESS",
        ),
        outputs={
            "answer": {"value": "42"},
            "answer_old": {"value": "42-old"},
            "bundle": {
                "values": {"answer": "42", "ns": "e2e.corpus", "nested": {"list": ["a", "bundle"]}}
            },
            "reread": {"value": "bundle/e2e.corpus"},
        },
        check=_without_outputs("hello", "hello_old", "shout"),
    ),
    "fail_errors_finally": Case(
        state="FAILED",
        runs={
            "before": "SUCCESS",
            "boom": "FAILED",
            "on_error": "SUCCESS",
            "on_error_old": "SUCCESS",
            "cleanup": "SUCCESS",
        },
        outputs={
            "on_error": {"value": "handled fail-errors-finally"},
            "cleanup": {"value": "finally saw handled fail-errors-finally"},
        },
        attempts={"boom": ["FAILED"]},
    ),
    "task_errors": Case(
        state="FAILED",
        runs={
            "group": "FAILED",
            "inner_ok": "SUCCESS",
            "inner_fail": "FAILED",
            "group_handler": "SUCCESS",
            "group_finally": "SUCCESS",
            "flow_handler": "SUCCESS",
        },
        outputs={
            "group_handler": {"value": "group saw ok"},
            "flow_handler": {"value": "flow saw group saw ok"},
        },
    ),
    "timeout": Case(
        state="FAILED",
        runs={"quick_nap": "SUCCESS", "long_nap": "FAILED", "timed_out": "SUCCESS"},
        outputs={"timed_out": {"value": "timed_out"}},
        check=_stopped_by_timeout("long_nap", 0.3),
    ),
    "kv_store": Case(
        state="WARNING",
        runs={
            "put_text": "SUCCESS",
            "put_number": "SUCCESS",
            "put_json": "SUCCESS",
            "get_text": "SUCCESS",
            "get_json": "SUCCESS",
            "use_kv_function": "SUCCESS",
            "no_overwrite": "WARNING",
            "drop": "SUCCESS",
            "drop_again": "SUCCESS",
            "get_missing": "SUCCESS",
            "put_short_lived": "SUCCESS",
            "get_before_expiry": "SUCCESS",
            "let_it_expire": "SUCCESS",
            "get_after_expiry": "SUCCESS",
        },
        outputs={
            "get_text": {"value": "hello"},
            "get_json": {"value": {"colors": ["red", "blue"], "size": 2}},
            "use_kv_function": {"value": "42 blue"},
            "drop": {"deleted": True},
            "drop_again": {"deleted": False},
            "get_missing": {"value": None},
            "get_before_expiry": {"value": "soon gone"},
            "get_after_expiry": {"value": None},
        },
    ),
    "state_store": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "first_set",
                "second_set",
                "read",
                "per_value",
                "set_each[x]",
                "get_each[x]",
                "set_each[y]",
                "get_each[y]",
                "remove",
                "read_after_delete",
            ],
            "SUCCESS",
        ),
        outputs={
            "first_set": {"count": 2, "key": is_storage_uri},
            "second_set": {"count": 2},
            "read": {"count": 2, "data": {"step": "two", "started": "state-store"}},
            "get_each[x]": {"count": 1, "data": {"item": "x"}},
            "get_each[y]": {"count": 1, "data": {"item": "y"}},
            "remove": {"deleted": True},
            "read_after_delete": {"count": 0, "data": {}},
        },
    ),
    "http_request": Case(
        state="WARNING",
        inputs=["base_url={http}"],
        runs={
            "get_json": "SUCCESS",
            "parse": "SUCCESS",
            "post_echo": "SUCCESS",
            "missing_allowed": "SUCCESS",
            "missing_fails": "WARNING",
        },
        outputs={
            "get_json": {
                "code": 200,
                "headers": {"Content-Type": ["application/json"]},
                "body": lambda body: '"who": "http-request"' in body and '"trace": "' in body,
            },
            "parse": {"value": "3:http-request"},
            "post_echo": {
                "code": 201,
                "body": '{"received": {"answer": 42}, "type": "application/json"}',
            },
            "missing_allowed": {"code": 404, "body": lambda body: "no route /missing" in body},
        },
    ),
    "shell_scripts": Case(
        state="WARNING",
        runs={
            "commands": "SUCCESS",
            "script": "SUCCESS",
            "read_back": "SUCCESS",
            "bash_interpreter": "SUCCESS",
            "failing_command": "WARNING",
        },
        outputs={
            "commands": {
                "exitCode": 0,
                "vars": {"rows": 3, "greeting": "hi from shell-scripts"},
                "outputFiles": {
                    "greeting.txt": _uri_under("shell-scripts"),
                    "lines.txt": _uri_under("shell-scripts"),
                },
            },
            "script": {"vars": {"total": 9}, "outputFiles": {"copy.txt": is_storage_uri}},
            "read_back": {"value": "copied: hi from shell-scripts|9"},
            "bash_interpreter": {"vars": {"picked": "before-two"}},
        },
        attempts={"failing_command": ["FAILED"]},
    ),
    "python_scripts": Case(
        state="SUCCESS",
        inputs=["factor=10"],
        runs={"commands": "SUCCESS", "script": "SUCCESS", "summary": "SUCCESS"},
        inputs_seen={"factor": 10},
        outputs={
            "commands": {
                "exitCode": 0,
                "vars": {"total": 100, "count": 4},
                "outputFiles": {"scaled.json": is_storage_uri},
            },
            "script": {"vars": {"max": 40, "total_seen": 100}},
            "summary": {"value": "e2e:40 40"},
        },
    ),
    "working_directory": Case(
        state="SUCCESS",
        runs={
            "wdir": "SUCCESS",
            "write": "SUCCESS",
            "read": "SUCCESS",
            "tag": "SUCCESS",
            "skipped_child": "SKIPPED",
            "after": "SUCCESS",
        },
        outputs={
            "wdir": {
                "outputs": {
                    "read": {"vars": {"product": 42}},
                    "tag": {"value": "saw 42"},
                },
                "outputFiles": {"result.txt": is_storage_uri},
            },
            "after": {"value": "saw 42 / result=42"},
        },
        check=_children_with_outputs("wdir", {"write", "read", "tag"}),
    ),
    "working_directory_child_outputs": Case(
        state="SUCCESS",
        runs={"folder": "SUCCESS", "make_value": "SUCCESS", "use_child_output": "SUCCESS"},
        outputs={"use_child_output": {"value": "got made"}},
    ),
    "python_function": Case(
        state="WARNING",
        runs={
            "factorial": "SUCCESS",
            "mean": "SUCCESS",
            "dotted": "SUCCESS",
            "with_kwargs": "SUCCESS",
            "raises": "WARNING",
            "too_slow": "WARNING",
            "after_kill": "SUCCESS",
            "after": "SUCCESS",
        },
        outputs={
            "factorial": {"value": 120},
            "mean": {"value": 5},
            "dotted": {"value": "root/python-function/120"},
            "with_kwargs": {"value": [3, 2, 1]},
            "after_kill": {"value": 24},
            "after": {"value": "3-5"},
        },
        check=_stopped_by_timeout("too_slow", 0.5),
    ),
    "sequential_parallel": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "fan_out",
                "nap_a",
                "nap_b",
                "nap_c",
                "branch",
                "step_one",
                "step_two",
                "old_parallel",
                "left",
                "right",
                "right_inner",
                "join",
                "wrap_up",
            ],
            "SUCCESS",
        ),
        outputs={
            "step_two": {"value": "one+two"},
            "join": {"value": "one+two|LR"},
            "wrap_up": {"value": "finally one+two|LR"},
        },
        check=_parallel_is_bounded,
    ),
    "if_switch": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "is_big",
                "big",
                "is_odd",
                "even",
                "by_color",
                "go",
                "go_fast",
                "by_shape",
                "fallback",
            ],
            "SUCCESS",
        ),
        outputs={
            "is_big": {"evaluationResult": True},
            "is_odd": {"evaluationResult": False},
            "by_color": {"value": "green", "defaults": False},
            "go_fast": {"value": "go fast"},
            "by_shape": {"value": "hexagon", "defaults": True},
            "fallback": {"value": "no case for hexagon"},
        },
    ),
    "foreach_loops": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "each_number",
                "square[1]",
                "plus_one[1]",
                "is_even[1]",
                "square[2]",
                "plus_one[2]",
                "is_even[2]",
                "even_note[2]",
                "square[3]",
                "plus_one[3]",
                "is_even[3]",
                "each_fruit",
                "shout[apple]",
                "shout[kiwi]",
                "shout[plum]",
                "outer",
                "inner[a]",
                "pair[a/1]",
                "pair[a/2]",
                "inner[b]",
                "pair[b/1]",
                "pair[b/2]",
                "each_record",
                'record[{"sku":"A1","qty":2}]',
                'record[{"sku":"B2","qty":5}]',
                "collect",
            ],
            "SUCCESS",
        ),
        outputs={
            "square[3]": {"value": "9"},
            "plus_one[3]": {"value": "10"},
            "is_even[2]": {"evaluationResult": True},
            "is_even[3]": {"evaluationResult": False},
            "even_note[2]": {"value": "2 is even"},
            "shout[plum]": {"value": "PLUM"},
            "pair[a/2]": {"value": "a2"},
            'record[{"sku":"B2","qty":5}]': {"value": "B2x5"},
            "collect": {"value": "4,9,KIWI,b1,2"},
        },
        check=_iterations("square", [0, 1, 2]),
    ),
    "foreach_concurrency": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "one_by_one",
                "serial_nap[s1]",
                "serial_nap[s2]",
                "serial_nap[s3]",
                "all_at_once",
                "parallel_nap[p1]",
                "parallel_nap[p2]",
                "parallel_nap[p3]",
            ],
            "SUCCESS",
        ),
        check=_foreach_concurrency,
        slow=True,
    ),
    "each_legacy": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "seq",
                "seq_item[x]",
                "seq_item[y]",
                "seq_item[z]",
                "par",
                "par_item[red]",
                "par_item[green]",
                "old_seq",
                "old_item[10]",
                "old_item[20]",
                "summary",
            ],
            "SUCCESS",
        ),
        outputs={
            "seq_item[y]": {"value": "y!"},
            "par_item[red]": {"value": "3"},
            "summary": {"value": "z! 5 v=20"},
        },
    ),
    "dag": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            ["pipeline", "extract", "standalone", "clean", "nap", "enrich", "load"], "SUCCESS"
        ),
        outputs={"load": {"value": "clean(raw)+enrich(raw)"}},
        check=_dag_order,
    ),
    "allow_failure": Case(
        state="WARNING",
        runs={
            "tolerant": "WARNING",
            "first": "SUCCESS",
            "breaks": "FAILED",
            "tolerant_handler": "SUCCESS",
            "flaky_allowed": "WARNING",
            "still_runs": "SUCCESS",
        },
        outputs={"still_runs": {"value": "handled after first"}},
    ),
    "allow_warning": Case(
        state="SUCCESS",
        runs={
            "warns_allowed": "SUCCESS",
            "group_allowed": "SUCCESS",
            "inner_warns": "WARNING",
            "after": "SUCCESS",
        },
    ),
    "allow_warning_not_set": Case(
        state="WARNING",
        runs={"warns": "WARNING", "after": "SUCCESS"},
        outputs={"warns": {"exitCode": 0}},
    ),
    "runif_disabled": Case(
        state="SUCCESS",
        runs={
            "optional": "SKIPPED",
            "always": "SUCCESS",
            "group": "SUCCESS",
            "skipped_child": "SKIPPED",
            "kept_child": "SUCCESS",
        },
        outputs={"always": {"value": "no optional"}, "kept_child": {"value": "kept"}},
        attempts={"optional": [], "skipped_child": []},
    ),
    "retry": Case(
        state="WARNING",
        runs={"fail_twice": "SUCCESS", "counter_script": "SUCCESS", "always_fails": "WARNING"},
        attempts={
            "fail_twice": ["FAILED", "FAILED", "SUCCESS"],
            "counter_script": ["FAILED", "SUCCESS"],
            "always_fails": ["FAILED", "FAILED", "FAILED"],
        },
        outputs={"counter_script": {"vars": {"attempts": 2}}},
        check=_retry_intervals,
    ),
    "retry_warning": Case(
        state="WARNING",
        runs={"second_time_lucky": "WARNING", "after": "SUCCESS"},
        attempts={"second_time_lucky": ["FAILED", "SUCCESS"]},
    ),
    "subflow_outputs": Case(
        state="SUCCESS",
        subflows=True,
        runs={
            "call_child": "SUCCESS",
            "per_name": "SUCCESS",
            "call_each[ann]": "SUCCESS",
            "call_each[bob]": "SUCCESS",
            "use_outputs": "SUCCESS",
        },
        outputs={
            "call_child": {
                "executionId": lambda value: isinstance(value, str) and len(value) > 10,
                "state": "SUCCESS",
                "outputs": {"greeting": "hello SUBFLOW-OUTPUTS", "doubled": 6},
            },
            "call_each[ann]": {"outputs": {"greeting": "hello ann", "doubled": 2}},
            "use_outputs": {"value": "hello SUBFLOW-OUTPUTS x6, hello bob"},
        },
    ),
    "subflow_failure": Case(
        state="FAILED",
        subflows=True,
        runs={
            "tolerated": "SUCCESS",
            "allowed": "WARNING",
            "transmitted": "FAILED",
            "parent_handler": "SUCCESS",
        },
        outputs={
            "tolerated": {"state": "FAILED"},
            "allowed": {"state": "FAILED"},
            "transmitted": {"state": "FAILED"},
        },
    ),
    "subflow_no_wait": Case(
        state="SUCCESS",
        subflows=True,
        runs={"fire_and_forget": "SUCCESS", "after": "SUCCESS"},
        outputs={"after": {"value": "true"}},
    ),
    "pause_resume": Case(
        state="SUCCESS",
        runs={"before": "SUCCESS", "wait_a_bit": "SUCCESS", "after": "SUCCESS"},
        outputs={"after": {"value": "after before"}},
        check=_went_through_paused,
    ),
    "pause_manual": Case(
        state="PAUSED",
        runs={"before": "SUCCESS", "approval": "PAUSED"},
        check=_stopped_at_pause,
    ),
    "wait_for": Case(
        state="SUCCESS",
        runs={
            "poll": "SUCCESS",
            "probe[#0]": "SUCCESS",
            "probe[#1]": "SUCCESS",
            "probe[#2]": "SUCCESS",
            "after": "SUCCESS",
        },
        outputs={
            "poll": {"iterationCount": 3},
            "probe[#2]": {"value": "2"},
            "after": {"value": "done at 2"},
        },
    ),
    "wait_for_iteration_count": Case(
        state="SUCCESS",
        runs={
            "until_three": "SUCCESS",
            "counter[#0]": "SUCCESS",
            "counter[#1]": "SUCCESS",
            "counter[#2]": "SUCCESS",
        },
        outputs={"until_three": {"iterationCount": 3}, "counter[#0]": {"value": "1"}},
    ),
    "wait_for_max_reached": Case(
        state="FAILED",
        runs={
            "hopeless": "FAILED",
            "attempt[#0]": "SUCCESS",
            "attempt[#1]": "SUCCESS",
            "attempt[#2]": "SUCCESS",
            "gave_up": "SUCCESS",
        },
        outputs={"hopeless": {"iterationCount": 3}, "gave_up": {"value": "gave up after try 2"}},
    ),
    "long_task_dates": Case(
        state="SUCCESS",
        runs={"short_nap": "SUCCESS", "long_nap": "SUCCESS"},
        check=_running_dates_match_durations,
        slow=True,
    ),
    "inputs_typed": Case(
        state="SUCCESS",
        inputs=[
            "count=41",
            "enabled=true",
            'config={"mode": "fast", "limits": {"max": 9}}',
            'tags=["a", "b", "c"]',
            "started=2025-03-04T05:06:07+02:00",
        ],
        runs={"typed": "SUCCESS"},
        inputs_seen={
            "count": 41,
            "enabled": True,
            "config": {"mode": "fast", "limits": {"max": 9}},
            "tags": ["a", "b", "c"],
            "started": "2025-03-04T03:06:07Z",
            "env": "staging",
            "owner": "nobody",
            "ratio": 0.5,
            "note": None,
            "picks": ["red", "blue"],
            "wait": "PT1H30M",
            "day": "2024-12-31",
        },
        outputs={
            "typed": {
                "values": {
                    "next_count": "42",
                    "enabled": "on",
                    "mode": "fast",
                    "threshold": "9",
                    "tags": "a+b+c",
                    "tag_count": "3",
                    "year": "2025",
                    "env": "STAGING",
                    "owner": "nobody",
                    "double_ratio": "1.0",
                    "note": "no note",
                    "picks": "red|blue",
                    "wait": "PT1H30M",
                    "next_day": "2025-01-01",
                }
            }
        },
    ),
    "inputs_file": Case(
        state="SUCCESS",
        inputs=["upload=@{upload}"],
        runs={"content": "SUCCESS", "count_lines": "SUCCESS"},
        inputs_seen={"upload": lambda value: is_storage_uri(value) and value.endswith("/data.csv")},
        outputs={
            "content": {"value": "X,1\nY,2\nZ,3"},
            "count_lines": {"vars": {"lines": 3}},
        },
    ),
    "flow_outputs": Case(
        state="SUCCESS",
        runs={"compute": "SUCCESS", "describe": "SUCCESS"},
        flow_outputs={
            "total": 42,
            "summary": "total=42",
            "big": True,
            "meta": {"flow": "flow-outputs", "base": 20},
        },
        check=_labels({"kind": "outputs"}),
    ),
    "defaults_vars_labels": Case(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "uses_default",
                "own_value",
                "raw_variable",
                "rendered_variable",
                "labels_seen",
                "merged_map",
                "defused",
                "put_shared",
                "read_shared",
            ],
            "SUCCESS",
        ),
        outputs={
            "uses_default": {"value": "default for uses_default"},
            "own_value": {"value": "own qa 3"},
            "raw_variable": {"value": "hi {{ labels.team }}"},
            "rendered_variable": {"value": "hi platform"},
            "labels_seen": {"value": "platform/1"},
            "merged_map": {"values": {"mine": "kept", "forced": "yes"}},
            "read_shared": {"value": "qa"},
        },
        check=_labels({"team": "platform", "tier": "1"}),
    ),
    "templates": Case(
        state="SUCCESS",
        runs={"render": "SUCCESS"},
        outputs={
            "render": {
                "values": {
                    "day": "2024-02-28",
                    "next_day": "2024-02-29 22:30",
                    "upper": "WIDGET",
                    "default_filter": "fallback",
                    "coalesce": "second fallback",
                    "as_json": '{"name":"widget","sizes":[3,1,2]}',
                    "json_filter": "[3,1,2]",
                    "parsed": "20",
                    "sorted": "1,2,3",
                    "count": "3",
                    "ternary": "many",
                    "concat": "a1true",
                    "title": "Hello World",
                    "paris": "2024-02-28 23:30",
                    "loop": "[3][1][2]",
                }
            }
        },
    ),
}


#: task types that start processes: scripts, and PythonFunction's process pool
PROCESS_TYPES = ("io.kestra.plugin.scripts.", "io.kestra.plugin.runtime.PythonFunction")


def _spawns_processes(stem: str) -> bool:
    text = (FLOWS / f"{stem}.yml").read_text()
    return any(f"type: {prefix}" in text for prefix in PROCESS_TYPES)


def _params() -> Iterator[Any]:
    for stem in sorted(CASES):
        case = CASES[stem]
        marks: list[pytest.MarkDecorator] = []
        if case.bug:
            marks.append(pytest.mark.xfail(strict=True, reason=case.bug))
        if case.slow or _spawns_processes(stem):
            marks.append(pytest.mark.slow)
        yield pytest.param(stem, id=stem, marks=marks)


@pytest.fixture(scope="module")
def http_base_url() -> Iterator[str]:
    with http_server() as url:
        yield url


def _inputs(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The case's --input values with ``{http}`` and ``{upload}`` filled in."""
    inputs = list(case.inputs)
    if any("{http}" in item for item in inputs):
        url = request.getfixturevalue("http_base_url")
        inputs = [item.replace("{http}", url) for item in inputs]
    if any("{upload}" in item for item in inputs):
        upload = tmp_path / "data.csv"
        upload.write_text("x,1\ny,2\nz,3\n")
        inputs = [item.replace("{upload}", str(upload)) for item in inputs]
    return inputs


def assert_case(run: FlowRun, case: Case) -> None:
    assert run.state == case.state, f"task runs: {run.states()}\n{run.stderr}"
    assert run.exit_code == (0 if case.state in ("SUCCESS", "WARNING") else 1)
    assert run.states() == dict(case.runs)
    runs = run.runs()
    for key, expected in case.outputs.items():
        assert matches(runs[key]["outputs"], expected), f"{key}: {runs[key]['outputs']}"
    for key, states in case.attempts.items():
        got = [attempt["state"]["current"] for attempt in runs[key].get("attempts", [])]
        assert got == list(states), key
    for key, expected in case.inputs_seen.items():
        assert matches(run.execution["inputs"].get(key), expected), key
    if case.flow_outputs is not None:
        assert run.execution["outputs"] == dict(case.flow_outputs)
    if case.check is not None:
        case.check(run)


@pytest.mark.parametrize("stem", list(_params()))
def test_flow(stem: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    case = CASES[stem]
    run = run_in_process(
        FLOWS / f"{stem}.yml",
        _inputs(case, request, tmp_path),
        SUBFLOWS if case.subflows else None,
    )
    assert_case(run, case)


def test_every_flow_has_expectations() -> None:
    assert {path.stem for path in FLOWS.glob("*.yml")} == set(CASES)


def test_defaults_when_no_input_is_given() -> None:
    run = run_in_process(FLOWS / "inputs_typed.yml")
    assert run.state == "SUCCESS"
    assert run.execution["inputs"] == {
        "count": 1,
        "enabled": False,
        "config": {"mode": "default"},
        "tags": ["none"],
        "started": "2024-01-01T00:00:00Z",
        "env": "staging",
        "owner": "nobody",
        "ratio": 0.5,
        "note": None,
        "picks": ["red", "blue"],
        "wait": "PT1H30M",
        "day": "2024-12-31",
    }
    values = run.runs()["typed"]["outputs"]["values"]
    assert values["next_count"] == "2"
    assert values["enabled"] == "off"
    assert values["threshold"] == "none"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("count=500", "input 'count': 500 is above the maximum 100"),
        ("env=moon", "input 'env': 'moon' is not one of ['dev', 'staging', 'prod']"),
        ("enabled=maybe", "input 'enabled': expected true or false, got 'maybe'"),
    ],
)
def test_invalid_input_is_refused_before_running(given: str, message: str) -> None:
    result = CliRunner().invoke(cli, flow_test_args(FLOWS / "inputs_typed.yml", [given]))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr


@pytest.mark.slow
def test_flow_test_as_a_subprocess() -> None:
    case = CASES["subflow_outputs"]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            *flow_test_args(FLOWS / "subflow_outputs.yml", flows_dir=SUBFLOWS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_case(parse_output(completed.returncode, completed.stdout, completed.stderr), case)


@pytest.mark.slow
def test_timeout_option_returns_the_unfinished_execution() -> None:
    args = flow_test_args(FLOWS / "long_task_dates.yml")
    args[args.index("--timeout") + 1] = "PT0.5S"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "did not end within 0.5s (state: RUNNING)" in result.stderr
    run = parse_output(result.exit_code, result.stdout, result.stderr)
    assert run.state == "RUNNING"
    states = run.states()
    assert states["short_nap"] == "SUCCESS"
    assert states["long_nap"] in ("CREATED", "RUNNING")
