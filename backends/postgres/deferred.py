"""Writes a transaction holds back and sends as ONE statement.

Round trips, not the server's work, dominate a transaction on PostgreSQL: each
statement waits for the network and for both processes to be scheduled. The writes at
the end of an executor batch (save the executions, publish the messages the commands
produced, ack the consumed events) and a worker's report (publish the result, ack the
job) return nothing their callers use, so a transaction queues them and sends them
together, as data-modifying CTEs of one statement, when it must: before its next read
(reads see the transaction's own writes) and at commit. A transaction that did nothing
else sends that one statement without ``BEGIN``/``COMMIT`` (a statement is atomic on
its own).

CTEs of one statement run concurrently and must not modify a row twice, so the pieces
are merged: one upsert of every saved execution (the last save of an id wins, as it
would in sequence), one insert per queue table (arrays with ordinality keep publication
order, and ids follow it), one delete per queue table, one insert of log lines.

Every piece takes its rows as arrays (``unnest``), so the statement's text depends on
which pieces a transaction has, never on how many rows: a batch of 1 execution and one
of 50 are the same prepared statement, parsed and planned once per connection.

Other processes are woken after the commit (``backends.postgres.notifier``: a
notifying commit holds a cluster-wide lock through its WAL flush); only a statement
committing on its own while no other one of its process is under way notifies in
itself (``notify``), saving the wait for a separate notification.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from backends.sql.dialect import UPSERTS

if TYPE_CHECKING:
    from backends.postgres.session import QueueTable

_PARAM = re.compile(r"\$(\d+)")

#: the array type each ``execution_save`` column is sent as (labels: one JSON list per
#: execution, as an array column cannot be unnested row by row)
_SAVE_TYPES = {
    "id": "text",
    "namespace": "text",
    "flow_id": "text",
    "state": "text",
    "start_date": "bigint",
    "end_date": "bigint",
    "data": "bytea",
    "labels": "text",
}
_SAVE_TABLE, _SAVE_COLUMNS, _SAVE_KEY, _SAVE_UPDATE = UPSERTS["execution_save"]
if set(_SAVE_COLUMNS) != set(_SAVE_TYPES):  # pragma: no cover - caught by any test run
    raise RuntimeError(f"execution_save's columns changed: {_SAVE_COLUMNS}; update _SAVE_TYPES")
_LABELS = _SAVE_COLUMNS.index("labels")
_labels_json = msgspec.json.Encoder()


def _saved(column: str) -> str:
    if column == "labels":
        return (
            "ARRAY(SELECT l FROM jsonb_array_elements_text(u.labels::jsonb)"
            " WITH ORDINALITY AS x(l, n) ORDER BY n)"
        )
    return f"u.{column}"


#: every saved execution, one upsert (``$1``... one array per column, renumbered)
SAVE_CTE = (
    f"saved AS (INSERT INTO {_SAVE_TABLE} ({', '.join(_SAVE_COLUMNS)})"
    f" SELECT {', '.join(_saved(c) for c in _SAVE_COLUMNS)}"
    " FROM unnest("
    + ", ".join(f"${n}::{_SAVE_TYPES[c]}[]" for n, c in enumerate(_SAVE_COLUMNS, 1))
    + f") AS u({', '.join(_SAVE_COLUMNS)})"
    f" ON CONFLICT ({', '.join(_SAVE_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SAVE_UPDATE)
    + ")"
)


def renumber(sql: str, offset: int) -> str:
    """``sql`` with its parameters ``$n`` moved to ``$(n + offset)``."""
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


#: log lines, numbered per execution in arrival order: ``log_seqs`` hands out the
#: numbers; its upsert locks each execution's counter row (in execution id order, so
#: two appends cannot deadlock) until the transaction ends, and reads its latest value
#: whatever the statement's snapshot, so concurrent appends never share a number.
#: Parameters: one array per column ($1..$10, renumbered), entries in arrival order.
LOG_CTES = """log_entries AS (
    SELECT u.*,
           row_number() OVER (PARTITION BY u.execution_id ORDER BY u.ord) AS nth,
           count(*) OVER (PARTITION BY u.execution_id) AS total
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[],
                $7::text[], $8::text[], $9::text[], $10::int[])
         WITH ORDINALITY AS u(execution_id, namespace, flow_id, ts, level, level_number,
                              message, task_run_id, task_id, attempt, ord)
), log_bumped AS (
    INSERT INTO log_seqs AS s (execution_id, last_seq)
    SELECT execution_id, count(*) FROM log_entries GROUP BY execution_id
    ORDER BY execution_id
    ON CONFLICT (execution_id) DO UPDATE SET last_seq = s.last_seq + excluded.last_seq
    RETURNING execution_id, last_seq
), log_rows AS (
    INSERT INTO logs (execution_id, seq, namespace, flow_id, timestamp, level, level_number,
                      message, task_run_id, task_id, attempt)
    SELECT e.execution_id, b.last_seq - e.total + e.nth, e.namespace, e.flow_id, e.ts,
           e.level, e.level_number, e.message, e.task_run_id, e.task_id, e.attempt
    FROM log_entries AS e JOIN log_bumped AS b USING (execution_id)
)"""
LOG_COLUMNS = 10


class Deferred:
    """The writes one session holds back."""

    __slots__ = ("acks", "logs", "publishes", "saves")

    def __init__(self) -> None:
        #: execution id -> the row parameters of its last save
        self.saves: dict[str, tuple[Any, ...]] = {}
        #: queue -> (table, keys, payloads, visible-from instants)
        self.publishes: dict[str, tuple[QueueTable, list[str | None], list[bytes], list[int]]] = {}
        #: queue -> (table, ids)
        self.acks: dict[str, tuple[QueueTable, list[int]]] = {}
        #: log lines: one list per column of LOG_CTES
        self.logs: list[list[Any]] = []

    def __bool__(self) -> bool:
        return bool(self.saves or self.publishes or self.acks or self.logs)

    def log(self, columns: list[list[Any]]) -> None:
        """Append log lines given as one list per column (LOG_COLUMNS of them)."""
        if not self.logs:
            self.logs = [[] for _ in range(LOG_COLUMNS)]
        for mine, more in zip(self.logs, columns, strict=True):
            mine.extend(more)

    def save(self, execution_id: str, row: tuple[Any, ...]) -> None:
        self.saves.pop(execution_id, None)
        self.saves[execution_id] = row

    def publish(
        self, queue: str, table: QueueTable, items: list[tuple[str | None, bytes]], visible: int
    ) -> None:
        entry = self.publishes.get(queue)
        if entry is None:
            entry = self.publishes[queue] = (table, [], [], [])
        _, keys, payloads, instants = entry
        for key, payload in items:
            keys.append(key)
            payloads.append(payload)
            instants.append(visible)

    def ack(self, queue: str, table: QueueTable, ids: list[int]) -> None:
        entry = self.acks.get(queue)
        if entry is None:
            entry = self.acks[queue] = (table, [])
        entry[1].extend(ids)

    def statement(self, sender: str, *, notify: bool = False) -> tuple[str, list[Any], list[str]]:
        """The statement, its arguments, and the queues whose acks it reports (its row
        holds, per such queue in that order, how many messages wait behind the keys the
        acks freed). Its text depends only on which kinds of writes there are (and on
        which queues), not on how many. ``notify``: it also notifies the consumers of
        the queues it makes messages claimable in (``$1``, the sender, as payload)."""
        ctes: list[str] = []
        counts: list[str] = []
        notifies: list[str] = []
        args: list[Any] = [sender]  # $1
        if self.saves:
            ctes.append(renumber(SAVE_CTE, len(args)))
            columns = [list(column) for column in zip(*self.saves.values(), strict=True)]
            columns[_LABELS] = [_labels_json.encode(items).decode() for items in columns[_LABELS]]
            args.extend(columns)
        if self.logs:
            ctes.append(renumber(LOG_CTES, len(args)))
            args.extend(self.logs)
        # queues in name order: the same kinds of writes make the same text
        publishes = [self.publishes[queue] for queue in sorted(self.publishes)]
        for n, (table, keys, payloads, instants) in enumerate(publishes):
            base = len(args)
            ctes.append(
                f"p{n} AS (INSERT INTO {table.name} (key, payload, available_at)"
                f" SELECT u.key, u.payload, u.at FROM unnest(${base + 1}::text[],"
                f" ${base + 2}::bytea[], ${base + 3}::bigint[]) WITH ORDINALITY"
                " AS u(key, payload, at, ord) ORDER BY u.ord)"
            )
            args.extend((keys, payloads, instants))
            if notify:
                notifies.append(f"pg_notify(${len(args) + 1}, $1)")
                args.append(table.channel)
        acked: list[str] = []
        for n, (queue, (table, ids)) in enumerate(
            sorted(self.acks.items(), key=lambda item: item[0])
        ):
            base = len(args)
            ctes.append(
                f"a{n} AS (DELETE FROM {table.name} WHERE id = ANY(${base + 1}::bigint[])"
                " RETURNING key)"
            )
            # Only an ack that frees a key with a message waiting behind it makes
            # something claimable (what is published later wakes consumers itself): the
            # caller wakes consumers only then, so none is woken by its own ack for nothing.
            waiting = (
                f"(SELECT count(*) FROM {table.name} AS w WHERE w.lease_until IS NULL"
                f" AND w.key IN (SELECT key FROM a{n} WHERE key IS NOT NULL))"
            )
            counts.append(waiting)
            args.append(ids)
            if notify:
                notifies.append(f"CASE WHEN {waiting} > 0 THEN pg_notify(${len(args) + 1}, $1) END")
                args.append(table.channel)
            acked.append(queue)
        # $1 is typed even when nothing notifies
        selects = ", ".join([*counts, *notifies, "$1::text"])
        sql = "WITH " + ",\n".join(ctes) + "\nSELECT " + selects
        return sql, args, acked
