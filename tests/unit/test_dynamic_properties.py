"""Dynamic properties at load time: what is accepted, what stays literal."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.flow import dynamic
from runtime.flow.loader import build_flow
from runtime.flow.model import Pause
from runtime.flow.problems import FlowError


def _flow(task: dict[str, object]) -> dict[str, object]:
    return {"id": "f", "namespace": "n", "tasks": [task]}


def test_an_expression_in_a_typed_property_is_kept_for_run_time() -> None:
    flow = build_flow(
        _flow({"id": "p", "type": "io.kestra.plugin.core.flow.Pause", "delay": "{{ inputs.d }}"})
    )
    (pause,) = flow.tasks
    assert isinstance(pause, Pause)
    assert pause.dynamic == {"delay": "{{ inputs.d }}"}
    resolved = dynamic.resolve(pause, lambda raw: "PT3S")
    assert resolved.wait == timedelta(seconds=3)


def test_numbers_and_booleans_are_read_from_the_rendered_text() -> None:
    flow = build_flow(
        _flow(
            {
                "id": "each",
                "type": "io.kestra.plugin.core.flow.ForEach",
                "values": [1, 2],
                "concurrencyLimit": "{{ vars.n }}",
                "tasks": [{"id": "l", "type": "io.kestra.plugin.core.log.Log", "message": "x"}],
            }
        )
    )
    resolved = dynamic.resolve(flow.tasks[0], lambda raw: "4")
    assert resolved.concurrency_limit == 4  # type: ignore[attr-defined]
    with pytest.raises(
        dynamic.DynamicPropertyError, match=r"task 'each': property `concurrencyLimit`"
    ):
        dynamic.resolve(flow.tasks[0], lambda raw: "four")


def test_static_parts_are_still_checked() -> None:
    with pytest.raises(FlowError, match="maxAttempt"):
        build_flow(
            _flow(
                {
                    "id": "s",
                    "type": "io.kestra.plugin.core.flow.Sleep",
                    "duration": "PT1S",
                    "retry": {"type": "constant", "interval": "{{ x }}", "maxAttempt": "many"},
                }
            )
        )


@pytest.mark.parametrize("key", ["disabled", "allowFailure"])
def test_properties_kestra_reads_before_rendering_stay_literal(key: str) -> None:
    task = {"id": "l", "type": "io.kestra.plugin.core.log.Log", "message": "x", key: "{{ a }}"}
    with pytest.raises(FlowError, match=f"`{key}` takes a literal value"):
        build_flow(_flow(task))


def test_the_internal_field_cannot_be_written() -> None:
    task = {"id": "l", "type": "io.kestra.plugin.core.log.Log", "message": "x", "$dynamic": {}}
    with pytest.raises(FlowError, match="unknown field"):
        build_flow(_flow(task))
