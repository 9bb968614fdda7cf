"""Execution inputs: typed conversion, defaults, validation, every problem named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.flow.inputs import InputError, resolve_inputs
from runtime.flow.loader import build_flow


def flow_with(*inputs: dict[str, Any]):  # type: ignore[no-untyped-def]
    return build_flow(
        {
            "id": "f",
            "namespace": "company.team",
            "inputs": list(inputs),
            "tasks": [{"id": "a", "type": "io.kestra.plugin.core.log.Log", "message": "x"}],
        }
    )


@pytest.mark.parametrize(
    ("spec", "given", "expected"),
    [
        ({"type": "STRING"}, "abc", "abc"),
        ({"type": "INT"}, "42", 42),
        ({"type": "FLOAT"}, "2.5", 2.5),
        ({"type": "BOOLEAN"}, "true", True),
        ({"type": "BOOL"}, False, False),
        ({"type": "DATETIME"}, "2024-01-31T12:00:00+01:00", "2024-01-31T11:00:00Z"),
        ({"type": "DATE"}, "2024-01-31", "2024-01-31"),
        ({"type": "TIME"}, "13:45:00", "13:45:00"),
        ({"type": "DURATION"}, "PT90M", "PT1H30M"),
        ({"type": "JSON"}, '{"a": [1, 2]}', {"a": [1, 2]}),
        ({"type": "YAML"}, "a: 1\nb: [x]", {"a": 1, "b": ["x"]}),
        ({"type": "URI"}, "https://example.com/x.csv", "https://example.com/x.csv"),
        ({"type": "EMAIL"}, "ops@example.com", "ops@example.com"),
        ({"type": "SELECT", "values": ["dev", "prod"]}, "prod", "prod"),
        ({"type": "MULTISELECT", "values": ["a", "b", "c"]}, '["a", "c"]', ["a", "c"]),
        ({"type": "ARRAY", "itemType": "INT"}, ["1", 2], [1, 2]),
        ({"type": "SECRET"}, "s3cr3t", "s3cr3t"),
    ],
)
def test_each_type_converts(spec: dict[str, Any], given: Any, expected: Any) -> None:
    flow = flow_with({"id": "x", **spec})
    assert resolve_inputs(flow, {"x": given}) == {"x": expected}


@pytest.mark.parametrize(
    ("spec", "given", "message"),
    [
        ({"type": "INT", "min": 1, "max": 10}, "11", "above the maximum 10"),
        ({"type": "INT"}, "ten", "expected an integer"),
        ({"type": "FLOAT", "min": 0}, -1, "below the minimum 0"),
        ({"type": "BOOLEAN"}, "maybe", "expected true or false"),
        ({"type": "DATETIME"}, "yesterday", "ISO-8601 date-time"),
        ({"type": "DATE", "after": "2024-01-01"}, "2023-12-31", "must be after 2024-01-01"),
        ({"type": "DURATION"}, "5 minutes", "not an ISO-8601 duration"),
        ({"type": "JSON"}, "{oops", "not valid JSON"),
        ({"type": "SELECT", "values": ["dev", "prod"]}, "qa", "'qa' is not one of"),
        ({"type": "STRING", "validator": "^[a-z]+$"}, "ABC", "does not match the pattern"),
        ({"type": "EMAIL"}, "nobody", "not an email address"),
        ({"type": "ARRAY", "itemType": "INT"}, [1, "x"], "item 1: expected an integer"),
    ],
)
def test_invalid_values_name_the_input(spec: dict[str, Any], given: Any, message: str) -> None:
    flow = flow_with({"id": "x", **spec})
    with pytest.raises(InputError, match=message) as info:
        resolve_inputs(flow, {"x": given})
    assert list(info.value.problems) == ["x"]


def test_defaults_required_and_every_problem_at_once() -> None:
    flow = flow_with(
        {"id": "a", "type": "INT", "defaults": 5},
        {"id": "b", "type": "STRING"},
        {"id": "c", "type": "STRING", "required": False},
        {"id": "d", "type": "INT"},
    )
    with pytest.raises(InputError) as info:
        resolve_inputs(flow, {"d": "nope"})
    assert info.value.problems == {"b": "is required", "d": "expected an integer, got 'nope'"}
    assert resolve_inputs(flow, {"b": "x", "d": 1, "extra": 9}) == {
        "a": 5,
        "b": "x",
        "c": None,
        "d": 1,
    }


def test_template_defaults_are_rendered_with_earlier_inputs_and_a_fixed_time() -> None:
    flow = flow_with(
        {"id": "name", "type": "STRING"},
        {"id": "greeting", "type": "STRING", "defaults": "hello {{ inputs.name }}"},
        {"id": "day", "type": "DATE", "defaults": "{{ now(format='yyyy-MM-dd') }}"},
    )
    resolved = resolve_inputs(flow, {"name": "ada"}, now=datetime(2024, 5, 6, tzinfo=UTC))
    assert resolved == {"name": "ada", "greeting": "hello ada", "day": "2024-05-06"}
