"""Flowables are open to plugins: a FlowableTask subclass registered through the
``runtime.tasks`` entry point group, with its scope rules on its class, runs in the
real executor like a core one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.flow.loader import build_flow
from runtime.flow.model import FLOWABLE_TYPES, FlowableTask, Sequential
from runtime.flow.registry import TaskRegistry
from runtime.flow.scopes import Flowable
from runtime.flow.states import StateType
from runtime.tasks.core import CORE_TASKS
from services.dry_run import DryRun
from tests.unit.engine_helpers import LOG

FLOW = {
    "id": "plugged",
    "namespace": "company.team",
    "tasks": [
        {
            "id": "backwards",
            "type": "io.example.flow.Reverse",
            "tasks": [{"id": n, "type": LOG, "message": n} for n in ("a", "b", "c")],
            "finally": [{"id": "after", "type": LOG, "message": "done"}],
        }
    ],
}


def installed_plugin(root: Path) -> None:
    """What `pip install` of a plugin leaves: a distribution with the entry point."""
    info = root / "example_flowables-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: example-flowables\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[runtime.tasks]\nreverse = tests.unit.flowable_plugin:Reverse\n"
    )


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TaskRegistry:
    installed_plugin(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    found = TaskRegistry()
    found.register_all(FLOWABLE_TYPES)
    found.register_all(CORE_TASKS)
    found.load_entry_points()
    return found


def test_a_flowable_from_an_entry_point_runs_in_the_executor(registry: TaskRegistry) -> None:
    assert "io.example.flow.Reverse" in registry
    flow = build_flow(FLOW, registry)
    dry = DryRun(flow)
    end = dry.run()
    assert end.state.current is StateType.SUCCESS
    assert [r.task_id for r in end.task_run_list] == ["backwards", "c", "b", "a", "after"]
    # the engine ran it, as a flowable: no job for it ever went to a worker
    jobs = {c.task_id for c in dry.commands if type(c).__name__ == "RunTask"}
    assert jobs == {"a", "b", "c", "after"}


def test_its_own_properties_shape_its_scope(registry: TaskRegistry) -> None:
    doc = {**FLOW, "tasks": [{**FLOW["tasks"][0], "limit": 2}]}  # type: ignore[dict-item]
    end = DryRun(build_flow(doc, registry)).run()
    assert [r.task_id for r in end.task_run_list] == ["backwards", "c", "b", "after"]


def test_every_core_flowable_carries_its_own_scope_rules() -> None:
    flowables = [cls for cls in FLOWABLE_TYPES if issubclass(cls, FlowableTask)]
    assert Sequential in flowables
    for cls in flowables:
        assert "scope" in cls.__dict__, f"{cls.__name__} has no scope rules of its own"
        assert issubclass(cls, Flowable)


def test_a_flowable_without_scope_rules_fails_its_run_with_a_clear_log() -> None:
    class Shapeless(FlowableTask, kw_only=True, frozen=True):
        tasks: tuple[object, ...] = ()
        canonical_type = "io.example.flow.Shapeless"

    registry = TaskRegistry()
    registry.register_all(FLOWABLE_TYPES)
    registry.register_all(CORE_TASKS)
    registry.register(Shapeless)
    flow = build_flow(
        {
            "id": "f",
            "namespace": "company.team",
            "tasks": [{"id": "x", "type": Shapeless.canonical_type}],
        },
        registry,
    )
    dry = DryRun(flow)
    end = dry.run()
    assert end.state.current is StateType.FAILED
    messages = [c.message for c in dry.logs]
    assert any("scope(build)" in m and "io.example.flow.Shapeless" in m for m in messages), messages
