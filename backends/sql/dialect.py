"""What one SQL dialect says differently, and the query set it runs.

The statements every dialect runs word for word live in ``backends/sql/queries.sql``,
written with PostgreSQL's numbered parameters (``$1``, ``$2``, ...); the dialect's own
``queries.sql`` holds only the statements it spells differently (arrays or JSON lists,
upserts' ``ON CONFLICT`` vs ``ON DUPLICATE KEY``, ``RETURNING`` or not, locks). A
:class:`Dialect` translates the shared statements to its parameter style once, at
import, and merges both files: a name defined in both is an error, so a dialect
cannot shadow a shared statement by accident.

Parameter styles: PostgreSQL ``$n`` as written; SQLite ``?n`` (numbered, so one value
may be used twice); MySQL's drivers take ``%s`` in order, so a statement meant for it
must use ``$1``, ``$2``, ... each once and in order (checked at load), and a literal
``%`` is doubled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from backends.sql.mapping import encode_json, execution_row, execution_row_binary
from backends.sql.queries import Queries, load_queries
from backends.sql.search import Params, SearchSyntax
from runtime.flow.execution import Execution

_PARAM = re.compile(r"\$(\d+)")

#: the upserts, rendered by each dialect: name -> (table, columns, conflict key,
#: columns an update sets). An update sets only what can change: an execution's id,
#: namespace, flow and start date never do, and every column SET is index entries
#: rewritten (PostgreSQL also keeps more updates HOT).
UPSERTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "execution_save": (
        "executions",
        ("id", "namespace", "flow_id", "state", "start_date", "end_date", "data", "labels"),
        ("id",),
        ("state", "end_date", "data", "labels"),
    ),
    "trigger_save": (
        "triggers",
        (
            "namespace",
            "flow_id",
            "trigger_id",
            "next_date",
            "last_date",
            "disabled",
            "flow_revision",
            "data",
        ),
        ("namespace", "flow_id", "trigger_id"),
        ("next_date", "last_date", "disabled", "flow_revision", "data"),
    ),
    "kv_set": (
        "kv",
        ("namespace", "key", "value", "updated", "expires_at"),
        ("namespace", "key"),
        ("value", "updated", "expires_at"),
    ),
    "service_heartbeat": (
        "services",
        ("id", "kind", "heartbeat", "data"),
        ("id",),
        ("kind", "heartbeat", "data"),
    ),
}


def quoted(column: str) -> str:
    """``key`` is reserved in MySQL: quoted everywhere (MySQL runs with ANSI_QUOTES)."""
    return '"key"' if column == "key" else column


class Dialect(SearchSyntax):
    """Base of the dialects: parameter style, value conversions, search spellings."""

    name = "sql"

    def translate(self, sql: str, origin: str) -> str:
        """A shared statement (``$n`` parameters) in this dialect's parameter style."""
        return sql

    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str]
    ) -> str:
        """Insert a row, or update ``update`` of the row with the same ``key``."""
        names = ", ".join(quoted(c) for c in columns)
        values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        sets = ", ".join(f"{quoted(c)} = excluded.{quoted(c)}" for c in update)
        keys = ", ".join(quoted(c) for c in key)
        return (
            f"INSERT INTO {table} ({names}) VALUES ({values})"
            f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        )

    def execution_params(self, execution: Execution) -> Sequence[Any]:
        """The ``execution_save`` parameters (id, namespace, flow_id, state, start_date,
        end_date, data, labels), typed for this dialect's columns."""
        raise NotImplementedError

    def list_param(self, values: Sequence[Any]) -> Any:
        """A list bound as one parameter (an array, or JSON text)."""
        raise NotImplementedError

    def queries(self, package: str) -> Queries:
        """The shared statements in this dialect's style, plus ``package``'s own."""
        shared = load_queries("backends.sql")
        own = load_queries(package)
        twice = sorted(set(shared) & set(own))
        if twice:
            raise ValueError(
                f"{package}/queries.sql redefines the shared statements {', '.join(twice)}"
                " of backends/sql/queries.sql; rename them, or drop the shared one"
            )
        upserts = {name: self.upsert(*spec) for name, spec in UPSERTS.items()}
        for name in sorted(set(upserts) & set(own)):
            raise ValueError(f"{package}/queries.sql redefines {name}, rendered by the dialect")
        merged = {
            name: self.translate(sql, f"backends.sql:{name}")
            for name, sql in (*shared.items(), *upserts.items())
        }
        merged.update(own)
        return Queries(merged, f"backends/sql/queries.sql + {package}/queries.sql")


class PostgresDialect(Dialect):
    """``$n`` parameters, arrays, ``NULLS FIRST/LAST`` spelled out."""

    name = "postgres"
    nulls_sort_low = False

    def placeholder(self, n: int) -> str:
        return f"${n}"

    def state_in(self, states: Sequence[str], params: Params) -> str:
        return f"state = ANY({params.add(list(states))}::text[])"

    def has_labels(self, items: Sequence[str], params: Params) -> str:
        return f"labels @> {params.add(list(items))}::text[]"

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)

    def execution_params(self, execution: Execution) -> Sequence[Any]:
        return execution_row_binary(execution)


class SqliteDialect(Dialect):
    """``?n`` parameters, JSON text for lists (read with json_each)."""

    name = "sqlite"

    def translate(self, sql: str, origin: str) -> str:
        return _PARAM.sub(lambda m: f"?{m.group(1)}", sql)

    def placeholder(self, n: int) -> str:
        return f"?{n}"

    def execution_params(self, execution: Execution) -> Sequence[Any]:
        return execution_row(execution)

    def has_labels(self, items: Sequence[str], params: Params) -> str:
        return " AND ".join(
            f"EXISTS (SELECT 1 FROM json_each(labels) WHERE value = {params.add(item)})"
            for item in items
        )

    def list_param(self, values: Sequence[Any]) -> Any:
        return encode_json(list(values))


class MysqlDialect(Dialect):
    """``%s`` parameters in order, tuples for lists (``IN %s``), labels tested with
    JSON_CONTAINS, integer division spelled ``DIV``."""

    name = "mysql"

    def translate(self, sql: str, origin: str) -> str:
        # comment lines may name parameters out of order: they are not sent
        sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
        numbers = [int(n) for n in _PARAM.findall(sql)]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(
                f"{origin}: MySQL binds parameters in order, so a shared statement must use"
                f" $1, $2, ... each once and in order (found {numbers})"
            )
        return _PARAM.sub("%s", sql.replace("%", "%%"))

    def placeholder(self, n: int) -> str:
        return "%s"

    def has_labels(self, items: Sequence[str], params: Params) -> str:
        return f"JSON_CONTAINS(labels, {params.add(encode_json(list(items)))})"

    def day_number(self, column: str) -> str:
        return f"{column} DIV 86400000000"

    def upsert(
        self, table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str]
    ) -> str:
        # VALUES(col): MariaDB has no row alias; MySQL 8 deprecates it but runs it
        names = ", ".join(quoted(c) for c in columns)
        values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        sets = ", ".join(f"{quoted(c)} = VALUES({quoted(c)})" for c in update)
        return f"INSERT INTO {table} ({names}) VALUES ({values}) ON DUPLICATE KEY UPDATE {sets}"

    def execution_params(self, execution: Execution) -> Sequence[Any]:
        row = execution_row_binary(execution)
        return (*row[:7], encode_json(row[7]))

    def list_param(self, values: Sequence[Any]) -> Any:
        # PyMySQL binds a tuple as a parenthesised list: "state IN %s"
        return tuple(values)
