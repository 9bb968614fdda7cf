"""What only the SQLite backend promises: its file, its schema, its durability, its
error translation, and the shared SQL helpers it is built on."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from backends.errors import BackendError, Transient
from backends.protocols import ExecutionFilter
from backends.sql.mapping import execution_row, queue_table
from backends.sql.migrations import Migration, SchemaTooNew, load_migrations, pending
from backends.sql.queries import QueueQueries, parse_queries
from backends.sqlite import SqliteBackend
from backends.sqlite.backend import MIGRATIONS, split_statements
from backends.testing.base import make_execution
from backends.testing.clock import ManualClock
from runtime.flow.execution import new_execution
from runtime.flow.states import StateType

T = TypeVar("T")
AT = datetime(2030, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


# -- helpers: a second, plain sqlite3 connection, used off the event loop ------------
async def outside(path: Path, op: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``op`` on a fresh sqlite3 connection to ``path`` in a worker thread."""

    def run() -> T:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            return op(connection)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


async def rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return await outside(path, lambda c: c.execute(sql, params).fetchall())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runtime.db"


@pytest_asyncio.fixture
async def backend(db: Path) -> AsyncIterator[SqliteBackend]:
    backend = SqliteBackend(db, clock=ManualClock())
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


# -- schema and migrations -----------------------------------------------------------
@pytest.mark.asyncio
async def test_migrations_are_applied_once_and_recorded(db: Path) -> None:
    async with SqliteBackend(db):
        pass
    first = await rows(db, "SELECT version, name, applied_at FROM schema_migrations")
    assert [(v, n) for v, n, _ in first] == [(m.version, m.name) for m in MIGRATIONS]
    assert first[0][:2] == (1, "initial")
    async with SqliteBackend(db):
        pass
    assert await rows(db, "SELECT version, name, applied_at FROM schema_migrations") == first


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused_with_a_clear_error(db: Path) -> None:
    async with SqliteBackend(db):
        pass
    await rows(db, "INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)")
    backend = SqliteBackend(db)
    with pytest.raises(SchemaTooNew, match=r"schema version 9999, newer than this release"):
        await backend.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = backend.executions


@pytest.mark.asyncio
async def test_upgrading_fills_the_labels_of_existing_executions(db: Path) -> None:
    # a database at version 1, with executions saved before labels had a column
    def version_1(connection: sqlite3.Connection) -> None:
        for statement in split_statements(MIGRATIONS[0].sql):
            connection.execute(statement)
        connection.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at INTEGER NOT NULL)"
        )
        connection.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (MIGRATIONS[0].name,))
        for execution_id, labels in (("a", {"env": "prod", "team": "x"}), ("b", {"env": "dev"})):
            execution = new_execution(
                id=execution_id, namespace="ns", flow_id="f", flow_revision=1, at=AT, labels=labels
            )
            row = execution_row(execution)[:7]
            connection.execute("INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    await outside(db, version_1)
    async with SqliteBackend(db) as backend:
        found, total = await backend.executions.find(
            ExecutionFilter(labels=(("env", "prod"), ("team", "x")))
        )
        assert ([e.id for e in found], total) == (["a"], 1)
        found, _ = await backend.executions.find(ExecutionFilter(labels=(("env", "dev"),)))
        assert [e.id for e in found] == ["b"]


@pytest.mark.asyncio
async def test_reopening_keeps_data(db: Path) -> None:
    execution = make_execution("e1", AT, StateType.RUNNING)
    async with SqliteBackend(db) as first:
        await first.executions.save(execution)
        await first.flows.deploy("ns", "f", "id: f")
        await first.queues.publish("worker", [(None, b"one")])
        [one] = await first.queues.claim("worker", "w", 10, 60)
        await first.queues.ack("worker", [one.id])
        await first.queues.publish("worker", [(None, b"two")])
    async with SqliteBackend(db) as second:
        assert await second.executions.get("e1") == execution
        flow = await second.flows.get("ns", "f")
        assert flow is not None
        assert flow.source == "id: f"
        [two] = await second.queues.claim("worker", "w", 10, 60)
        assert two.payload == b"two"
        # Ids keep growing across restarts, even after the queue emptied.
        assert two.id > one.id


# -- durability, isolation, pragmas ---------------------------------------------------
@pytest.mark.asyncio
async def test_a_committed_transaction_is_in_the_file(backend: SqliteBackend, db: Path) -> None:
    async with backend.transaction() as tx:
        await tx.executions.save(make_execution("e1", AT))
        await tx.queues.publish("worker", [(None, b"job")])
    assert await rows(db, "SELECT id, state FROM executions") == [("e1", "CREATED")]
    assert await rows(db, "SELECT payload FROM queue_worker") == [(b"job",)]


@pytest.mark.asyncio
async def test_a_rolled_back_transaction_leaves_nothing(backend: SqliteBackend, db: Path) -> None:
    async def fail() -> None:
        async with backend.transaction() as tx:
            await tx.executions.save(make_execution("e1", AT))
            await tx.executions.get("e1")  # sent to the database, not only buffered
            await tx.queues.publish("worker", [(None, b"job")])
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail()
    assert await rows(db, "SELECT id FROM executions") == []
    # the queue's table was created by that transaction only: gone with it
    assert await rows(db, "SELECT name FROM sqlite_master WHERE name = 'queue_worker'") == []
    await backend.queues.publish("worker", [(None, b"later")])
    assert await backend.queues.depth("worker") == 1


@pytest.mark.asyncio
async def test_an_open_transaction_is_invisible_outside(backend: SqliteBackend, db: Path) -> None:
    async with backend.transaction() as tx:
        await tx.executions.save(make_execution("e1", AT))
        assert await tx.executions.get("e1") is not None
        # the backend's own reads use a snapshot of committed data, without waiting
        async with asyncio.timeout(2):
            assert await backend.executions.get("e1") is None
        assert await rows(db, "SELECT id FROM executions") == []
    assert await backend.executions.get("e1") is not None


@pytest.mark.asyncio
async def test_committed_data_survives_kill_9(db: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from datetime import UTC, datetime
        from backends.sqlite import SqliteBackend
        from backends.testing.base import make_execution

        async def main():
            backend = SqliteBackend({str(db)!r})
            await backend.start()
            async with backend.transaction() as tx:
                await tx.executions.save(make_execution("e1", datetime.now(UTC)))
                await tx.queues.publish("worker", [(None, b"job")])
            print("committed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert stdout == b"committed\n"
    assert process.returncode == -signal.SIGKILL
    async with SqliteBackend(db) as reopened:
        assert await reopened.executions.get("e1") is not None
        [job] = await reopened.queues.claim("worker", "w", 10, 60)
        assert job.payload == b"job"


@pytest.mark.asyncio
async def test_wal_and_synchronous_full_by_default(backend: SqliteBackend) -> None:
    writer = backend._started().writer
    settings = await writer.run(
        lambda c: [
            c.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        ]
    )
    assert settings == ["wal", 2, 1, 5000]  # synchronous 2 = FULL


@pytest.mark.asyncio
async def test_synchronous_normal_is_an_option(db: Path) -> None:
    async with SqliteBackend(db, synchronous="NORMAL") as backend:
        writer = backend._started().writer
        assert await writer.run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1
    with pytest.raises(ValueError, match="synchronous must be FULL or NORMAL"):
        SqliteBackend(db, synchronous="SOMETIMES")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_an_in_memory_database_works_without_a_reader() -> None:
    async with SqliteBackend(":memory:") as backend:
        async with backend.transaction() as tx:
            await tx.executions.save(make_execution("e1", AT))
            await tx.queues.publish("worker", [(None, b"job")])
        assert await backend.executions.get("e1") is not None
        [job] = await backend.queues.claim("worker", "w", 10, 60)
        assert job.payload == b"job"


# -- errors ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_database_locked_is_transient(db: Path) -> None:
    async with SqliteBackend(db, busy_timeout=0.05) as backend:
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        try:
            await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
            with pytest.raises(Transient, match="locked"):
                await backend.executions.save(make_execution("e1", AT))
            with pytest.raises(Transient, match="locked"):
                async with backend.transaction() as tx:
                    await tx.executions.save(make_execution("e1", AT))
            await asyncio.to_thread(holder.execute, "ROLLBACK")
        finally:
            await asyncio.to_thread(holder.close)
        # once the lock is gone, the backend works again
        await backend.executions.save(make_execution("e1", AT))
        assert await backend.executions.get("e1") is not None


@pytest.mark.asyncio
async def test_autocommit_write_inside_a_transaction_fails_instead_of_hanging(
    backend: SqliteBackend,
) -> None:
    async with asyncio.timeout(5), backend.transaction():
        with pytest.raises(RuntimeError, match="already runs a SQLite transaction"):
            await backend.executions.save(make_execution("e1", AT))


@pytest.mark.asyncio
async def test_stores_of_an_ended_transaction_refuse_work(backend: SqliteBackend) -> None:
    async with backend.transaction() as tx:
        pass
    with pytest.raises(RuntimeError, match="transaction is over"):
        await tx.executions.save(make_execution("e1", AT))


@pytest.mark.asyncio
async def test_stopped_backend_says_so(db: Path) -> None:
    backend = SqliteBackend(db)
    await backend.start()
    queues = backend.queues
    await backend.stop()
    with pytest.raises(BackendError, match="stopped"):
        await queues.publish("worker", [(None, b"x")])


# -- queues -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_queue_tables_stay_empty_after_ack(backend: SqliteBackend, db: Path) -> None:
    await backend.queues.publish("worker", [(None, str(i).encode()) for i in range(100)])
    while batch := await backend.queues.claim("worker", "w", 7, 60):
        await backend.queues.ack("worker", [m.id for m in batch])
    assert await rows(db, "SELECT COUNT(*) FROM queue_worker") == [(0,)]
    tables = await rows(db, "SELECT name FROM sqlite_master WHERE name LIKE 'queue_%'")
    assert tables == [("queue_worker",)]


@pytest.mark.asyncio
async def test_each_queue_has_its_table_and_its_own_id_range(
    backend: SqliteBackend, db: Path
) -> None:
    await backend.queues.publish("executor", [("e1", b"a")])
    await backend.queues.publish("odd name/with-chars", [(None, b"b")])
    [a] = await backend.queues.claim("executor", "c", 10, 60)
    [b] = await backend.queues.claim("odd name/with-chars", "c", 10, 60)
    assert a.id != b.id
    await backend.queues.ack("executor", [b.id])  # the wrong queue: nothing happens
    assert await backend.queues.depth("odd name/with-chars") == 1
    names = {name for (name,) in await rows(db, "SELECT name FROM sqlite_master")}
    assert {"queue_executor", queue_table("odd name/with-chars")} <= names


@pytest.mark.asyncio
async def test_wait_does_not_lose_a_publish_made_before_it(backend: SqliteBackend) -> None:
    # A consumer claims nothing, the producer publishes, then the consumer waits:
    # the wake-up is not lost in between.
    assert await backend.queues.claim("worker", "w", 10, 60) == []
    await backend.queues.publish("worker", [(None, b"job")])
    async with asyncio.timeout(1):
        await backend.queues.wait("worker", at_most=30)


@pytest.mark.asyncio
async def test_a_transaction_of_blind_writes_is_one_hop(backend: SqliteBackend) -> None:
    await backend.queues.publish("executor", [("e1", b"event")])
    [event] = await backend.queues.claim("executor", "x", 10, 60)
    await backend.queues.publish("worker", [(None, b"warm")])  # the table exists
    writer = backend._started().writer
    hops = 0
    run = writer.run

    async def counting(op: Any) -> Any:
        nonlocal hops
        hops += 1
        return await run(op)

    writer.run = counting  # type: ignore[method-assign]
    async with backend.transaction() as tx:
        await tx.executions.save(make_execution("e1", AT))
        await tx.queues.publish("worker", [(None, b"job")])
        await tx.queues.ack("executor", [event.id])
    assert hops == 1
    assert await backend.queues.depth("executor") == 0


# -- the shared SQL helpers -----------------------------------------------------------
def test_named_queries_parse_and_complain() -> None:
    queries = parse_queries(
        "-- header\n-- name: one\nSELECT 1;\n-- a section\n\n-- name: two\nSELECT 2"
    )
    assert dict(queries) == {"one": "SELECT 1", "two": "SELECT 2"}
    with pytest.raises(KeyError, match="no query named 'three' in <string>"):
        queries["three"]
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: one\nSELECT 1\n-- name: one\nSELECT 2")
    with pytest.raises(ValueError, match="before the first"):
        parse_queries("SELECT 0\n-- name: one\nSELECT 1")
    with pytest.raises(KeyError, match="lacks the queries missing"):
        QueueQueries(queries, ("one", "missing"))


def test_queue_queries_render_safe_table_names_only() -> None:
    queries = QueueQueries(
        parse_queries("-- name: depth\nSELECT COUNT(*) FROM {table}"), ("depth",)
    )
    assert queries.for_table("queue_a")["depth"] == "SELECT COUNT(*) FROM queue_a"
    with pytest.raises(ValueError, match="unsafe table name"):
        queries.for_table("queue_a; DROP TABLE executions")
    assert queue_table("executor") == "queue_executor"
    assert queue_table("Executor") != queue_table("executor")
    assert queue_table("a-b").startswith("queue_a_b_")


def test_pending_migrations_and_newer_databases() -> None:
    available = [Migration(1, "a", ""), Migration(2, "b", "")]
    assert [m.version for m in pending(available, [], database="x")] == [1, 2]
    assert [m.version for m in pending(available, [1], database="x")] == [2]
    assert pending(available, [1, 2], database="x") == []
    with pytest.raises(SchemaTooNew, match="the database x has schema version 3"):
        pending(available, [1, 2, 3], database="x")


def test_shipped_migrations_are_numbered_and_split_cleanly() -> None:
    migrations = load_migrations("backends.sqlite.migrations")
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    statements = split_statements(migrations[0].sql)
    assert all(sqlite3.complete_statement(s) for s in statements)
    assert any("CREATE TABLE executions" in s for s in statements)
    with pytest.raises(ValueError, match="incomplete SQL statement"):
        split_statements("CREATE TABLE a (x);\nCREATE TABLE b (")
