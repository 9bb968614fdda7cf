"""Task types: Kestra's names, older aliases, suggestions, and plugins by entry point."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runtime.flow import registry as registry_module
from runtime.flow.model import ForEach
from runtime.flow.registry import TaskRegistry, UnknownTaskTypeError, default_registry
from runtime.tasks.core import Log, Return


def test_kestra_names_and_aliases_resolve_to_the_same_class() -> None:
    registry = default_registry()
    assert registry.resolve("io.kestra.plugin.core.log.Log") is Log
    assert registry.resolve("io.kestra.core.tasks.log.Log") is Log
    assert registry.resolve("io.kestra.core.tasks.debugs.Return") is Return
    assert registry.resolve("io.kestra.plugin.core.flow.ForEach") is ForEach


def test_unknown_type_suggests_the_closest_name() -> None:
    with pytest.raises(
        UnknownTaskTypeError, match=r"did you mean 'io\.kestra\.plugin\.core\.log\.Log'"
    ):
        default_registry().resolve("io.kestra.plugin.core.log.Lgo")
    assert default_registry().suggest("ForEch") == "io.kestra.plugin.core.flow.ForEach"


def test_a_name_cannot_be_taken_twice() -> None:
    registry = TaskRegistry()
    registry.register(Log)

    class Impostor(Log, kw_only=True, frozen=True):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Impostor)


def test_plugins_register_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real installed distribution (a dist-info folder on sys.path) adds a task type."""
    (tmp_path / "acme_tasks.py").write_text(
        textwrap.dedent(
            """
            from typing import ClassVar
            from runtime.flow.model import RunnableTask

            class Hello(RunnableTask, kw_only=True, frozen=True):
                name: str
                canonical_type: ClassVar[str] = "com.acme.Hello"

            def broken():
                raise RuntimeError("plugin bug")
            """
        )
    )
    dist = tmp_path / "acme_tasks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tasks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[runtime.tasks]\nhello = acme_tasks:Hello\nbroken = acme_tasks:broken\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    logged: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def error(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    monkeypatch.setattr(registry_module, "log", Recorder())
    registry = TaskRegistry()
    registry.load_entry_points()  # the broken plugin is logged, not fatal
    hello = registry.resolve("com.acme.Hello")
    assert hello.__name__ == "Hello"
    assert logged == [
        (
            "tasks.plugin_failed",
            {"entry_point": "broken", "error": "RuntimeError('plugin bug')"},
        )
    ]
    sys.modules.pop("acme_tasks", None)
