"""Task types by name: Kestra's names, their older aliases, and third-party plugins.

Third-party packages add task classes through the entry point group
``runtime.tasks``: each entry point names a Task subclass, or a callable returning
an iterable of them.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from importlib.metadata import entry_points

from runtime.flow.model import FLOWABLE_TYPES, Task
from runtime.log import get_logger

log = get_logger(__name__)

ENTRY_POINT_GROUP = "runtime.tasks"


class UnknownTaskTypeError(LookupError):
    """No task class is registered under that type name."""

    def __init__(self, name: str, suggestion: str | None) -> None:
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(f"unknown task type {name!r}{hint}")
        self.name = name
        self.suggestion = suggestion


class TaskRegistry:
    """Maps every accepted type name to its task class."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[Task]] = {}

    def register(self, cls: type[Task]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Task)) or not cls.canonical_type:
            raise TypeError(f"{cls!r} is not a Task subclass with a canonical_type")
        for name in (cls.canonical_type, *cls.aliases):
            existing = self._by_name.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"task type {name!r} is registered twice: {existing.__qualname__} "
                    f"and {cls.__qualname__}"
                )
            self._by_name[name] = cls

    def register_all(self, classes: Iterable[type[Task]]) -> None:
        for cls in classes:
            self.register(cls)

    def resolve(self, name: str) -> type[Task]:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownTaskTypeError(name, self.suggest(name)) from None

    def suggest(self, name: str) -> str | None:
        """The closest known canonical name, by full name or by the last segment."""
        canonical = sorted({cls.canonical_type for cls in self._by_name.values()})
        close = difflib.get_close_matches(name, canonical, n=1, cutoff=0.6)
        if close:
            return close[0]
        tail = name.rsplit(".", 1)[-1].lower()
        by_tail = {c.rsplit(".", 1)[-1].lower(): c for c in canonical}
        close = difflib.get_close_matches(tail, list(by_tail), n=1, cutoff=0.7)
        return by_tail[close[0]] if close else None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for point in entry_points(group=group):
            try:
                loaded = point.load()
                classes = [loaded] if isinstance(loaded, type) else list(loaded())
                self.register_all(classes)
            except Exception as exc:
                log.error("tasks.plugin_failed", entry_point=point.name, error=repr(exc))


@functools.cache
def default_registry() -> TaskRegistry:
    """The built-in tasks plus every installed plugin (loaded once per process)."""
    from runtime.tasks.core import CORE_TASKS
    from runtime.tasks.more_core import MORE_CORE_TASKS

    registry = TaskRegistry()
    registry.register_all(FLOWABLE_TYPES)
    registry.register_all(CORE_TASKS)
    registry.register_all(MORE_CORE_TASKS)
    registry.load_entry_points()
    return registry
