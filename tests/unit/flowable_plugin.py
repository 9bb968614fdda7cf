"""A third-party flowable, as a plugin package would ship it: registered through the
``runtime.tasks`` entry point group, its scope rules on its own class."""

from __future__ import annotations

from typing import ClassVar

from runtime.flow.model import FlowableTask, Task
from runtime.flow.scopes import Scope, ScopeBuilder


class Reverse(FlowableTask, kw_only=True, frozen=True):
    """Runs its tasks one after another, last first; at most ``limit`` of them."""

    tasks: tuple[Task, ...]
    limit: int = 0

    canonical_type: ClassVar[str] = "io.example.flow.Reverse"
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        chosen = tuple(reversed(self.tasks))
        return build.scope([build.lane(chosen[: self.limit or None])])
