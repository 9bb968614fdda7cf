"""Kestra-compatible templating: variables, operators, filters, functions, errors, sandbox."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from runtime.flow import template
from runtime.flow.template import (
    TemplateError,
    TemplateSyntaxProblem,
    has_expression,
    render,
    render_async,
    render_value,
    render_value_async,
    syntax_errors,
)

CONTEXT: dict[str, Any] = {
    "flow": {"id": "hello", "namespace": "company.team", "revision": 3},
    "execution": {"id": "4wjLkfbUeEJyV3pUeTJBcL", "startDate": "2024-01-15T10:30:00.123456Z"},
    "inputs": {"name": "World", "count": 3, "enabled": True, "empty": "", "nothing": None},
    "outputs": {
        "first": {"value": "one"},
        "second-task": {"value": "two"},
        "each": {"a": {"value": "from a"}, "b": {"value": "from b"}},
    },
    "vars": {"region": "eu-west-1", "limits": {"cpu": 2, "memory": "1Gi"}},
    "taskrun": {"id": "tr1", "value": "b"},
    "parent": {"taskrun": {"value": "outer"}},
    "parents": [{"taskrun": {"value": "outer"}}, {"taskrun": {"value": "outermost"}}],
    "labels": {"team": "data"},
    "trigger": {"date": "2024-01-15T10:30:00Z"},
    "envs": {"foo": "bar"},
    "globals": {"cluster": "prod"},
}


def r(source: str, **extra: Any) -> str:
    return render(source, {**CONTEXT, **extra})


# ---- variables ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hello {{ inputs.name }}!", "Hello World!"),
        ("{{ outputs.first.value }}", "one"),
        ("{{ outputs['second-task'].value }}", "two"),
        ("{{ outputs.each[taskrun.value].value }}", "from b"),
        ("{{ vars.region }}/{{ vars.limits.memory }}", "eu-west-1/1Gi"),
        ("{{ execution.id }}", "4wjLkfbUeEJyV3pUeTJBcL"),
        ("{{ flow.namespace }}.{{ flow.id }}", "company.team.hello"),
        ("{{ taskrun.value }}", "b"),
        ("{{ parent.taskrun.value }}", "outer"),
        ("{{ parents[0].taskrun.value }}-{{ parents[1].taskrun.value }}", "outer-outermost"),
        ("{{ labels.team }}", "data"),
        ("{{ trigger.date | date('yyyy-MM-dd') }}", "2024-01-15"),
        ("{{ envs.foo }}", "bar"),
        ("{{ globals.cluster }}", "prod"),
    ],
    ids=[
        "inputs",
        "outputs",
        "outputs-hyphenated-id",
        "outputs-by-loop-value",
        "vars",
        "execution",
        "flow",
        "taskrun",
        "parent-taskrun",
        "parents-list",
        "labels",
        "trigger",
        "envs",
        "globals",
    ],
)
def test_context_variables(source: str, expected: str) -> None:
    assert r(source) == expected


def test_outputs_of_a_loop_are_read_by_each_iteration_value() -> None:
    source = "{% for v in ['a', 'b'] %}{{ outputs.each[v].value }};{% endfor %}"
    assert r(source) == "from a;from b;"


def test_numeric_loop_value_finds_string_keyed_output() -> None:
    assert render("{{ outputs.t[1].value }}", {"outputs": {"t": {"1": {"value": "x"}}}}) == "x"


def test_plain_text_and_trailing_newline_are_kept() -> None:
    assert r("line {{ inputs.count }}\n") == "line 3\n"


# ---- printing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ vars.limits }}", '{"cpu":2,"memory":"1Gi"}'),
        ("{{ [1, 'a', true, null] }}", '[1,"a",true,null]'),
        ("{{ inputs.enabled }}", "true"),
        ("{{ 1 == 2 }}", "false"),
        ("[{{ inputs.nothing }}]", "[]"),
        ("{{ 42 }}", "42"),
        ("{{ 1.0 }}", "1.0"),
        ("{{ 1.5 * 2 }}", "3.0"),
        ("{{ 10000000.0 }}", "1.0E7"),
        ("{{ 0.0001 }}", "1.0E-4"),
    ],
    ids=["map", "list", "bool", "comparison", "null", "int", "float", "float-op", "big", "tiny"],
)
def test_values_print_like_kestra(source: str, expected: str) -> None:
    assert r(source) == expected


def test_map_built_in_an_expression_prints_as_json() -> None:
    source = '{{ {"title": inputs.name, "count": inputs.count} }}'
    assert json.loads(r(source)) == {"title": "World", "count": 3}


# ---- null-coalescing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.name ?? 'x' }}", "World"),
        ("{{ inputs.missing ?? 'x' }}", "x"),
        ("{{ inputs.nothing ?? 'x' }}", "x"),
        ("{{ outputs.missing.value ?? 'x' }}", "x"),
        ("{{ nope.deeper[0].deepest ?? 'x' }}", "x"),
        ("{{ inputs.a ?? inputs.b ?? inputs.nothing ?? 'last' }}", "last"),
        ("{{ inputs.a ?? inputs.name ?? 'last' }}", "World"),
        ("{{ inputs.empty ?? 'x' }}|{{ false ?? 'x' }}|{{ 0 ?? 'x' }}", "|false|0"),
        ("{{ inputs.missing.x | upper ?? 'fallback' }}", "fallback"),
        ("{{ inputs.missing ?? inputs.name | upper }}", "WORLD"),
        ("{{ (inputs.a ?? 'x') ~ (inputs.b ?? 'y') }}", "xy"),
        ("{% if (inputs.missing ?? false) %}yes{% else %}no{% endif %}", "no"),
    ],
    ids=[
        "present",
        "missing",
        "null",
        "missing-intermediate",
        "missing-root-and-chain",
        "chain-all-absent",
        "chain-stops-at-first-present",
        "falsy-values-are-present",
        "missing-through-filter",
        "binds-tighter-than-filter",
        "two-in-one-expression",
        "in-if-tag",
    ],
)
def test_null_coalescing(source: str, expected: str) -> None:
    assert r(source) == expected


def test_null_coalescing_does_not_evaluate_the_fallback_when_not_needed() -> None:
    # secret() would fail without a worker: it must not run when the left side is present.
    assert r("{{ inputs.name ?? secret('NEVER') }}") == "World"


def test_undefined_coalescing_keeps_null_but_replaces_missing() -> None:
    assert r("[{{ inputs.nothing ??? 'x' }}]") == "[]"
    assert r("{{ inputs.missing ??? 'x' }}") == "x"


def test_null_coalescing_with_a_missing_fallback_still_fails() -> None:
    with pytest.raises(TemplateError, match="`also_missing` is not defined"):
        r("{{ missing ?? also_missing }}")


# ---- operators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.enabled ? 'on' : 'off' }}", "on"),
        ("{{ inputs.count > 5 ? 'big' : inputs.count > 1 ? 'some' : 'one' }}", "some"),
        ("{{ inputs.nothing == null ? 'none' : 'set' }}", "none"),
        ("{{ inputs.count == 3 and inputs.name equals 'World' }}", "true"),
        ("{{ inputs.count < 2 or not inputs.enabled }}", "false"),
        ("{{ not inputs.enabled == false }}", "true"),
        ("{{ inputs.name ~ '-' ~ inputs.count ~ '-' ~ inputs.enabled }}", "World-3-true"),
        ("{{ 'a' ~ inputs.nothing ~ 'b' }}", "ab"),
        ("{{ 'a' ~ 'b' | upper }}", "AB"),
        ("{{ 2 + 3 * 4 - 10 / 4 }}", "11.5"),
        ("{{ -7 % 3 }}|{{ 7 % 3 }}", "-1|1"),
        ("{{ ['a', 'b'] contains 'a' }}", "true"),
        ("{{ {'k': 1} contains 'k' }}", "true"),
        ("{{ 'hello world' contains 'o w' }}", "true"),
        ("{{ ['a', 'b', 'c'] contains ['a', 'c'] }}", "true"),
        ("{{ ['a'] contains 'z' }}", "false"),
        ("{{ 1..4 }}", "[1,2,3,4]"),
    ],
    ids=[
        "ternary",
        "nested-ternary",
        "ternary-null-test",
        "and-equals",
        "or-not",
        "not-binds-tightest",
        "concat",
        "concat-null",
        "concat-binds-tighter-than-filter",
        "arithmetic",
        "java-modulo",
        "contains-list",
        "contains-map-key",
        "contains-substring",
        "contains-all",
        "contains-false",
        "range-operator",
    ],
)
def test_operators(source: str, expected: str) -> None:
    assert r(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.name is defined }}|{{ inputs.missing is defined }}", "true|false"),
        ("{{ outputs.missing.value is not defined }}", "true"),
        ("{{ inputs.nothing is null }}|{{ inputs.name is null }}", "true|false"),
        ("{{ inputs.empty is empty }}|{{ [] is empty }}|{{ 'x' is not empty }}", "true|true|true"),
        ("{{ 2 is even }}|{{ 3 is odd }}|{{ 3 is even }}", "true|true|false"),
        ("{{ '{\"a\": 1}' is json }}|{{ 'nope' is json }}", "true|false"),
        ("{{ vars.limits is map }}|{{ [1] is iterable }}", "true|true"),
    ],
    ids=["defined", "not-defined-chain", "null", "empty", "even-odd", "json", "map-iterable"],
)
def test_tests(source: str, expected: str) -> None:
    assert r(source) == expected


# ---- tags ---------------------------------------------------------------------------


def test_for_loop_index_is_zero_based_like_pebble() -> None:
    source = (
        "{% for x in ['a', 'b', 'c'] %}"
        "{{ loop.index }}{{ x }}{{ loop.first ? '^' : '' }}{{ loop.last ? '$' : '' }}"
        "/{{ loop.revindex }}/{{ loop.length }} "
        "{% endfor %}"
    )
    assert r(source) == "0a^/2/3 1b/1/3 2c$/0/3 "


def test_for_over_a_map_yields_key_value_entries() -> None:
    assert r("{% for e in vars.limits %}{{ e.key }}={{ e.value }};{% endfor %}") == (
        "cpu=2;memory=1Gi;"
    )


def test_for_else_runs_for_empty_and_null() -> None:
    source = "{% for x in items %}{{ x }}{% else %}none{% endfor %}"
    assert render(source, {"items": []}) == "none"
    assert render(source, {"items": None}) == "none"


def test_if_elseif_else() -> None:
    source = "{% if n > 5 %}big{% elseif n > 1 %}some{% else %}one{% endif %}"
    assert [render(source, {"n": n}) for n in (9, 3, 1)] == ["big", "some", "one"]


def test_set_filter_raw_comment_and_whitespace_control() -> None:
    source = (
        "{% set who = inputs.name | lower %}{{ who }} "
        "{% filter upper %}shout {{ who }}{% endfilter %} "
        "{% raw %}{{ untouched }}{% endraw %}{# dropped #} "
        "[ {{- 'tight' -}} ]"
    )
    assert r(source) == "world SHOUT WORLD {{ untouched }} [tight]"


def test_string_literal_escapes() -> None:
    source = """{{ 'it\\'s' ~ '\\n' ~ "q\\"" ~ '\\d' }}"""
    assert r(source) == "it's\nq\"\\d"


def test_java_style_methods_on_plain_data() -> None:
    assert r("{{ inputs.name.length() }}|{{ inputs.name.substring(1, 3) }}") == "5|or"
    assert r("{{ vars.limits.keySet() }}|{{ vars.limits.get('cpu') }}") == '["cpu","memory"]|2'


# ---- filters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ "2024-01-15T10:30:00Z" | date("yyyy-MM-dd") }}', "2024-01-15"),
        (
            """{{ "2024-01-15T10:30:00Z" | date("yyyy-MM-dd'T'HH:mm:ss") }}""",
            "2024-01-15T10:30:00",
        ),
        (
            '{{ "2024-01-15T10:30:00Z" | date("HH:mm XXX", timeZone="Europe/Paris") }}',
            "11:30 +01:00",
        ),
        ('{{ "2024-01-15T10:30:00+02:00" | date("HH:mm") }}', "08:30"),
        ('{{ "2024-01-15T10:30:00Z" | date("EEE, d MMM yyyy h a") }}', "Mon, 15 Jan 2024 10 AM"),
        ('{{ "2024-01-15T10:30:00.123456Z" | date("ss.SSS") }}', "00.123"),
        ("{{ 1705314600 | date('yyyy-MM-dd HH:mm') }}", "2024-01-15 10:30"),
        ('{{ "2024-01-15" | date("dd/MM/yyyy") }}', "15/01/2024"),
        (
            '{{ "July 24, 2001" | date("yyyy-MM-dd", existingFormat="MMMM dd, yyyy") }}',
            "2001-07-24",
        ),
        ('{{ "2024-01-15T10:30:00Z" | date }}', "2024-01-15T10:30:00.000000Z"),
        ('{{ "2024-01-15T10:30:00Z" | date("iso_sec") }}', "2024-01-15T10:30:00Z"),
        ('{{ "2024-01-15T10:30:00Z" | date("sql_seq") }}', "2024-01-15 10:30:00"),
        ('{{ "2024-01-15T10:30:00Z" | dateAdd(1, "DAYS") }}', "2024-01-16T10:30:00.000000Z"),
        ('{{ "2024-01-31T10:30:00Z" | dateAdd(1, "MONTHS", "yyyy-MM-dd") }}', "2024-02-29"),
        ('{{ "2024-01-15T10:30:00Z" | dateAdd(-3, "HOURS", format="HH:mm") }}', "07:30"),
        ('{{ "2024-01-15T10:30:00Z" | timestamp }}', "1705314600"),
        ('{{ "2024-01-15T10:30:00.5Z" | timestampMilli }}', "1705314600500"),
        ('{{ "2024-01-15T10:30:00Z" | timestampMicro }}', "1705314600000000"),
        ('{{ "2024-01-15T10:30:00Z" | timestampNano }}', "1705314600000000000"),
    ],
    ids=[
        "date",
        "date-quoted-literal",
        "date-timezone",
        "date-offset-converted-to-utc",
        "date-names",
        "date-fraction",
        "date-epoch-seconds",
        "date-only-string",
        "date-existing-format",
        "date-default-iso",
        "date-preset-iso-sec",
        "date-preset-sql-seq",
        "dateAdd-days",
        "dateAdd-months-clamps",
        "dateAdd-hours-format",
        "timestamp",
        "timestampMilli",
        "timestampMicro",
        "timestampNano",
    ],
)
def test_date_filters(source: str, expected: str) -> None:
    assert r(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ [1, 2, 3] | toJson }}", "[1,2,3]"),
        ("{{ 'foo' | json }}", '"foo"'),
        ("{{ null | toJson }}", "null"),
        ("{{ [1, 2, 3] | jq('.') }}", "[[1,2,3]]"),
        ("{{ [1, 2, 3] | jq('.[0]') | first }}", "1"),
        ("{{ outputs | jq('.first.value') | first }}", "one"),
        ("{{ '{\"a\": [5, 6]}' | jq('.a[]') }}", "[5,6]"),
        ("{{ {'x': 1, 'y': 2} | values | jq('reduce .[] as $n (0; .+$n)') | first }}", "3"),
        ("{{ 'foo: [1, 2]' | yaml }}", '{"foo":[1,2]}'),
        ("{{ 'quiet sentence' | upper }}", "QUIET SENTENCE"),
        ("{{ 'LOUD TEXT' | lower }}", "loud text"),
        ("{{ 'article tItle' | capitalize }}", "Article tItle"),
        ("{{ 'article title' | title }}", "Article Title"),
        ("{{ '   padded text   ' | trim }}", "padded text"),
        ("{{ inputs.missing | default('fallback') }}", "fallback"),
        ("{{ inputs.nothing | default('fallback') }}", "fallback"),
        ("{{ inputs.empty | default('fallback') }}", "fallback"),
        ("{{ inputs.name | default('fallback') }}", "World"),
        ("{{ 'Hello World!' | slugify }}", "hello-world"),
        ("{{ 'Crème Brûlée_au  chocolat' | slugify }}", "creme-brulee-au-chocolat"),
        ("{{ {'foo': 'bar', 'baz': 'qux'} | keys }}", '["foo","baz"]'),
        ("{{ {'foo': 'bar', 'baz': 'qux'} | values }}", '["bar","qux"]'),
        ("{{ 'Mitch' | length }}|{{ [1, 2] | length }}|{{ vars.limits | length }}", "5|2|2"),
        ("{{ '12' | number + 1 }}", "13"),
        ("{{ '12.5' | number }}", "12.5"),
        ("{{ '12' | number('DOUBLE') }}", "12.0"),
        ("{{ 3.141592653 | numberFormat('#.##') }}", "3.14"),
        ("{{ 1234567.891 | numberFormat('#,##0.00') }}", "1,234,567.89"),
        ("{{ 'I like %this%.' | replace({'%this%': inputs.name}) }}", "I like World."),
        ("{{ 'a1b22' | replace({'(\\\\d+)': '<$1>'}, regexp=true) }}", "a<1>b<22>"),
        ("{{ 'a,b,,c,,' | split(',') }}", '["a","b","","c"]'),
        ("{{ 'a.b.c' | split('\\\\.', 2) }}", '["a","b.c"]'),
        ("{{ ['apple', 'banana'] | join(', ') }}", "apple, banana"),
        ("{{ ['apple', 'banana'] | first }}|{{ 'Mitch' | first }}", "apple|M"),
        ("{{ ['apple', 'banana'] | last }}|{{ 'Mitch' | last }}", "banana|h"),
        ("{{ -7 | abs }}", "7"),
        ("{{ 'hello world' | startsWith('hello') }}|{{ 'x.csv' | endsWith('.csv') }}", "true|true"),
        ("{{ 'test' | base64encode }}|{{ 'dGVzdA==' | base64decode }}", "dGVzdA==|test"),
        (
            "{{ 'test' | sha256 }}",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        ("{{ 'test' | md5 }}", "098f6bcd4621d373cade4e832627b4f6"),
        ("{{ 'this is a long sentence.' | abbreviate(7) }}", "this..."),
        ("{{ 'a.b.c' | substringBefore('.') }}|{{ 'a.b.c' | substringAfter('.') }}", "a|b.c"),
        (
            "{{ 'a.b.c' | substringBeforeLast('.') }}|{{ 'a.b.c' | substringAfterLast('.') }}",
            "a.b|c",
        ),
        (
            "{{ \"Can't\" | escapeChar('single') }}|{{ \"it's\" | escapeChar('shell') }}",
            "Can\\'t|it'\\''s",
        ),
        (
            "{{ [3, 1, 2] | sort }}|{{ [3, 1, 2] | rsort }}|{{ [1, 2] | reverse }}",
            "[1,2,3]|[3,2,1]|[2,1]",
        ),
        ("{{ ['a', 'b', 'c'] | slice(1, 2) }}|{{ 'Mitch' | slice(1, 3) }}", '["b"]|it'),
        ("{{ [1, 2] | merge([3]) }}|{{ {'a': 1} | merge({'b': 2}) }}", '[1,2,3]|{"a":1,"b":2}'),
        ("{{ [1, 2, 3, 4, 5] | chunk(2) }}", "[[1,2],[3,4],[5]]"),
        ("{{ ['1', '1', '2'] | distinct }}", '["1","2"]'),
        ("{{ 'The string ü@foo-bar' | urlencode }}", "The+string+%C3%BC%40foo-bar"),
        ("{{ 'The+string+%C3%BC%40foo-bar' | urldecode }}", "The string ü@foo-bar"),
        ("{{ 'a\\nb' | indent(2) }}|{{ 'a' | nindent(2) }}", "a\n  b|\n  a"),
        ("{{ 123 | string ~ '!' }}", "123!"),
    ],
    ids=[
        "toJson",
        "json",
        "toJson-null",
        "jq-returns-list",
        "jq-first",
        "jq-on-context",
        "jq-parses-string-input",
        "jq-reduce-docs-example",
        "yaml",
        "upper",
        "lower",
        "capitalize-keeps-rest",
        "title",
        "trim",
        "default-missing",
        "default-null",
        "default-blank",
        "default-present",
        "slugify",
        "slugify-accents-underscores",
        "keys",
        "values",
        "length",
        "number-int",
        "number-float",
        "number-typed",
        "numberFormat",
        "numberFormat-grouping",
        "replace",
        "replace-regexp",
        "split-drops-trailing-empties",
        "split-regex-limit",
        "join",
        "first",
        "last",
        "abs",
        "startsWith-endsWith",
        "base64",
        "sha256",
        "md5",
        "abbreviate",
        "substringBefore-After",
        "substringBeforeLast-AfterLast",
        "escapeChar",
        "sort-rsort-reverse",
        "slice",
        "merge",
        "chunk",
        "distinct",
        "urlencode",
        "urldecode",
        "indent-nindent",
        "string",
    ],
)
def test_filters(source: str, expected: str) -> None:
    assert r(source) == expected


def test_filters_return_null_for_null_input() -> None:
    assert r("[{{ inputs.nothing | upper }}]") == "[]"


def test_unsupported_date_pattern_letter_is_a_render_error() -> None:
    with pytest.raises(TemplateError, match="pattern letter `W` is not supported"):
        r("{{ trigger.date | date('W') }}")


# ---- functions ----------------------------------------------------------------------


def test_now_prints_iso_with_offset() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", r("{{ now() }}"))
    paris = r("{{ now(timeZone='Europe/Paris') }}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0[12]:00", paris)
    assert re.fullmatch(r"\d{4}", r("{{ now() | date('yyyy') }}"))


def test_from_json_function_and_legacy_json_function() -> None:
    assert r("{{ fromJson('{\"foo\": [666, 1, 2]}').foo[0] }}") == "666"
    assert r("{{ json('[1, 2, 3]')[0] }}") == "1"


def test_render_function_renders_nested_expressions_recursively() -> None:
    variables = {
        "vars": {"outer": "{{ vars.inner }}!", "inner": "{{ inputs.name }}"},
        "inputs": {"name": "World"},
    }
    assert render("{{ render(vars.outer) }}", variables) == "World!"
    assert render("{{ renderOnce(vars.outer) }}", variables) == "{{ inputs.name }}!"
    assert render("{{ render(vars.outer, recursive=false) }}", variables) == "{{ inputs.name }}!"


def test_range_max_min_uuid_random_int_print_context() -> None:
    assert r("{% for i in range(0, 6, 2) %}{{ i }},{% endfor %}") == "0,2,4,6,"
    assert r("{{ max(20, 80, inputs.count) }}|{{ min(20, 80, inputs.count) }}") == "80|3"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", r("{{ uuid() }}")
    )
    assert r("{{ randomInt(1, 2) }}") == "1"
    assert json.loads(render("{{ printContext() }}", {"a": {"b": 1}})) == {"a": {"b": 1}}


# ---- strict variables and errors ----------------------------------------------------


def test_missing_variable_fails_naming_it() -> None:
    with pytest.raises(TemplateError, match=r"`nope` is not defined") as caught:
        r("Hi {{ nope }}")
    assert caught.value.template == "Hi {{ nope }}"
    assert "default" in str(caught.value)


def test_missing_key_lists_the_available_keys() -> None:
    with pytest.raises(TemplateError, match=r"`missing` is not a key here \(available keys: first"):
        r("{{ outputs.missing.value }}")


def test_missing_index_and_use_in_operations_fail() -> None:
    with pytest.raises(TemplateError, match="index `5` is out of range"):
        r("{{ parents[5] }}")
    with pytest.raises(TemplateError, match="`nope` is not defined"):
        r("{{ nope + 1 }}")
    with pytest.raises(TemplateError, match="`nope` is not defined"):
        r("{% if nope %}x{% endif %}")


def test_runtime_error_reports_the_template_line() -> None:
    with pytest.raises(TemplateError, match="at line 3") as caught:
        r("a\nb\n{{ inputs.name.missing }}")
    assert caught.value.line == 3


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ inputs.count + 'a' }}", "needs numbers"),
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ 1 < 'a' }}", "TypeError"),
        ("{{ 'x' | jq('.[') }}", "invalid jq expression"),
        ("{{ 'not json' | jq('.') }}", "jq expression `.` failed"),
        ("{{ fromJson('{') }}", "fromJson got invalid JSON"),
        ("{{ 'abc' | number }}", "is not a number"),
        ("{{ 'x' | date('yyyy') }}", "not an ISO-8601 date"),
        ("{{ 'x' | dateAdd(1, 'FORTNIGHTS') }}", "not an ISO-8601 date"),
        ("{{ trigger.date | dateAdd(1, 'FORTNIGHTS') }}", "unknown dateAdd unit"),
        ("{{ trigger.date | date('yyyy', timeZone='Mars/Base') }}", "unknown time zone"),
        ("{{ inputs.name | upper(1, 2) }}", "wrong arguments for the `upper` filter"),
        ("{{ 'abc' | base64decode }}", "invalid base64"),
        ("{% for c in inputs.name %}{% endfor %}", "cannot loop over a string"),
    ],
)
def test_failures_are_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        r(source)


# ---- worker services ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ secret('TOKEN') }}", "secret"),
        ("{{ kv('key') }}", "kv"),
        ("{{ read('f.txt') }}", "read"),
    ],
)
def test_service_functions_need_a_worker_context_in_sync_render(source: str, name: str) -> None:
    with pytest.raises(TemplateError, match=rf"{name}\(\) needs a worker context"):
        r(source)


class FakeServices:
    """Stands in for the worker's secret/KV/storage backends, which do not exist yet."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def secret(self, key: str) -> str:
        self.calls.append(("secret", key))
        if key == "BROKEN":
            raise KeyError(key)
        return f"s3cr3t-{key}"

    async def kv(self, key: str, namespace: str | None, error_on_missing: bool) -> Any:
        self.calls.append(("kv", key, namespace, error_on_missing))
        return {"stored": key}

    async def read(self, path: str) -> str:
        self.calls.append(("read", path))
        return f"content of {path}"


@pytest.mark.asyncio
async def test_async_render_awaits_services_once_per_key() -> None:
    services = FakeServices()
    source = "{{ secret('TOKEN') }}/{{ secret('TOKEN') | upper }}/{{ read(outputs.first.value) }}"
    assert await render_async(source, CONTEXT, services) == (
        "s3cr3t-TOKEN/S3CR3T-TOKEN/content of one"
    )
    assert services.calls == [("secret", "TOKEN"), ("read", "one")]


@pytest.mark.asyncio
async def test_async_kv_passes_namespace_and_error_on_missing() -> None:
    services = FakeServices()
    source = "{{ kv('a').stored }} {{ kv('b', namespace='other', errorOnMissing=false).stored }}"
    assert await render_async(source, {}, services) == "a b"
    assert services.calls == [("kv", "a", None, True), ("kv", "b", "other", False)]


@pytest.mark.asyncio
async def test_async_render_function_reaches_services_in_nested_templates() -> None:
    variables = {"vars": {"token": "{{ secret('GITHUB') }}"}}
    assert await render_async("{{ render(vars.token) }}", variables, FakeServices()) == (
        "s3cr3t-GITHUB"
    )


@pytest.mark.asyncio
async def test_async_service_failure_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match=r"secret\('BROKEN'\) failed"):
        await render_async("{{ secret('BROKEN') }}", {}, FakeServices())


@pytest.mark.asyncio
async def test_async_render_without_services_explains_what_is_missing() -> None:
    with pytest.raises(TemplateError, match=r"kv\(\) needs a worker context"):
        await render_async("{{ kv('x') }}", {})


@pytest.mark.asyncio
async def test_async_render_matches_sync_render_for_plain_expressions() -> None:
    source = "{% for x in [1, 2] %}{{ loop.index }}{{ loop.last }}{% endfor %}{{ inputs.a ?? 'z' }}"
    assert await render_async(source, CONTEXT) == r(source) == "0false1truez"


# ---- render_value -------------------------------------------------------------------


def test_render_value_renders_nested_strings_and_keys_only() -> None:
    value = {
        "{{ inputs.name }}": ["{{ inputs.count }}", 7, None, {"deep": "{{ flow.id }}"}],
        "plain": ("{{ taskrun.value }}", True),
        3: 1.5,
    }
    assert render_value(value, CONTEXT) == {
        "World": ["3", 7, None, {"deep": "hello"}],
        "plain": ("b", True),
        3: 1.5,
    }


@pytest.mark.asyncio
async def test_render_value_async_uses_services() -> None:
    value = {"headers": {"Authorization": "Bearer {{ secret('API') }}"}, "n": 1}
    assert await render_value_async(value, {}, FakeServices()) == {
        "headers": {"Authorization": "Bearer s3cr3t-API"},
        "n": 1,
    }


# ---- syntax errors ------------------------------------------------------------------


def test_syntax_errors_lists_every_problem_with_its_position() -> None:
    source = "ok {{ inputs.name }}\nbad {{ inputs. }}\n  {{ x | nope }} {{ unknownFn() }}"
    assert syntax_errors(source) == [
        TemplateSyntaxProblem(
            "expected an attribute name after `.`, found the end of the block", 2, 16
        ),
        TemplateSyntaxProblem("unknown filter `nope`", 3, 10),
        TemplateSyntaxProblem("unknown function `unknownFn()`", 3, 21),
    ]


def test_syntax_errors_reports_unbalanced_blocks_by_line() -> None:
    problems = syntax_errors("{% for x in [1] %}\n{{ x }}")
    assert len(problems) == 1
    assert problems[0].line == 2
    assert "endfor" in problems[0].message


@pytest.mark.parametrize(
    "source",
    [
        "{{ }}",
        "{{ a b }}",
        "{{ 'open }}",
        "{{ a",
        "{% macro m() %}{% endmacro %}",
        "{{ (a }}",
        "{{ a }}{# x",
    ],
)
def test_syntax_errors_catch_malformed_templates(source: str) -> None:
    assert syntax_errors(source)


def test_syntax_errors_is_empty_for_valid_templates() -> None:
    assert syntax_errors("{% if a ?? b %}{{ c | date('yyyy') }}{% endif %}") == []
    assert syntax_errors("no expression at all") == []


def test_render_of_invalid_template_is_a_template_error_with_position() -> None:
    with pytest.raises(TemplateError, match="unknown filter `nope`") as caught:
        render("a\n {{ x | nope }}", {})
    assert (caught.value.line, caught.value.column) == (2, 9)
    assert caught.value.problems == (TemplateSyntaxProblem("unknown filter `nope`", 2, 9),)


# ---- sandbox ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ request.application.__globals__ }}",
        "{{ config.items() }}",
        "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
        "{{ inputs.name.__class__ }}",
        "{{ inputs.name['__class__'] }}",
        "{{ inputs.count.func_globals }}",
        "{{ inputs.name.mro }}",
        "{{ inputs.items() }}",
        "{{ inputs.name.format(inputs) }}",
        "{{ range.__call__ }}",
        "{{ loop.__class__ }}",
        "{{ __pb_state }}",
        "{{ joiner() }}",
        "{{ namespace() }}",
        "{{ dict(a=1) }}",
    ],
)
def test_sandbox_refuses_python_internals(source: str) -> None:
    with pytest.raises(TemplateError):
        r(source)


def test_dunder_attribute_on_data_is_refused_by_the_sandbox() -> None:
    with pytest.raises(TemplateError, match="Refused by the template sandbox"):
        r("{{ inputs.count.__class__ }}")


def test_dunder_keys_of_plain_maps_are_still_data() -> None:
    assert render("{{ body.__typename }}", {"body": {"__typename": "User"}}) == "User"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ range(10**9) | list }}", "expected a value, found `*`"),
        ("{{ range(0, 1000000000) }}", "range() cannot produce more than"),
        ("{{ 0..100000000 }}", "range() cannot produce more than"),
        ("{{ 'a' * 1000000000 }}", "`*` needs numbers"),
        ("{{ 'ab' % 10 }}", "`%` needs numbers"),
        ("{{ 'a\\nb' | indent(100000000) }}", "the limit is"),
    ],
)
def test_resource_bombs_are_refused(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        r(source)


def test_loop_iterations_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template, "_MAX_ITERATIONS", 100)
    with pytest.raises(TemplateError, match="loops ran more than 100 iterations"):
        r("{% for i in range(1, 20) %}{% for j in range(1, 20) %}{% endfor %}{% endfor %}")


def test_output_size_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template, "MAX_TEXT", 50)
    with pytest.raises(TemplateError, match="rendered text exceeds 50 characters"):
        r("{% for i in range(1, 20) %}abcdef{% endfor %}")


def test_recursive_render_is_capped() -> None:
    with pytest.raises(TemplateError, match="render\\(\\) is nested more than"):
        render("{{ render(vars.me) }}", {"vars": {"me": "x{{ render(vars.me) }}"}})


# ---- fast path and cache ------------------------------------------------------------


def test_plain_strings_skip_jinja_entirely() -> None:
    before = template._compile.cache_info()
    text = "no expressions here, not even { this } or {# that #}"
    assert render(text, {}) is text
    assert render_value({"k": text}, {}) == {"k": text}
    after = template._compile.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)
    assert not has_expression(text)
    assert has_expression("{{ x }}")
    assert has_expression("{% if x %}{% endif %}")


def test_each_distinct_template_is_compiled_once() -> None:
    source = "{{ inputs.name }} is cached {{ 'once' }}"
    r(source)
    before = template._compile.cache_info()
    r(source)
    after = template._compile.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)


def test_ten_thousand_renders_of_a_cached_expression_complete() -> None:
    variables = {"outputs": {"t": {"a": {"value": 1}}}, "taskrun": {"value": "a"}}
    results = {
        render("{{ outputs.t[taskrun.value].value ?? 'x' }}", variables) for _ in range(10_000)
    }
    assert results == {"1"}
