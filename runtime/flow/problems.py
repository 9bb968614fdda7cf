"""What is wrong with a flow, and where: :class:`Problem`, :class:`FlowError` and the
:class:`Report` that checks fill in.

A problem names its place by path (``tasks[2].retry.interval``). When the flow came
from a file, a :class:`Positions` map (built by the parser) turns that path into a
line and column: the key for an unknown field, the value for a wrong value, the
mapping itself for a missing field.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with a flow."""

    path: str  #: where, as ``tasks[2].retry.interval`` ("" for the document itself)
    message: str
    hint: str | None = None
    line: int | None = None
    column: int | None = None

    def render(self, file: str = "<flow>") -> str:
        """``file:line:col: message (at path); hint`` — one line a person can act on."""
        where = f"{file}:{self.line or 1}:{self.column or 1}"
        at = f" (at {self.path})" if self.path else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}: {self.message}{at}{hint}"


class FlowError(ValueError):
    """A flow that cannot be built; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem], file: str = "<flow>") -> None:
        self.problems = list(problems)
        self.file = file
        super().__init__("\n".join(p.render(file) for p in self.problems))


class Positions(Protocol):
    """Where each path of a document sits in its source (1-based line, column)."""

    def key(self, path: str) -> tuple[int, int] | None:
        """The position of the key that holds ``path`` (or of the value for list items)."""

    def value(self, path: str) -> tuple[int, int] | None:
        """The position of the value at ``path``."""

    def inside(self, path: str, line: int, column: int) -> tuple[int, int] | None:
        """The position of ``line``/``column`` (1-based) of the string value at ``path``."""


class Report:
    """Collects problems, placing each one through ``positions`` when there are any."""

    def __init__(self, positions: Positions | None = None) -> None:
        self.positions = positions
        self._problems: list[Problem] = []
        self._seen: set[tuple[str, str]] = set()

    def key(self, path: str, message: str, hint: str | None = None) -> None:
        """A problem with the key at ``path`` (an unknown or duplicate field)."""
        where = self.positions.key(path) if self.positions else None
        self.add(path, message, hint, where)

    def value(
        self,
        path: str,
        message: str,
        hint: str | None = None,
        inside: tuple[int, int] | None = None,
    ) -> None:
        """A problem with the value at ``path``; ``inside`` is a spot within a string."""
        where = None
        if self.positions is not None:
            if inside is not None:
                where = self.positions.inside(path, *inside)
            where = where or self.positions.value(path)
        self.add(path, message, hint, where)

    def where(self, path: str) -> str:
        """``path``, with its line when known: for hints naming another place."""
        pos = self.positions.value(path) if self.positions else None
        return f"{path} (line {pos[0]})" if pos else path

    @property
    def problems(self) -> list[Problem]:
        """Every problem, in source order when positions are known."""
        if self.positions is None:
            return list(self._problems)
        return sorted(self._problems, key=lambda p: (p.line or 0, p.column or 0))

    def __len__(self) -> int:
        return len(self._problems)

    def add(self, path: str, message: str, hint: str | None, where: tuple[int, int] | None) -> None:
        """A problem at an explicit ``where`` (line, column), or unplaced."""
        # The same plugin default can be wrong for many tasks: say it once.
        if (path, message) in self._seen:
            return
        self._seen.add((path, message))
        line, column = where if where else (None, None)
        self._problems.append(Problem(path, message, hint, line, column))


def join(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the document's root."""
    return f"{path}.{key}" if path else key


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, if any is close enough to be a typo."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def describe_value(value: Any) -> str:
    """``a string 'abc'``, ``an integer 5``, ``a list``: what was found, for messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"an integer {value}"
    if isinstance(value, float):
        return f"a number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string {shown!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
