"""Log searches and deletions by query (``LogStore.find`` and ``delete``) as SQL, built
from the conditions given, as execution searches are (:mod:`backends.sql.search`, whose
namespace range and ``LIKE`` escaping apply here too).

Two indexes serve them (each dialect's migration): ``(timestamp, execution_id, seq)``
walks the newest entries first when nothing narrows the search, and ``(namespace,
flow_id, timestamp)`` finds a flow's (or a namespace's) entries; an execution's go
through the primary key ``(execution_id, seq)``. The text condition is a scan of
what the others leave: there is no full-text index.
"""

from __future__ import annotations

from typing import Any

from backends.protocols import LogFilter
from backends.sql.mapping import min_level_number, to_micros
from backends.sql.search import Params, SearchSyntax, escape_like

_COLUMNS = (
    "execution_id, seq, namespace, flow_id, timestamp, level, message, task_run_id,"
    " task_id, attempt"
)
#: newest first; execution id and seq make the order total, so pages never overlap
_ORDER = "timestamp DESC, execution_id DESC, seq DESC"


def conditions(where: LogFilter, params: Params) -> str:
    """The WHERE clause (``1 = 1`` when nothing is asked); ValueError: unknown level."""
    level = min_level_number(where.min_level)
    found: list[str] = []
    if where.execution_id is not None:
        found.append(f"execution_id = {params.add(where.execution_id)}")
    if where.namespace is not None and not where.below:
        found.append(f"namespace = {params.add(where.namespace)}")
    elif where.namespace is not None:
        ns = where.namespace
        found.append(
            f"(namespace = {params.add(ns)} OR"
            f" (namespace >= {params.add(ns + '.')} AND namespace < {params.add(ns + '/')}))"
        )
    for column, value in (
        ("flow_id", where.flow_id),
        ("task_id", where.task_id),
        ("task_run_id", where.task_run_id),
        ("attempt", where.attempt),
    ):
        if value is not None:
            found.append(f"{column} = {params.add(value)}")
    if where.min_level is not None:
        found.append(f"level_number >= {params.add(level)}")
    if where.levels is not None:
        numbers = sorted({min_level_number(name) for name in where.levels})
        found.append(
            f"level_number IN ({', '.join(params.add(n) for n in numbers)})" if numbers else "1 = 0"
        )
    if where.after is not None:
        found.append(f"timestamp >= {params.add(to_micros(where.after))}")
    if where.before is not None:
        found.append(f"timestamp < {params.add(to_micros(where.before))}")
    if where.query:
        pattern = f"%{escape_like(where.query.lower())}%"
        found.append(f"LOWER(message) LIKE {params.add(pattern)} ESCAPE '!'")
    return " AND ".join(found) if found else "1 = 1"


def find_statements(
    where: LogFilter, syntax: SearchSyntax, *, limit: int, offset: int
) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]:
    """The page query and the count query, each with its values."""
    page_params = Params(syntax.placeholder)
    clause = conditions(where, page_params)
    page_limit = page_params.add(max(limit, 0))
    page_offset = page_params.add(max(offset, 0))
    page = (
        f"SELECT {_COLUMNS} FROM logs WHERE {clause} ORDER BY {_ORDER}"
        f" LIMIT {page_limit} OFFSET {page_offset}"
    )
    count_params = Params(syntax.placeholder)
    count = f"SELECT COUNT(*) FROM logs WHERE {conditions(where, count_params)}"
    return (page, page_params.values), (count, count_params.values)


def delete_statement(where: LogFilter, syntax: SearchSyntax) -> tuple[str, list[Any]]:
    params = Params(syntax.placeholder)
    return f"DELETE FROM logs WHERE {conditions(where, params)}", params.values
