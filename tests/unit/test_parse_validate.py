"""Flow parsing and validation: every problem at once, each with line, column, path
and hint; never a traceback."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from runtime.flow.loader import FlowError, Problem, build_flow
from runtime.flow.model import (
    Dag,
    ExponentialRetry,
    ForEach,
    If,
    Parallel,
    Sequential,
    Switch,
)
from runtime.flow.parse import parse_flow, parse_flow_file, validate_text
from runtime.tasks.core import Log, Sleep

FLOWS = Path(__file__).parent.parent / "flows"


def problems(text: str) -> list[Problem]:
    return validate_text(textwrap.dedent(text).lstrip("\n"), "t.yml")


def only(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def at(problem: Problem) -> tuple[int | None, int | None]:
    return problem.line, problem.column


# -- a valid flow --------------------------------------------------------------
def test_valid_flow_builds_the_expected_tree() -> None:
    flow = parse_flow_file(FLOWS / "valid" / "pipeline.yml")
    assert (flow.id, flow.namespace) == ("nightly-sales", "shop.reporting")
    assert [task.id for task in flow.tasks] == [
        "announce",
        "prepare",
        "big_day",
        "by_region",
        "per_store",
        "load",
    ]
    announce, prepare, big_day, by_region, per_store, load = flow.tasks
    assert isinstance(announce, Log)
    assert announce.level == "DEBUG"  # from pluginDefaults
    assert isinstance(prepare, Sequential)
    fetch, split = prepare.tasks
    assert fetch.timeout == timedelta(minutes=5)
    assert isinstance(fetch.retry, ExponentialRetry)
    assert fetch.retry.max_interval == timedelta(minutes=1)
    assert isinstance(split, Parallel)
    assert split.concurrent == 2
    assert [t.id for t in split.tasks] == ["north_part", "south_part"]
    assert isinstance(big_day, If)
    assert [t.id for t in big_day.then] == ["shout"]
    assert isinstance(big_day.then[0], Log)
    assert big_day.then[0].level == "WARN"  # the task's own value wins over the default
    assert [t.id for t in big_day.else_] == ["whisper"]
    assert isinstance(by_region, Switch)
    assert list(by_region.cases) == ["north"]
    assert [t.id for t in by_region.defaults] == ["other_note"]
    assert isinstance(per_store, ForEach)
    assert per_store.concurrency_limit == 2
    assert isinstance(load, Dag)
    assert [(d.task.id, d.depends_on) for d in load.tasks] == [
        ("stage", ()),
        ("publish", ("stage",)),
    ]
    assert [t.id for t in flow.errors] == ["page_oncall"]
    assert [t.id for t in flow.finally_] == ["goodbye"]
    assert [i.id for i in flow.inputs] == ["day", "attempts", "region", "since"]
    assert flow.inputs[0].defaults == "2025-02-14"  # dates stay text, as in Kestra
    assert [(t.id, t.cron) for t in flow.triggers] == [
        ("every_night", "30 1 * * *"),
        ("every_minute_sharp", "0 * * * * *"),
    ]
    assert flow.concurrency is not None
    assert flow.concurrency.limit == 1
    assert len(list(flow.all_tasks())) == 19


def test_older_type_names_and_spellings_resolve() -> None:
    flow = parse_flow_file(FLOWS / "valid" / "nested" / "legacy.yaml")
    greet, pause = flow.tasks
    assert isinstance(greet, Log)
    assert greet.type == "io.kestra.core.tasks.log.Log"
    assert greet.level == "INFO"  # taskDefaults, by package prefix
    assert isinstance(pause, Sleep)
    assert flow.inputs[0].id == "who"  # `name:` is Kestra's old spelling of the id


def test_build_flow_from_plain_data_reports_paths_without_positions() -> None:
    data = {
        "id": "f",
        "namespace": "acme",
        "tasks": [{"id": "a", "type": "io.kestra.plugin.core.log.Log", "message": 3.5, "x": 1}],
    }
    with pytest.raises(FlowError) as caught:
        build_flow(data)
    [problem] = caught.value.problems
    assert problem.path == "tasks[0].x"
    assert problem.line is None
    data["tasks"][0].pop("x")
    assert build_flow(data).tasks[0].message == "3.5"  # type: ignore[attr-defined]


# -- properties ----------------------------------------------------------------
def test_unknown_field_points_at_the_key_with_the_closest_name() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: hi
            levl: INFO
        """
    )
    assert at(problem) == (7, 5)
    assert problem.path == "tasks[0].levl"
    assert "unknown field `levl`" in problem.message
    assert problem.hint == "did you mean `level`?"


def test_missing_field_points_at_the_mapping_that_lacks_it() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.flow.Sleep
        """
    )
    assert at(problem) == (4, 5)
    assert problem.path == "tasks[0]"
    assert "missing required field `duration`" in problem.message


def test_mistyped_property_says_what_was_expected_and_what_came() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: p
            type: io.kestra.plugin.core.flow.Parallel
            concurrent: two
            tasks:
              - id: a
                type: io.kestra.plugin.core.log.Log
                message: hi
        """
    )
    assert at(problem) == (6, 17)
    assert problem.path == "tasks[0].concurrent"
    assert problem.message == "`concurrent` must be an integer, got a string 'two'"


def test_every_bad_property_of_one_task_is_reported() -> None:
    found = problems(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: [1, {x: 2}]
            disabled: maybe
            allowFailure: 3
            colour: red
        """
    )
    assert [(p.line, p.path) for p in found] == [
        (6, "tasks[0].message[1]"),
        (7, "tasks[0].disabled"),
        (8, "tasks[0].allowFailure"),
        (9, "tasks[0].colour"),
    ]
    assert found[1].message == "`disabled` must be true or false, got a string 'maybe'"


def test_unknown_task_type_suggests_the_closest() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.flow.Paralel
        """
    )
    assert at(problem) == (5, 11)
    assert problem.message == "unknown task type 'io.kestra.plugin.core.flow.Paralel'"
    assert problem.hint == "did you mean `io.kestra.plugin.core.flow.Parallel`?"


def test_a_wrong_plugin_default_points_at_the_default() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        pluginDefaults:
          - type: io.kestra.plugin.core.flow.Sleep
            values:
              duration: soon
        tasks:
          - id: a
            type: io.kestra.plugin.core.flow.Sleep
          - id: b
            type: io.kestra.plugin.core.flow.Sleep
        """
    )
    assert at(problem) == (6, 17)
    assert problem.path == "pluginDefaults[0].values.duration"


# -- ids -----------------------------------------------------------------------
def test_duplicate_task_ids_anywhere_in_the_tree() -> None:
    found = problems(
        """
        id: f
        namespace: acme
        tasks:
          - id: outer
            type: io.kestra.plugin.core.flow.Sequential
            tasks:
              - id: same
                type: io.kestra.plugin.core.log.Log
                message: one
        errors:
          - id: same
            type: io.kestra.plugin.core.log.Log
            message: two
        finally:
          - id: outer
            type: io.kestra.plugin.core.log.Log
            message: three
        """
    )
    assert [(at(p), p.message) for p in found] == [
        ((11, 9), "duplicate task id `same`"),
        ((15, 9), "duplicate task id `outer`"),
    ]
    assert found[0].hint is not None
    assert found[0].hint.startswith("first used at tasks[0].tasks[0].id (line 7)")


@pytest.mark.parametrize(
    ("line", "value", "message"),
    [
        ("id: bad flow", "", "flow id 'bad flow' is not valid"),
        ("namespace: Acme.Team", "", "namespace 'Acme.Team' is not valid"),
        ("id: " + "x" * 101, "", "flow id is too long: 101 characters"),
    ],
)
def test_flow_id_and_namespace_follow_kestra_rules(line: str, value: str, message: str) -> None:
    key = line.split(":")[0]
    other = "namespace: acme" if key == "id" else "id: f"
    text = f"{line}\n{other}\ntasks:\n  - id: a\n    type: io.kestra.plugin.core.log.Log\n"
    text += "    message: hi\n"
    [problem] = validate_text(text, "t.yml")
    assert at(problem) == (1, len(key) + 3)
    assert problem.message == message
    assert problem.hint is not None


def test_task_id_pattern_offers_a_fixed_id() -> None:
    problem = only(
        """
        id: f.with.dots
        namespace: acme
        tasks:
          - id: say hello
            type: io.kestra.plugin.core.log.Log
            message: hi
        """
    )
    assert at(problem) == (4, 9)
    assert problem.message == "task id 'say hello' is not valid"
    assert problem.hint is not None
    assert problem.hint.endswith("e.g. `say_hello`")


# -- durations, cron, time zones -------------------------------------------------
def test_bad_duration_hint_comes_from_the_duration_parser() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: hi
            timeout: 5m
        """
    )
    assert at(problem) == (7, 14)
    assert problem.message == "`timeout` is not a valid duration: '5m'"
    assert problem.hint is not None
    assert "PT5M (5 minutes)" in problem.hint


SCHEDULE = """
id: f
namespace: acme
tasks:
  - id: a
    type: io.kestra.plugin.core.log.Log
    message: hi
triggers:
  - id: s
    type: {type}
    cron: "{cron}"
{extra}"""


@pytest.mark.parametrize(
    ("cron", "extra", "message", "hint"),
    [
        ("0 9 * *", "", "5 fields expected, got 4", "write 5 fields"),
        ("0 0 9 * * *", "", "5 fields expected, got 6", "add `withSeconds: true`"),
        ("0 9 * * *", "    withSeconds: true\n", "6 fields expected, got 5", "write 6 fields"),
        ("61 9 * * *", "", "invalid cron '61 9 * * *'", "minute hour"),
        ("@fortnightly", "", "unknown cron nickname '@fortnightly'", "@daily"),
    ],
)
def test_bad_cron_in_schedule_triggers(cron: str, extra: str, message: str, hint: str) -> None:
    text = SCHEDULE.format(type="io.kestra.plugin.core.trigger.Schedule", cron=cron, extra=extra)
    [problem] = validate_text(text.lstrip("\n"), "t.yml")
    assert at(problem) == (10, 11)
    assert problem.path == "triggers[0].cron"
    assert message in problem.message
    assert problem.hint is not None
    assert hint in problem.hint


@pytest.mark.parametrize(
    ("cron", "extra"),
    [("*/5 * * * *", ""), ("@daily", ""), ("0 */5 * * * *", "    withSeconds: true\n")],
)
def test_good_cron_in_the_older_schedule_type(cron: str, extra: str) -> None:
    old = "io.kestra.core.models.triggers.types.Schedule"
    assert validate_text(SCHEDULE.format(type=old, cron=cron, extra=extra), "t.yml") == []


def test_unknown_time_zone() -> None:
    extra = "    timezone: America/New_Yrok\n"
    text = SCHEDULE.format(
        type="io.kestra.plugin.core.trigger.Schedule", cron="@daily", extra=extra
    )
    [problem] = validate_text(text.lstrip("\n"), "t.yml")
    assert at(problem) == (11, 15)
    assert problem.message == "unknown time zone 'America/New_Yrok'"
    assert problem.hint == "did you mean `America/New_York`?"


# -- templates -----------------------------------------------------------------
def test_template_syntax_errors_point_into_the_string() -> None:
    found = problems(
        """
        id: f
        namespace: acme
        variables:
          greeting: "hello {{ inputs.name "
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: |
              first line
              then {{ a +* b }}
          - id: b
            type: io.kestra.plugin.core.log.Log
            message: "{{ 'ok' | nofilter }}"
        """
    )
    assert [(at(p), p.path, p.message) for p in found] == [
        (
            (4, 20),
            "variables.greeting",
            "template syntax error: this block is never closed; add `}}`",
        ),
        ((10, 18), "tasks[0].message", "template syntax error: expected a value, found `*`"),
        ((13, 25), "tasks[1].message", "template syntax error: unknown filter `nofilter`"),
    ]
    assert found[0].hint == "check the `{{ }}` and `{% %}` pairs and the expression inside"


def test_descriptions_are_not_templates() -> None:
    assert (
        problems(
            """
            id: f
            namespace: acme
            description: "Use {{ like this"
            tasks:
              - id: a
                type: io.kestra.plugin.core.log.Log
                message: hi
            """
        )
        == []
    )


# -- flowable tasks --------------------------------------------------------------
def test_switch_needs_cases_or_defaults() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: s
            type: io.kestra.plugin.core.flow.Switch
            value: x
        """
    )
    assert at(problem) == (4, 5)
    assert problem.message == "a Switch needs tasks under `cases` or `defaults`"


def test_a_subflow_cannot_start_its_own_flow() -> None:
    problem = only(
        """
        id: loop
        namespace: acme
        tasks:
          - id: again
            type: io.kestra.plugin.core.flow.Subflow
            namespace: acme
            flowId: loop
        """
    )
    assert at(problem) == (7, 13)
    assert problem.message == "the Subflow task `again` starts its own flow"


def test_only_runnable_tasks_inside_a_working_directory() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: wd
            type: io.kestra.plugin.core.flow.WorkingDirectory
            tasks:
              - id: par
                type: io.kestra.plugin.core.flow.Parallel
                tasks:
                  - id: a
                    type: io.kestra.plugin.core.log.Log
                    message: hi
        """
    )
    assert at(problem) == (8, 15)
    assert problem.path == "tasks[0].tasks[0].type"
    assert problem.message == (
        "only runnable tasks can go inside io.kestra.plugin.core.flow.WorkingDirectory, "
        "not io.kestra.plugin.core.flow.Parallel"
    )


def test_unknown_retry_type() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        retry:
          type: linear
          interval: PT1S
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: hi
        """
    )
    assert at(problem) == (4, 9)
    assert problem.message == "unknown retry type 'linear'"
    assert problem.hint == "one of constant, exponential, random"


# -- Dag -----------------------------------------------------------------------
DAG = """
id: f
namespace: acme
tasks:
  - id: graph
    type: io.kestra.plugin.core.flow.Dag
    tasks:
      - task: {id: a, type: io.kestra.plugin.core.log.Log, message: a}
        dependsOn: [c]
      - task: {id: b, type: io.kestra.plugin.core.log.Log, message: b}
        dependsOn: [a]
      - task: {id: c, type: io.kestra.plugin.core.log.Log, message: c}
        dependsOn: [b, d]
"""


def test_dag_cycles_are_named_and_unknown_dependencies_found() -> None:
    cycle, unknown = validate_text(DAG.lstrip("\n"), "t.yml")
    assert cycle.message == "dependency cycle: a -> c -> b -> a"
    assert at(cycle) == (8, 21)
    assert cycle.path == "tasks[0].tasks[0].dependsOn[0]"
    assert unknown.message == "`dependsOn` names `d`, not a task of this Dag"
    assert at(unknown) == (12, 24)


# -- inputs --------------------------------------------------------------------
INPUTS = """
id: f
namespace: acme
inputs:
{inputs}
tasks:
  - id: a
    type: io.kestra.plugin.core.log.Log
    message: hi
"""


def input_problems(inputs: str) -> list[Problem]:
    text = INPUTS.format(inputs=textwrap.indent(textwrap.dedent(inputs).strip("\n"), "  "))
    return validate_text(text.lstrip("\n"), "t.yml")


def test_duplicate_input_ids() -> None:
    [problem] = input_problems("- id: x\n- id: y\n- id: x\n  type: INT\n")
    assert at(problem) == (6, 9)
    assert problem.message == "duplicate input id `x`"


def test_unknown_input_type_lists_the_valid_ones() -> None:
    [problem] = input_problems("- id: x\n  type: integer\n")
    assert at(problem) == (5, 11)
    assert problem.message == "unknown input type 'integer'"
    assert problem.hint is not None
    assert problem.hint.startswith("did you mean `INT`? valid types: ")
    assert "STRING, INT, FLOAT, BOOLEAN, BOOL, DATETIME" in problem.hint


@pytest.mark.parametrize(
    ("kind", "default", "extra", "expected"),
    [
        ("INT", "abc", "", "an integer"),
        ("BOOLEAN", "maybe", "", "true or false"),
        ("DATETIME", "'2024-13-01 noon'", "", "ISO-8601 date-time"),
        ("DATE", "'31/01/2024'", "", "ISO-8601 date"),
        ("DURATION", "'1 hour'", "", "ISO-8601 duration"),
        ("FLOAT", "[1]", "", "a number"),
        ("SELECT", "purple", "  values: [red, blue]\n", "one of red, blue"),
        ("MULTISELECT", "[red, pink]", "  values: [red, blue]\n", "one of red, blue"),
        ("ARRAY", "[1, x]", "  itemType: INT\n", "a list of INT values"),
        ("JSON", "'{not json'", "", "a JSON document"),
        ("EMAIL", "nobody", "", "an email address"),
    ],
)
def test_input_defaults_of_the_wrong_type(
    kind: str, default: str, extra: str, expected: str
) -> None:
    [problem] = input_problems(f"- id: x\n  type: {kind}\n  defaults: {default}\n{extra}")
    assert at(problem) == (6, 15)
    assert problem.path == "inputs[0].defaults"
    assert problem.message.startswith(f"`defaults` is not a valid {kind} value")
    assert problem.hint is not None
    assert expected in problem.hint


def test_input_defaults_that_are_expressions_are_left_alone() -> None:
    assert input_problems("- id: x\n  type: INT\n  defaults: '{{ 1 + 1 }}'\n") == []


def test_input_ranges_and_required_settings() -> None:
    found = input_problems(
        """
        - id: n
          type: INT
          min: 10
          max: 2
        - id: pick
          type: SELECT
        - id: many
          type: ARRAY
        - id: low
          type: FLOAT
          min: 1.5
          defaults: 0.5
        """
    )
    assert [(at(p), p.message) for p in found] == [
        ((6, 10), "`min` (10) is greater than `max` (2)"),
        ((8, 5), "a SELECT input needs `values`"),
        ((10, 5), "an ARRAY input needs `itemType`"),
        ((15, 15), "`defaults` (0.5) is below `min` (1.5)"),
    ]


# -- limits --------------------------------------------------------------------
def test_limits_on_counts() -> None:
    found = problems(
        """
        id: f
        namespace: acme
        concurrency:
          limit: 0
        outputs:
          - id: out
            value: 1
          - id: out
            value: 2
        tasks:
          - id: each
            type: io.kestra.plugin.core.flow.ForEach
            values: [1, 2]
            concurrencyLimit: -1
            tasks:
              - id: p
                type: io.kestra.plugin.core.flow.Parallel
                concurrent: -2
                tasks:
                  - id: a
                    type: io.kestra.plugin.core.log.Log
                    message: hi
                    retry:
                      type: constant
                      interval: PT1S
                      maxAttempt: 0
        """
    )
    assert [(p.line, p.message) for p in found] == [
        (4, "`limit` must be 1 or more, got 0"),
        (8, "duplicate output id `out`"),
        (14, "`concurrencyLimit` must be 0 or more (0 means no limit), got -1"),
        (18, "`concurrent` must be 0 or more (0 means no limit), got -2"),
        (26, "`maxAttempt` must be 1 or more, got 0"),
    ]


# -- many problems, malformed YAML, odd documents ----------------------------------
def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    found = validate_text((FLOWS / "invalid" / "typos.yml").read_text(), "typos.yml")
    assert [(p.line, p.column) for p in found] == [(4, 5), (6, 5), (9, 15)]
    assert [p.path for p in found] == ["tasks[0]", "tasks[0].mesage", "tasks[1].duration"]


def test_many_kinds_of_problems_at_once() -> None:
    found = problems(
        """
        id: f
        namespace: acme
        inputs:
          - id: n
            type: NUMBER
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
          - id: a
            type: io.kestra.plugin.core.log.Lg
        triggers:
          - id: t
            type: io.kestra.plugin.core.trigger.Schedule
            cron: nope
        """
    )
    assert [(p.line, p.path) for p in found] == [
        (5, "inputs[0].type"),
        (7, "tasks[0]"),
        (9, "tasks[1].id"),
        (10, "tasks[1].type"),
        (14, "triggers[0].cron"),
    ]
    assert all(p.column for p in found)


def test_malformed_yaml_is_one_problem_at_the_parser_position() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: "unclosed
        """
    )
    assert problem.message.startswith("invalid YAML: ")
    assert problem.line == 7


def test_tabs_get_a_hint() -> None:
    [problem] = validate_text("id: f\n\tnamespace: acme\n", "t.yml")
    assert problem.line == 2
    assert problem.hint == "YAML does not allow tabs for indentation: use spaces"


def test_duplicate_keys_are_problems() -> None:
    problem = only(
        """
        id: f
        namespace: acme
        tasks:
          - id: a
            type: io.kestra.plugin.core.log.Log
            message: one
            message: two
        """
    )
    assert at(problem) == (7, 5)
    assert problem.message == "duplicate key `message`"
    assert problem.hint is not None
    assert problem.hint.startswith("first set on line 6")


@pytest.mark.parametrize(
    "text",
    [
        "- a list\n- of things\n",
        "just a sentence\n",
        "",
        "   \n# only a comment\n",
        "id: f\nnamespace: acme\ntasks: null\n",
        "id: f\nnamespace: acme\ntasks:\n  - just a string\n",
        "id: f\nnamespace: acme\ntasks: {a: 1}\n",
        "\x00\x01\x02\xff binary",
        "a: &x [*x]\n",
        "a: " + "[" * 400 + "]" * 400 + "\n",
        "[" * 5000,
        "---\nid: a\n---\nid: b\n",
        "id: !custom x\n",
        "? [a, b]\n: c\n",
        "id: f\nnamespace: acme\ntasks:\n  - id: a\n    type: 42\n",
        "id: f\nnamespace: acme\ntasks:\n  - {id: [x], type: io.kestra.plugin.core.log.Log}\n",
    ],
)
def test_odd_documents_give_problems_never_a_traceback(text: str) -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(text, "odd.yml")
    assert caught.value.problems
    for problem in caught.value.problems:
        assert isinstance(problem.line, int)
        assert isinstance(problem.column, int)
        assert problem.render("odd.yml").startswith(f"odd.yml:{problem.line}:{problem.column}: ")


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"id: f\nnamespace: caf\xe9\n")
    with pytest.raises(FlowError) as caught:
        parse_flow_file(path)
    [problem] = caught.value.problems
    assert at(problem) == (2, 15)
    assert "not UTF-8" in problem.message
    assert str(caught.value).startswith(f"{path}:2:15: ")


def _bomb(levels: int) -> str:
    lines = ["id: bomb", "namespace: hostile", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    lines += ["tasks:", "  - id: t", "    type: io.kestra.plugin.core.log.Log", "    message: hi"]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_walked() -> None:
    problems = validate_text(_bomb(12))  # 9**12 values once expanded
    assert [p.message for p in problems] == [
        "the document nests too deeply or expands too many aliases"
    ]
    assert (problems[0].line, problems[0].column) == (1, 1)


def test_the_expansion_count_follows_every_alias() -> None:
    import yaml

    from runtime.flow.parse import _expands_past

    # the root mapping, id and namespace: 3 nodes; a0: itself and 9 scalars = 10;
    # a1: itself and 9 times a0 = 91; tasks: the list, its mapping and 3 scalars = 5
    root = yaml.compose(_bomb(2))
    expanded = 3 + 10 + 91 + 5
    assert not _expands_past(root, expanded)
    assert _expands_past(root, expanded - 1)
    recursive = yaml.compose("a: &r [*r, x]\n")
    assert not _expands_past(recursive, 10)
