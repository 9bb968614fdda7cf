"""Named queries, loaded from a ``.sql`` file next to the dialect's code.

A query file is a sequence of blocks, each starting with a ``-- name: <name>`` line;
the following lines up to the next marker are the query. Keeping SQL in one file per
dialect (not in f-strings through the code) makes it reviewable and greppable, and a
typo in a name fails at import time, not in production.

Queries on a queue table use the ``{table}`` placeholder: :class:`QueueQueries`
renders them once per queue and caches the text, so the driver's statement cache
keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries(Mapping[str, str]):
    """Immutable mapping of query name to SQL text."""

    def __init__(self, queries: Mapping[str, str], origin: str) -> None:
        self._queries = dict(queries)
        self._origin = origin

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in {self._origin}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)

    def require(self, *names: str) -> None:
        """Fail now, naming the file, if any of ``names`` is missing."""
        missing = [name for name in names if name not in self._queries]
        if missing:
            raise KeyError(f"{self._origin} lacks the queries {', '.join(missing)}")


def parse_queries(text: str, origin: str = "<string>") -> Queries:
    """Split ``text`` into named queries (see the module docstring for the format)."""
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    head = text[: matches[0].start()] if matches else text
    # SQL before the first marker would be silently ignored otherwise.
    if any(line.strip() and not line.strip().startswith("--") for line in head.splitlines()):
        raise ValueError(f"{origin}: SQL before the first '-- name:' marker")
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        lines = text[match.end() : end].strip().splitlines()
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
            lines.pop()  # a section comment before the next marker belongs to no query
        body = "\n".join(lines)
        name = match.group(1)
        if name in queries:
            raise ValueError(f"{origin}: the query {name!r} is defined twice")
        if not body:
            raise ValueError(f"{origin}: the query {name!r} is empty")
        queries[name] = body.rstrip(";").strip()
    return Queries(queries, origin)


def load_queries(package: str, resource: str = "queries.sql") -> Queries:
    """Load the named queries of ``package``'s ``resource`` file."""
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return parse_queries(text, f"{package}/{resource}")


class QueueQueries:
    """The ``{table}`` queries of one dialect, rendered per queue table and cached."""

    def __init__(self, queries: Queries, names: tuple[str, ...]) -> None:
        queries.require(*names)
        self._templates = {name: queries[name] for name in names}
        self._rendered: dict[str, dict[str, str]] = {}

    def for_table(self, table: str) -> Mapping[str, str]:
        """The queries with ``{table}`` replaced; ``table`` must be a safe identifier."""
        rendered = self._rendered.get(table)
        if rendered is None:
            if not _IDENTIFIER.fullmatch(table):
                raise ValueError(f"unsafe table name {table!r}")
            rendered = {
                name: template.replace("{table}", table)
                for name, template in self._templates.items()
            }
            self._rendered[table] = rendered
        return rendered


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
