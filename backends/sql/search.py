"""Execution searches (``ExecutionStore.find`` and ``daily_counts``) as SQL, the same
for every dialect but for a few spellings a :class:`SearchSyntax` supplies.

The statement is built from the conditions actually given, not one catch-all text
with ``(? IS NULL OR ...)`` guards: PostgreSQL plans its prepared statements once
(generic plans), and a guarded condition can never use an index. The number of
distinct texts stays small (which conditions are present, how many labels, the
sort), so drivers' statement caches keep working.

- namespace: the namespace itself, or one below it. Written as a range,
  ``ns.`` <= namespace < ``ns/`` (``/`` follows ``.``), which is exactly "starts
  with ``ns.``" under the byte / code point order every dialect compares these
  columns with, and uses the namespace indexes even with a bound parameter (a
  ``LIKE`` prefix only does with a literal, and needs its wildcards escaped).
- query: a case-insensitive substring of id, namespace or flow id; ``%`` and ``_``
  in it are escaped (escape character ``!``: the one every dialect reads the same,
  unlike a backslash in MySQL string literals).
- labels: the ``labels`` column holds one string per label, ``key`` + U+001F +
  ``value`` (:func:`backends.sql.mapping.label_items`); each dialect tests
  membership its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from backends.protocols import DailyCount, ExecutionFilter, ExecutionSortField
from backends.sql.mapping import label_item, to_micros
from runtime.flow.states import StateType

#: sort field -> column; ``state`` holds the state's name
SORT_COLUMNS: dict[str, str] = {
    "start_date": "start_date",
    "end_date": "end_date",
    "id": "id",
    "namespace": "namespace",
    "flow_id": "flow_id",
    "state": "state",
}
_DAY_MICROS = 86_400_000_000
_EPOCH_DAY = date(1970, 1, 1)
_NULLABLE = frozenset({"start_date", "end_date"})


class Params:
    """Bound values in order, handing out the dialect's placeholder for each."""

    def __init__(self, placeholder: Callable[[int], str]) -> None:
        self.values: list[Any] = []
        self._placeholder = placeholder

    def add(self, value: Any) -> str:
        self.values.append(value)
        return self._placeholder(len(self.values))


class SearchSyntax:
    """What differs between dialects in a search; subclasses override."""

    #: NULL sorts below every value (SQLite, MySQL); else ``NULLS FIRST/LAST`` is spelled
    nulls_sort_low = True

    def placeholder(self, n: int) -> str:
        """The n-th (1-based) parameter."""
        raise NotImplementedError

    def state_in(self, states: Sequence[str], params: Params) -> str:
        """``state`` is one of ``states`` (never empty)."""
        return f"state IN ({', '.join(params.add(state) for state in states)})"

    def has_labels(self, items: Sequence[str], params: Params) -> str:
        """The ``labels`` column holds every one of ``items`` (never empty)."""
        raise NotImplementedError

    def day_number(self, column: str) -> str:
        """Days since the epoch of a microseconds column (a non-negative integer)."""
        return f"{column} / {_DAY_MICROS}"


def escape_like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself, with ``!`` as the escape character."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def conditions(where: ExecutionFilter, syntax: SearchSyntax, params: Params) -> str:
    """The WHERE clause (``1 = 1`` when nothing is asked)."""
    found: list[str] = []
    if where.namespace is not None:
        ns = where.namespace
        found.append(
            f"(namespace = {params.add(ns)} OR"
            f" (namespace >= {params.add(ns + '.')} AND namespace < {params.add(ns + '/')}))"
        )
    if where.flow_id is not None:
        found.append(f"flow_id = {params.add(where.flow_id)}")
    if where.states is not None:
        if not where.states:
            return "1 = 0"
        found.append(syntax.state_in([state.value for state in where.states], params))
    if where.started_after is not None:
        found.append(f"start_date >= {params.add(to_micros(where.started_after))}")
    if where.started_before is not None:
        found.append(f"start_date < {params.add(to_micros(where.started_before))}")
    if where.labels:
        items = list(dict.fromkeys(label_item(key, value) for key, value in where.labels))
        found.append(syntax.has_labels(items, params))
    if where.query:
        pattern = f"%{escape_like(where.query.lower())}%"
        # one value per use: "?" and "%s" placeholders cannot be reused
        found.append(
            "("
            + " OR ".join(
                f"LOWER({column}) LIKE {params.add(pattern)} ESCAPE '!'"
                for column in ("id", "namespace", "flow_id")
            )
            + ")"
        )
    return " AND ".join(found) if found else "1 = 1"


def order_by(sort: ExecutionSortField, descending: bool, syntax: SearchSyntax) -> str:
    """The ORDER BY clause: the field, then the id, both in the same direction; no date
    sorts as the earliest."""
    column = SORT_COLUMNS.get(sort)
    if column is None:
        known = ", ".join(SORT_COLUMNS)
        raise ValueError(f"cannot sort executions by {sort!r}: use one of {known}")
    direction = "DESC" if descending else "ASC"
    nulls = ""
    if column in _NULLABLE and not syntax.nulls_sort_low:
        nulls = " NULLS LAST" if descending else " NULLS FIRST"
    if column == "id":
        return f"id {direction}"
    return f"{column} {direction}{nulls}, id {direction}"


def find_statements(
    where: ExecutionFilter,
    syntax: SearchSyntax,
    *,
    sort: ExecutionSortField,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """The page query (selecting ``data``) and the count query, each with its values."""
    page_params = Params(syntax.placeholder)
    clause = conditions(where, syntax, page_params)
    ordering = order_by(sort, descending, syntax)
    page_limit = page_params.add(max(limit, 0))
    page_offset = page_params.add(max(offset, 0))
    page = (
        f"SELECT data FROM executions WHERE {clause} ORDER BY {ordering}"
        f" LIMIT {page_limit} OFFSET {page_offset}"
    )
    count_params = Params(syntax.placeholder)
    count = f"SELECT COUNT(*) FROM executions WHERE {conditions(where, syntax, count_params)}"
    return (page, page_params.values), (count, count_params.values)


def search_statement(
    syntax: SearchSyntax,
    *,
    namespace: str | None,
    flow_id: str | None,
    states: Sequence[StateType] | None,
    limit: int,
    offset: int,
) -> tuple[str, list[Any]]:
    """``ExecutionStore.search``: exact namespace and flow, newest first."""
    params = Params(syntax.placeholder)
    found: list[str] = []
    if namespace is not None:
        found.append(f"namespace = {params.add(namespace)}")
    if flow_id is not None:
        found.append(f"flow_id = {params.add(flow_id)}")
    if states is not None:
        if states:
            found.append(syntax.state_in([state.value for state in states], params))
        else:
            found.append("1 = 0")
    clause = " AND ".join(found) if found else "1 = 1"
    ordering = order_by("start_date", True, syntax)
    sql = (
        f"SELECT data FROM executions WHERE {clause} ORDER BY {ordering}"
        f" LIMIT {params.add(limit)} OFFSET {params.add(max(offset, 0))}"
    )
    return sql, params.values


def daily_counts_statement(where: ExecutionFilter, syntax: SearchSyntax) -> tuple[str, list[Any]]:
    """Rows (day number, state, count) of the executions matching ``where``."""
    params = Params(syntax.placeholder)
    clause = conditions(where, syntax, params)
    day = syntax.day_number("start_date")
    sql = (
        f"SELECT {day} AS day, state, COUNT(*) FROM executions"
        f" WHERE start_date IS NOT NULL AND {clause} GROUP BY {day}, state"
    )
    return sql, params.values


def daily_counts(rows: Sequence[Sequence[Any]]) -> list[DailyCount]:
    """Rows of :func:`daily_counts_statement` as records, by day then state name."""
    counts = [
        DailyCount(
            day=_EPOCH_DAY + timedelta(days=int(row[0])),
            state=StateType(row[1]),
            count=int(row[2]),
        )
        for row in rows
    ]
    counts.sort(key=lambda c: (c.day, c.state.name))
    return counts
