"""Kestra compatibility, round two (issue 17): flows written the way Kestra users
write them, each with its expected end state, task runs and outputs.

The flows are our own (``flows_compat/``), shaped after what Kestra's own test
flows exercise. Each runs through ``runtime flow test``'s engine on the memory
backend, on SQLite (a file in the test's folder) and, when the server is there,
on PostgreSQL (a fresh schema).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from backends.sqlite import SqliteBackend
from runtime.config import Config, VariablesConfig
from runtime.flow.execution import to_kestra_dict
from runtime.messages import LogEntry
from services import flow_test
from services.cli import cli
from tests.e2e.helpers import FlowRun, http_server, matches, max_overlap
from tests.requirements import missing

FLOWS = Path(__file__).resolve().parent / "flows_compat"
BACKENDS = ("memory", "sqlite", "postgres")


@dataclass(frozen=True)
class Expect:
    """What one flow must end with."""

    state: str
    #: every task run by key (``taskId`` or ``taskId[loop value]``) and its final state
    runs: Mapping[str, str]
    #: run key -> a subset of its outputs
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: run key -> the number of attempts
    attempts: Mapping[str, int] = field(default_factory=dict)
    #: a text some ERROR log line must contain
    error_log: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    flow_outputs: Mapping[str, Any] | None = None
    check: Callable[[FlowRun, list[LogEntry]], None] | None = None
    #: the flow file's stem, when several cases run one flow
    flow: str | None = None
    #: the content of the file given for ``{upload}``
    upload: str = "hello world\n"


#: java.time.Instant#toString of a millisecond instant (the fraction left out at zero)
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z")


def _history(run: FlowRun, key: str, states: list[str]) -> None:
    assert [h["state"] for h in run.runs()[key]["state"]["histories"]] == states


def _assert_no_outputs(run: FlowRun, key: str) -> None:
    assert not run.runs()[key].get("outputs")


def _extraction_failed(logs: list[LogEntry]) -> None:
    warned = [e.message for e in logs if e.level in ("WARN", "WARNING")]
    assert any("Failed to extract outputs" in m and "nothing" in m for m in warned), warned


def _no_outputs(run: FlowRun) -> None:
    assert not run.execution.get("outputs")


def _labels_set(run: FlowRun) -> None:
    labels = {item["key"]: item["value"] for item in run.execution["labels"]}
    assert labels.pop("system.correlationId") == run.execution["id"]  # a root's own id
    assert labels == {
        "team": "platform",  # set by a task over the flow's label
        "tier": "gold",
        "count": "2",
        "listed": "from_list",
        "fromJson": "yes",
    }
    plain = run.runs()["plain"]["outputs"]["outputs"]["seen"]
    # not inherited, but tied to this execution tree
    root = run.execution["id"]
    # a dotted key is also nested, as Kestra's templates see labels
    assert plain == {"system.correlationId": root, "system": {"correlationId": root}}


def _has_labels(run: FlowRun, expected: dict[str, str]) -> None:
    labels = {i["key"]: i["value"] for i in run.execution.get("labels") or []}
    labels.pop("system.correlationId", None)
    assert labels == expected


def _same(got: object, expected: object) -> None:
    assert got == expected


def _logged(logs: list[LogEntry], text: str) -> None:
    assert any(text in entry.message for entry in logs), [e.message for e in logs]


def _loop_bounded(run: FlowRun, logs: list[LogEntry]) -> None:
    steps = [r for r in run.execution["taskRunList"] if r["taskId"] == "step"]
    assert max_overlap(steps) == 2  # concurrencyLimit rendered from the input


CASES: dict[str, Expect] = {
    "dynamic_properties": Expect(
        state="WARNING",
        runs={
            "nap": "SUCCESS",
            "flaky": "WARNING",
            "loop": "SUCCESS",
            **{f"step[{v}]": "SUCCESS" for v in "abcd"},
            "hold": "SUCCESS",
            "after": "SUCCESS",
        },
        attempts={"flaky": 3},
        check=_loop_bounded,
    ),
    "functions": Expect(
        state="FAILED",
        inputs={"data": "{upload}"},
        runs={
            "outer": "SUCCESS",
            **{f"inner[{o}]": "SUCCESS" for o in "xy"},
            **{f"{t}[{o}/{i}]": "SUCCESS" for t in ("make", "pick") for o in "xy" for i in "12"},
            "files": "SUCCESS",
            "sealed": "SUCCESS",
            "opened": "SUCCESS",
            "boom": "FAILED",
            "report": "SUCCESS",
        },
        outputs={
            **{f"pick[{o}/{i}]": {"value": f"got-{o}{i}"} for o in "xy" for i in "12"},
            "files": {"values": {"size": "12", "exists": "true", "empty": "false"}},
            "sealed": {"value": lambda v: v != "open sesame" and len(v) == 52},
            "opened": {"value": "open sesame"},
            "report": {"value": "boom: the disk is full"},
        },
    ),
    "functions_refused": Expect(
        state="FAILED",
        runs={"sealed": "SUCCESS", "wrong_key": "WARNING", "foreign_file": "FAILED"},
        error_log="does not belong to this execution",
        check=lambda run, logs: _logged(
            logs, "decrypt(): the text was not encrypted with this key"
        ),
    ),
    "foreach_null": Expect(
        state="FAILED",
        runs={"loop": "FAILED"},
        error_log="Found '1' null values on Each, with values=[first, null, {k=v}, null]",
    ),
    "foreach_repeated": Expect(
        state="SUCCESS",
        runs={"loop": "SUCCESS", "body[a]": "SUCCESS", "body[b]": "SUCCESS", "body[1]": "SUCCESS"},
        outputs={"body[a]": {"value": "v=a"}, "body[1]": {"value": "v=1"}},
    ),
    "pause_timeout": Expect(
        state="FAILED",
        runs={"gate": "FAILED"},
        check=lambda run, logs: _history(run, "gate", ["CREATED", "RUNNING", "PAUSED", "FAILED"]),
    ),
    "flow_output_unrenderable": Expect(
        state="FAILED",
        runs={"fine": "SUCCESS"},
        check=lambda run, logs: _no_outputs(run),
    ),
    "instant_dates": Expect(
        state="SUCCESS",
        runs={"dates": "SUCCESS"},
        outputs={
            "dates": {
                "values": {
                    "execution": lambda v: bool(INSTANT.fullmatch(v)),
                    "taskrun": lambda v: bool(INSTANT.fullmatch(v)),
                }
            }
        },
    ),
    "storage_tasks": Expect(
        state="SUCCESS",
        runs=dict.fromkeys(
            [
                "items",
                "more",
                "size",
                "joined",
                "pieces",
                "big",
                "unique",
                "read_back",
                "gone",
                "gone_again",
                "purge",
                "after_purge",
            ],
            "SUCCESS",
        ),
        outputs={
            "size": {"size": 76},
            "pieces": {"uris": lambda uris: len(uris) == 3},
            "big": {"processedItemsTotal": 5, "droppedItemsTotal": 2},
            "unique": {"numKeys": 4, "processedItemsTotal": 5, "droppedItemsTotal": 1},
            "read_back": {
                "value": '{"k":"b","n":2}\n{"k":"a","n":3}\n{"k":"c","n":4}\n{"k":"d","n":5}\n'
            },
            "gone": {"deleted": True},
            "gone_again": {"deleted": False},
            "purge": {"uris": lambda uris: len(uris) == 7},
            "after_purge": {"values": {"exists": "false"}},
        },
    ),
    "working_directory_files": Expect(
        state="SUCCESS",
        runs={
            "wd": "SUCCESS",
            "write": "SUCCESS",
            "maybe_fail": "SKIPPED",
            "whose": "SUCCESS",
            "collect": "SUCCESS",
            "after": "SUCCESS",
        },
        outputs={
            "after": {"value": "made by write"},
            "wd": {"outputFiles": lambda files: set(files) == {"given.txt", "made.txt"}},
        },
        # the children see their WorkingDirectory's task run as `workerTaskrun`
        check=lambda run, logs: _same(
            run.runs()["whose"]["outputs"]["value"], run.runs()["wd"]["id"]
        ),
    ),
    "working_directory_files_failing": Expect(
        state="FAILED",
        runs={"wd": "FAILED", "write": "SUCCESS", "maybe_fail": "FAILED", "on_error": "SUCCESS"},
        outputs={"on_error": {"value": "handled in on_error"}},
    ),
    "labels": Expect(
        state="SUCCESS",
        runs=dict.fromkeys(
            ["from_map", "from_list", "from_json", "inheriting", "plain"], "SUCCESS"
        ),
        outputs={
            "from_map": {"labels": {"team": "platform", "count": "2"}},
            "inheriting": {
                "outputs": {
                    "seen": {
                        "team": "platform",
                        "tier": "gold",
                        "count": "2",
                        "listed": "from_list",
                        "fromJson": "yes",
                        "own": "mine",
                        "system.correlationId": lambda v: bool(v),
                    }
                }
            },
        },
        check=lambda run, logs: _labels_set(run),
    ),
    "execution_services": Expect(
        state="WARNING",
        runs={
            **dict.fromkeys(
                [
                    "say",
                    "warn",
                    "settle",
                    "all_logs",
                    "warnings",
                    "say_logs",
                    "read_logs",
                    "purge_warnings",
                    "warnings_left",
                    "say_left",
                    "key_a",
                    "key_b",
                    "key_other",
                    "keys",
                    "running_here",
                    "none_elsewhere",
                    "purge",
                    "pause_nightly",
                ],
                "SUCCESS",
            ),
            "toggle_missing": "WARNING",
        },
        outputs={
            # "Flow started", say, warn (Kestra's engine logs the first line too)
            "all_logs": {"size": 3},
            "warnings": {"size": 1},
            "say_logs": {"size": 1},
            "read_logs": {"value": "hello from say"},
            # the WARN line went; the INFO ones stayed
            "purge_warnings": {"count": 1},
            "warnings_left": {"size": 0},
            "say_left": {"size": 1},
            "keys": {"keys": ["report_a", "report_b"]},
            "running_here": {
                "total": 1,
                "results": [
                    {"namespace": "compat.services", "flowId": "execution_services", "count": 1}
                ],
            },
            "none_elsewhere": {"total": 0, "results": []},
            "purge": {"executionsCount": 0},
        },
        error_log="has no trigger 'no_such_trigger' (it has: nightly)",
    ),
    "misc_tasks": Expect(
        state="WARNING",
        inputs={"base": "{http}"},
        runs={
            **dict.fromkeys(
                ["dl", "read_dl", "templated", "child", "let_it_pause", "wake_child"], "SUCCESS"
            ),
            "dl_missing": "WARNING",
            "wake_myself": "WARNING",
        },
        outputs={
            "dl": {"code": 200, "length": lambda n: n > 10},
            "read_dl": {"value": "downloader"},
            "templated": {"value": "made from spec"},
        },
        error_log="only a paused execution can be resumed",
        check=lambda run, logs: _logged(logs, "answered HTTP 404"),
    ),
    "sla_max_duration": Expect(
        state="CANCELLED",
        runs={"long_nap": "KILLED"},
        check=lambda run, logs: _has_labels(run, {"sla": "missed"}),
    ),
    "sla_assertion": Expect(
        state="SUCCESS",
        runs={"total": "SUCCESS"},
        check=lambda run, logs: _has_labels(run, {}),
    ),
    "sla_assertion_violated": Expect(
        state="FAILED",
        flow="sla_assertion",
        inputs={"amount": "20"},
        runs={"total": "SUCCESS"},
        error_log=None,
        check=lambda run, logs: _has_labels(run, {}),
    ),
    "sla_assertion_labelled": Expect(
        state="SUCCESS",
        flow="sla_assertion",
        inputs={"amount": "1"},
        runs={"total": "SUCCESS"},
        check=lambda run, logs: _has_labels(run, {"review": "small"}),
    ),
    "for_each_item": Expect(
        state="SUCCESS",
        inputs={"data": "{upload}"},
        upload="a\nb\nc\nd\ne\nf\ng\n",
        runs=dict.fromkeys(["each", "each_split", "each_items", "each_merge", "merged"], "SUCCESS"),
        outputs={
            "each_split": {"batches": lambda uris: len(uris) == 3},
            "each_items": {
                "numberOfBatches": 3,
                "iterations": {"SUCCESS": 3},
                "subflowOutputs": [{"lines": "a,b,c"}, {"lines": "d,e,f"}, {"lines": "g"}],
            },
            "merged": {"value": '{"lines":"a,b,c"}\n{"lines":"d,e,f"}\n{"lines":"g"}\n'},
        },
    ),
    "for_each_item_failing": Expect(
        state="FAILED",
        flow="for_each_item",
        inputs={"data": "{upload}", "fail_on": "e"},
        upload="a\nb\nc\nd\ne\nf\ng\n",
        runs={"each": "FAILED", "each_split": "SUCCESS", "each_items": "FAILED"},
        outputs={"each_items": {"iterations": {"SUCCESS": 2, "FAILED": 1}}},
    ),
    "for_each_item_loose": Expect(
        state="WARNING",
        inputs={"data": "{upload}"},
        upload="a\nb\nc\n",
        runs={
            **dict.fromkeys(["fire", "fire_split", "fire_items", "fire_merge"], "SUCCESS"),
            # the failed batches fail _items; allowFailure turns the ForEachItem WARNING,
            # and no _merge runs after a failed _items (Kestra's task runs)
            "tolerant": "WARNING",
            "tolerant_split": "SUCCESS",
            "tolerant_items": "FAILED",
            "after": "SUCCESS",
        },
        outputs={
            # not waited for: each batch counts once its execution is created
            "fire_items": {"numberOfBatches": 2, "iterations": {"RUNNING": 0, "SUCCESS": 2}},
            "tolerant_items": {"iterations": {"CREATED": 0, "RUNNING": 0, "FAILED": 1}},
        },
        # nothing to merge without waiting (Kestra's merge has no outputs then)
        check=lambda run, logs: _assert_no_outputs(run, "fire_merge"),
    ),
    "subflow_outputs": Expect(
        state="WARNING",
        runs={"call": "SUCCESS", "use": "SUCCESS", "broken": "WARNING"},
        outputs={
            "call": {"state": "SUCCESS", "outputs": {"loud": "HELLO"}},
            "use": {"value": "HELLO"},
            "broken": {"state": "SUCCESS"},
        },
        check=lambda run, logs: _extraction_failed(logs),
    ),
    "exit_early": Expect(
        state="WARNING",
        runs={
            "side": "KILLED",
            "long_nap": "KILLED",
            "decide": "KILLED",
            "first": "SUCCESS",
            "stop": "SUCCESS",
        },
    ),
    "exit_killed": Expect(
        state="KILLED",
        flow="exit_early",
        inputs={"how": "KILLED"},
        runs={
            "side": "KILLED",
            "long_nap": "KILLED",
            "decide": "KILLED",
            "first": "SUCCESS",
            "stop": "SUCCESS",
        },
    ),
    "namespace_files": Expect(
        state="WARNING",
        runs={
            **dict.fromkeys(
                ["wd", "make", "upload_globbed", "upload_mapped", "fetch_sql", "read_one"],
                "SUCCESS",
            ),
            **dict.fromkeys(["drop_sql", "fetch_all", "with_files", "collect"], "SUCCESS"),
            "upload_again": "WARNING",
        },
        outputs={
            "upload_globbed": {
                "files": lambda f: set(f) == {"/project/sql/a.sql", "/project/sql/deep/b.sql"}
            },
            "read_one": {"value": "select 2"},
            # namespaceFiles brought only the included, not excluded, files
            "collect": {"uris": lambda u: set(u) == {"project/sql/deep/b.sql"}},
            "drop_sql": {"files": lambda f: len(f) == 2},
            "fetch_all": {"files": lambda f: set(f) == {"/readme.md"}},
        },
        error_log="namespace file 'readme.md' exists (conflict: ERROR)",
    ),
    "functions_more": Expect(
        state="WARNING",
        inputs={"base": "{http}"},
        runs={
            **dict.fromkeys(["upload", "by_uri", "warned", "ion", "fetched", "posted"], "SUCCESS"),
            "flaky": "WARNING",
            "missing": "WARNING",
        },
        outputs={
            "by_uri": {"value": "level=3"},
            "warned": {"value": '[{"taskId":"flaky","state":"WARNING"}]'},
            "ion": {"value": "Lyon"},
            "fetched": {"value": "kestra"},
            "posted": {"values": {"got": "7"}},
        },
        error_log="answered 404",
    ),
    "loop_until": Expect(
        state="SUCCESS",
        runs={
            "loop": "SUCCESS",
            "count[#0]": "SUCCESS",
            "count[#1]": "SUCCESS",
            "count[#2]": "SUCCESS",
        },
        outputs={"loop": {"iterationCount": 3}, "count[#2]": {"value": "3"}},
    ),
    "dynamic_property_mistyped": Expect(
        state="FAILED",
        runs={"before": "SUCCESS", "nap": "FAILED"},
        error_log="property `duration` rendered to 'kept' from '{{ outputs.before.value }}'",
    ),
}


def _run(
    path: Path, inputs: Mapping[str, str], tmp_path: Path, content: str = "hello world\n"
) -> tuple[FlowRun, list[LogEntry]]:
    upload = tmp_path / "data.txt"
    upload.write_text(content)
    given = {key: value.replace("{upload}", f"@{upload}") for key, value in inputs.items()}
    if any("{http}" in value for value in given.values()):
        with http_server() as base:
            return _run_with(path, {k: v.replace("{http}", base) for k, v in given.items()})
    return _run_with(path, given)


def _run_with(path: Path, given: dict[str, str]) -> tuple[FlowRun, list[LogEntry]]:
    execution, logs = asyncio.run(
        flow_test.run_flow_test(path, flows_dir=FLOWS / "subflows", inputs=given, timeout=60)
    )
    data = json.loads(json.dumps(to_kestra_dict(execution), default=str))
    ok = execution.state.current.value in ("SUCCESS", "WARNING")
    return FlowRun(exit_code=0 if ok else 1, execution=data, stderr=""), logs


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    name: str = request.param
    if name == "sqlite":
        monkeypatch.setattr(
            flow_test, "BACKEND_FACTORY", lambda: SqliteBackend(tmp_path / "db.sqlite")
        )
        yield name
    elif name == "postgres":
        yield from _on_postgres(monkeypatch)
    else:
        yield name


def _on_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    try:
        from backends.postgres import PostgresBackend
        from backends.postgres.testing import admin_connection, server_dsn
    except ImportError:
        missing("the postgres extra is not installed")

    async def admin(sql: str) -> None:
        connection = await admin_connection()
        try:
            await connection.execute(sql)  # type: ignore[attr-defined]
        finally:
            await connection.close()  # type: ignore[attr-defined]

    schema = f"runtime_compat_{secrets.token_hex(6)}"
    try:
        asyncio.run(admin(f"CREATE SCHEMA {schema}"))
    except OSError as exc:
        missing(f"no PostgreSQL server: {exc}")
    monkeypatch.setattr(
        flow_test, "BACKEND_FACTORY", lambda: PostgresBackend(server_dsn(), schema=schema)
    )
    try:
        yield "postgres"
    finally:
        asyncio.run(admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def assert_expected(run: FlowRun, logs: list[LogEntry], expect: Expect) -> None:
    errors = [entry.message for entry in logs if entry.level == "ERROR"]
    assert run.state == expect.state, f"task runs: {run.states()}; errors: {errors}"
    assert run.states() == dict(expect.runs)
    runs = run.runs()
    for key, outputs in expect.outputs.items():
        assert matches(runs[key]["outputs"], outputs), f"{key}: {runs[key]['outputs']}"
    for key, count in expect.attempts.items():
        assert len(runs[key].get("attempts") or []) == count, key
    if expect.error_log is not None:
        assert any(expect.error_log in message for message in errors), errors
    if expect.flow_outputs is not None:
        assert run.execution.get("outputs") == dict(expect.flow_outputs)
    if expect.check is not None:
        expect.check(run, logs)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(CASES))
def test_compat_flow(stem: str, backend: str, tmp_path: Path) -> None:
    expect = CASES[stem]
    run, logs = _run(FLOWS / f"{expect.flow or stem}.yml", expect.inputs, tmp_path, expect.upload)
    assert_expected(run, logs, expect)


def test_envs_and_globals_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KESTRA_REGION", "eu-west")
    config = Config(variables=VariablesConfig(globals={"team": "data", "limits": {"max": 3}}))
    execution, _ = asyncio.run(
        flow_test.run_flow_test(FLOWS / "envs_globals.yml", timeout=60, config=config)
    )
    assert execution.state.current.value == "SUCCESS"
    assert execution.task_run_list[0].outputs == {"value": "eu-west/data/3"}


def test_validate_accepts_every_compat_flow_shape() -> None:
    # our own copies of the shapes Kestra's core test flows use (ForEachItem, sla,
    # joins, dynamic properties, the new tasks and functions)
    result = CliRunner().invoke(cli, ["flow", "validate", str(FLOWS)])
    assert result.exit_code == 0, result.output
    assert f"{len(list(FLOWS.rglob('*.yml')))} flow file(s) checked" in result.output


def test_secrets_by_any_case_and_masked_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    monkeypatch.setenv("SECRET_DB_CREDENTIALS", encode('{"user": "ada"}'))
    monkeypatch.setenv("SECRET_DB_PASSWORD", encode("s3cr3t-value"))
    execution, logs = asyncio.run(flow_test.run_flow_test(FLOWS / "secrets.yml", timeout=60))
    assert execution.state.current.value == "SUCCESS"
    assert execution.task_run_list[0].outputs == {"value": "ada"}
    lines = [entry.message for entry in logs if entry.task_id in ("shout", "tell")]
    # Kestra's mask: a star per character, the first nine of a long value "**masked*";
    # a SECRET input's value is masked as a secret() one
    assert lines == ["password is **masked****", "the pin is ********"]


def test_every_compat_flow_has_expectations() -> None:
    named = {c.flow or s for s, c in CASES.items()} | {"envs_globals", "secrets"}
    assert {path.stem for path in FLOWS.glob("*.yml")} == named
