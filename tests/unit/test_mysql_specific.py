"""What only the MySQL backend promises: migrations under a named lock, claims shared by
several processes (pools) with per-key GET_LOCKs, wake-ups by adaptive polling across
backends, the GET_LOCK leader lock, and its errors. Against the real server of
``RUNTIME_TEST_MYSQL_DSN`` (the local MariaDB by default), each test in a fresh
database."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio
from click.testing import CliRunner

from backends.errors import BackendError, Conflict, Transient
from backends.mysql import MysqlBackend, migrate
from backends.mysql.backend import MIGRATIONS
from backends.mysql.connection import (
    check_version,
    close_quietly,
    key_lock_name,
    lock_name,
    query,
    run,
    translated,
)
from backends.mysql.testing import admin_connection, fresh_database
from backends.sql.migrations import SchemaTooNew
from backends.testing.base import cancel_quietly, make_execution, make_log
from backends.testing.clock import ManualClock
from backends.testing.pools import two_pools_share_no_message_nor_key
from runtime.config import load_config
from services.cli import cli
from services.standalone import make_backend

Q = "jobs"


@pytest_asyncio.fixture
async def dsn() -> AsyncIterator[str]:
    async with fresh_database() as database_dsn:
        yield database_dsn


@pytest_asyncio.fixture
async def admin() -> AsyncIterator[Any]:
    connection = await admin_connection()
    try:
        yield connection
    finally:
        await close_quietly(connection)


@pytest_asyncio.fixture
async def pair(dsn: str) -> AsyncIterator[tuple[MysqlBackend, MysqlBackend]]:
    """Two backends on one database: two pools, like two processes."""
    clock = ManualClock()
    first = MysqlBackend(dsn, clock=clock, pool_max=6)
    second = MysqlBackend(dsn, clock=clock, pool_max=6)
    await first.start()
    try:
        await second.start()
        try:
            yield first, second
        finally:
            await second.stop()
    finally:
        await first.stop()


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'root'}:{password}@{parts.hostname}:{parts.port or 3306}"
    return urlunsplit(parts._replace(netloc=netloc))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def answer(call: Callable[[], Awaitable[bool]]) -> bool:
    """The result of ``call`` once it stops failing with Transient (a dropped connection
    is noticed by the first call that uses it)."""
    for _ in range(3):
        try:
            return await call()
        except Transient:
            await asyncio.sleep(0.05)
    return await call()


# -- migrations ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_backends_starting_together_migrate_once(dsn: str, admin: Any) -> None:
    backends = [MysqlBackend(dsn) for _ in range(3)]
    try:
        await asyncio.gather(*(b.start() for b in backends))
        database = database_of(dsn)
        rows = await query(admin, f"SELECT version, name FROM {database}.schema_migrations")
        assert [tuple(row) for row in rows] == [(m.version, m.name) for m in MIGRATIONS]
        await backends[0].queues.publish(Q, [(None, b"x")])
        assert await backends[2].queues.depth(Q) == 1
    finally:
        await asyncio.gather(*(b.stop() for b in backends))
    assert await migrate(dsn) == []


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused(dsn: str, admin: Any) -> None:
    assert await migrate(dsn) == [m.version for m in MIGRATIONS]
    database = database_of(dsn)
    await run(admin, f"INSERT INTO {database}.schema_migrations VALUES (9999, 'future', 0)")
    backend = MysqlBackend(dsn)
    with pytest.raises(SchemaTooNew, match=r"schema version 9999, newer than this release"):
        await backend.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = backend.queues


def test_runtime_migrate_on_mysql(dsn: str) -> None:
    env = {"RUNTIME_BACKEND_TYPE": "mysql", "RUNTIME_BACKEND_DSN": dsn}
    result = CliRunner().invoke(cli, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "the mysql schema is up to date" in result.output
    wrong = {**env, "RUNTIME_BACKEND_DSN": with_password(dsn, "not-the-password")}
    result = CliRunner().invoke(cli, ["migrate"], env=wrong)
    assert result.exit_code == 1
    assert "access denied" in result.output
    assert "backend.dsn" in result.output
    assert "Traceback" not in result.output


def test_the_example_config_makes_a_mysql_backend(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    config = load_config(root / "config" / "medium-mysql.yml", environ={})
    backend = make_backend(config)
    assert isinstance(backend, MysqlBackend)
    assert backend.where == "127.0.0.1:3306/runtime"
    override = load_config(
        root / "config" / "medium-mysql.yml",
        environ={"RUNTIME_BACKEND_DSN": "mysql://u:p@db.example:3307/other"},
    )
    assert make_backend(override).where == "db.example:3307/other"  # type: ignore[attr-defined]


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_wrong_credentials_name_the_setting(dsn: str) -> None:
    backend = MysqlBackend(with_password(dsn, "not-the-password"), connect_timeout=5)
    with pytest.raises(BackendError, match=r"access denied.*backend\.dsn") as caught:
        await backend.start()
    assert not isinstance(caught.value, Transient)  # waiting would not fix it


@pytest.mark.asyncio
async def test_a_missing_database_names_the_setting(dsn: str) -> None:
    missing = urlunsplit(urlsplit(dsn)._replace(path="/no_such_database_here"))
    with pytest.raises(BackendError, match=r"does not exist.*backend\.dsn"):
        await MysqlBackend(missing, connect_timeout=5).start()


def test_unsupported_servers_are_refused_naming_the_setting() -> None:
    for version in ("5.7.44-log", "10.5.22-MariaDB", "10.4.1-MariaDB-1:10.4.1"):
        with pytest.raises(BackendError, match=r"needs MySQL 8\.0.*MariaDB 10\.6.*backend\.dsn"):
            check_version(version, "at db:3306/x")
    for version in ("8.0.36", "8.4.0", "10.6.0-MariaDB", "10.11.19-MariaDB-0+deb12u1", "11.4.2"):
        assert check_version(version, "at db:3306/x") == version


def test_a_dsn_that_is_not_mysql_is_refused() -> None:
    with pytest.raises(ValueError, match=r"backend\.dsn.*mysql://"):
        MysqlBackend("postgresql://root@127.0.0.1/test")
    with pytest.raises(ValueError, match=r"backend\.dsn.*names? a database"):
        MysqlBackend("mysql://root@127.0.0.1:3306/")


@pytest.mark.asyncio
async def test_unreachable_server_is_transient_and_named() -> None:
    backend = MysqlBackend("mysql://root@127.0.0.1:1/test", connect_timeout=5)
    with pytest.raises(Transient, match=r"127\.0\.0\.1:1/test.*unreachable"):
        await backend.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = backend.executions


@pytest.mark.asyncio
async def test_a_unique_violation_is_a_conflict(admin: Any, dsn: str) -> None:
    table = f"{database_of(dsn)}.t"
    await run(admin, f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    await run(admin, f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(Conflict, match="Duplicate entry"), translated("test"):
        await run(admin, f"INSERT INTO {table} VALUES (1)")


# -- queues across processes ------------------------------------------------------------
@pytest.mark.asyncio
async def test_two_pools_never_share_a_message_nor_a_key(
    pair: tuple[MysqlBackend, MysqlBackend],
) -> None:
    """Consumers on two backends, half claiming inside a transaction (the executor: its
    leases stay invisible until commit), half in autocommit, over a few hot keys."""
    async with asyncio.timeout(60):
        await two_pools_share_no_message_nor_key(pair, Q, messages=300)


@pytest.mark.asyncio
async def test_an_uncommitted_claim_holds_its_keys_for_other_pools(
    pair: tuple[MysqlBackend, MysqlBackend],
) -> None:
    first, second = pair
    await first.queues.publish(Q, [("A", b"a1"), ("A", b"a2"), ("B", b"b1")])
    async with first.transaction() as tx:
        [a1] = await tx.queues.claim(Q, "c1", limit=1, lease_seconds=60)
        assert a1.payload == b"a1"
        # a1's lease is not committed, yet the other pool may not take a2; b1 is free.
        batch = await second.queues.claim(Q, "c2", limit=10, lease_seconds=60)
        assert [m.payload for m in batch] == [b"b1"]
    assert await second.queues.claim(Q, "c2", limit=10, lease_seconds=60) == []
    await first.queues.ack(Q, [a1.id])
    [a2] = await second.queues.claim(Q, "c2", limit=10, lease_seconds=60)
    assert a2.payload == b"a2"


@pytest.mark.asyncio
async def test_key_locks_end_with_the_claiming_transaction(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any, dsn: str
) -> None:
    """A claim's GET_LOCKs end with its transaction: no pooled connection keeps one."""
    first, second = pair
    key_lock = key_lock_name(database_of(dsn), Q, "A")

    async def lock_holder() -> Any:
        return (await query(admin, "SELECT IS_USED_LOCK(%s)", (key_lock,)))[0][0]

    await first.queues.publish(Q, [("A", b"a1"), ("A", b"a2")])
    async with first.transaction() as tx:
        [a1] = await tx.queues.claim(Q, "c1", limit=1, lease_seconds=60)
        assert await lock_holder() is not None
        await tx.queues.nack(Q, [a1.id])
    assert await lock_holder() is None
    # the key is free again for anyone, in order
    [again] = await second.queues.claim(Q, "c2", limit=1, lease_seconds=60)
    assert again.payload == b"a1"
    assert await lock_holder() is None  # an autocommit claim lets go at once too

    async def claim_then_fail() -> None:
        async with second.transaction() as tx:
            assert await tx.queues.claim(Q, "c3", limit=1, lease_seconds=60) == []
            await tx.queues.nack(Q, [again.id])
            assert [m.payload for m in await tx.queues.claim(Q, "c3", 1, 60)] == [b"a1"]
            assert await lock_holder() is not None
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await claim_then_fail()
    assert await lock_holder() is None  # rolled back: released as well


@pytest.mark.asyncio
async def test_liveness_on_another_process_requeues_every_queue(
    pair: tuple[MysqlBackend, MysqlBackend],
) -> None:
    first, second = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)
    await first.queues.publish("made-by-first", [(None, b"job")])
    [job] = await first.queues.claim("made-by-first", "worker-1", 10, lease_seconds=10)
    # The other process never used that queue; its liveness check still finds it.
    assert await second.queues.requeue_consumer("worker-1") == 1
    [again] = await second.queues.claim("made-by-first", "worker-2", 10, lease_seconds=10)
    assert (again.id, again.attempts) == (job.id, 1)
    clock.advance(11)
    assert await second.queues.requeue_expired() == 1


@pytest.mark.asyncio
async def test_message_ids_stay_unique_across_queues(
    pair: tuple[MysqlBackend, MysqlBackend],
) -> None:
    first, second = pair
    await first.queues.publish("one", [(None, b"1")])
    await second.queues.publish("two", [(None, b"2")])
    [m1] = await second.queues.claim("one", "w", 1, lease_seconds=10)
    [m2] = await first.queues.claim("two", "w", 1, lease_seconds=10)
    assert m1.id != m2.id
    await first.queues.ack("two", [m1.id])  # the wrong queue: deletes nothing
    assert await first.queues.depth("one") == 1


@pytest.mark.asyncio
async def test_a_publish_on_one_backend_wakes_a_wait_on_the_other_by_polling(
    pair: tuple[MysqlBackend, MysqlBackend], dsn: str
) -> None:
    first, _ = pair
    await first.queues.publish(Q, [(None, b"warm-up")])  # the table exists
    async with MysqlBackend(
        dsn, clock=first.clock, poll_fastest=0.002, poll_busy_seconds=0.05
    ) as other:
        [warm] = await other.queues.claim(Q, "w", 1, lease_seconds=10)
        await other.queues.ack(Q, [warm.id])
        # a queue idle past its busy time backs off ...
        await asyncio.sleep(0.06)
        for _ in range(4):
            await other.queues.wait(Q, at_most=0.05)
        assert other.statistics()["polls"][Q] > 0.002
        # ... and a message from another process still ends the wait, long before at_most
        waiter = asyncio.create_task(other.queues.wait(Q, at_most=30))
        try:
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await first.queues.publish(Q, [(None, b"job")])
            await asyncio.wait_for(waiter, timeout=5)
        finally:
            await cancel_quietly(waiter)
        # finding it brought the interval back down
        assert other.statistics()["polls"][Q] == 0.002


# -- leader lock -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_leader_lock_is_exclusive_across_backends_and_dies_with_its_holder(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any
) -> None:
    first, second = pair
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)
    assert not await second.leader.acquire("scheduler", "b", ttl_seconds=30)
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)  # renew
    assert not await second.leader.acquire("scheduler", "b", ttl_seconds=30)
    # The holder's connection dies (its process died, the network went): the server
    # frees its GET_LOCK, and the lease goes with it, long before its TTL.
    connection_id = first.statistics()["leader_connection_id"]
    await run(admin, f"KILL {int(connection_id)}")
    await eventually(lambda: second.leader.acquire("scheduler", "b", ttl_seconds=30), within=5.0)
    # The old holder notices at its next renewal (a first call may find its connection
    # gone: Transient, and the next one reconnects), and is refused ...
    assert not await answer(lambda: first.leader.acquire("scheduler", "a", ttl_seconds=30))
    # ... until the new one releases it.
    await second.leader.release("scheduler", "b")
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)


@pytest.mark.asyncio
async def test_a_renewal_on_a_dropped_connection_fails_and_reconnects(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any
) -> None:
    first, _ = pair
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)
    connection_id = first.statistics()["leader_connection_id"]
    await run(admin, f"KILL {int(connection_id)}")
    with pytest.raises(Transient):
        await first.leader.acquire("scheduler", "a", ttl_seconds=30)
    # reconnected: nobody else took it, so the lock is taken again
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)
    assert first.statistics()["leader_connection_id"] != connection_id


@pytest.mark.asyncio
async def test_a_stuck_leader_loses_the_lease_after_its_ttl(
    pair: tuple[MysqlBackend, MysqlBackend],
) -> None:
    first, second = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=10)
    clock.advance(11)  # "a" stopped renewing, but its connection is alive
    assert await second.leader.acquire("scheduler", "b", ttl_seconds=10)
    assert not await first.leader.acquire("scheduler", "a", ttl_seconds=10)
    clock.advance(5)
    assert await second.leader.acquire("scheduler", "b", ttl_seconds=10)
    assert not await first.leader.acquire("scheduler", "a", ttl_seconds=10)


# -- dropped connections, logs ----------------------------------------------------------
@pytest.mark.asyncio
async def test_a_connection_dropped_mid_call_is_transient_then_replaced(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any, dsn: str
) -> None:
    first, _ = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)
    await first.executions.save(make_execution("e1", clock()))
    database = database_of(dsn)
    # Hold the call in the server (behind a table lock), then kill its connection.
    await run(admin, f"LOCK TABLES {database}.executions WRITE")
    call = asyncio.create_task(first.executions.get("e1"))
    try:

        async def blocked() -> bool:
            rows = await query(
                admin,
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE DB = %s AND INFO LIKE %s AND STATE LIKE %s",
                (database, "%FROM executions%", "%lock%"),
            )
            for row in rows:
                await run(admin, f"KILL {int(row[0])}")
            return bool(rows)

        await eventually(blocked)
        with pytest.raises(Transient, match=re.escape(first.where)):
            await asyncio.wait_for(call, timeout=5)
    finally:
        await run(admin, "UNLOCK TABLES")
        await cancel_quietly(call)
    # The pool replaces the dead connection.
    assert await answer(lambda: _readable(first, "e1"))


async def _readable(backend: MysqlBackend, execution_id: str) -> bool:
    return await backend.executions.get(execution_id) is not None


@pytest.mark.asyncio
async def test_concurrent_log_appends_from_two_backends_number_without_gaps(
    pair: tuple[MysqlBackend, MysqlBackend],
) -> None:
    first, second = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)

    async def append(backend: MysqlBackend, name: str) -> None:
        for n in range(15):
            await backend.logs.append(
                [make_log("e1", f"{name}-{n}-{i}", clock()) for i in range(3)]
                + [make_log("e2", f"{name}-{n}", clock())]
            )

    await asyncio.gather(
        append(first, "a"), append(second, "b"), append(first, "c"), append(second, "d")
    )
    e1 = await first.logs.query("e1", limit=10_000)
    assert [entry.seq for entry in e1] == list(range(1, 181))
    e2 = await second.logs.query("e2", limit=10_000)
    assert [entry.seq for entry in e2] == list(range(1, 61))


@pytest.mark.asyncio
async def test_a_claim_can_lock_and_read_its_executions(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any, dsn: str
) -> None:
    """``prefetch_executions``: the executor's get_for_update is served by the claim."""
    first, second = pair
    table = f"{database_of(dsn)}.executions"
    clock = first.clock
    assert isinstance(clock, ManualClock)
    await first.executions.save(make_execution("e1", clock()))
    await first.queues.publish(Q, [("e1", b"event"), ("nobody", b"orphan")])
    async with first.transaction() as tx:
        batch = await tx.queues.claim(Q, "x", 10, 60, prefetch_executions=True)
        assert [m.key for m in batch] == ["e1", "nobody"]
        # the claim locked e1's row already
        with pytest.raises(BackendError, match=r"(?i)lock"), translated("admin"):
            await query(admin, f"SELECT id FROM {table} WHERE id = 'e1' FOR UPDATE NOWAIT")
        execution = await tx.executions.get_for_update("e1")
        assert execution is not None
        assert execution.id == "e1"
        assert await tx.executions.get_for_update("nobody") is None
        await tx.executions.save(execution)
        await tx.queues.ack(Q, [m.id for m in batch])
    assert await second.queues.depth(Q) == 0
    assert await second.executions.get("e1") == execution


# -- named locks that do not come ---------------------------------------------------------
@pytest.mark.asyncio
async def test_a_deploy_that_cannot_get_its_flow_lock_fails_transient(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any, dsn: str
) -> None:
    """GET_LOCK answers 0 after its wait: deploying anyway could race another deploy."""
    first, _ = pair
    first._started().lock_wait_seconds = 0.2
    name = lock_name("flow", database_of(dsn), "ns", "held")
    assert await query(admin, "SELECT GET_LOCK(%s, 0)", (name,)) == [(1,)]
    try:
        with pytest.raises(Transient, match=r"deploy of flow ns\.held held its lock"):
            await first.flows.deploy("ns", "held", "id: held")
        assert await first.flows.get("ns", "held") is None
    finally:
        await query(admin, "SELECT RELEASE_LOCK(%s)", (name,))
    assert (await first.flows.deploy("ns", "held", "id: held")).revision == 1


@pytest.mark.asyncio
async def test_a_queue_table_that_cannot_get_its_lock_is_not_created(
    pair: tuple[MysqlBackend, MysqlBackend], admin: Any, dsn: str
) -> None:
    """Creating it anyway could give it the id range of a queue created meanwhile."""
    first, second = pair
    first._started().lock_wait_seconds = 0.2
    name = lock_name("queue-tables", database_of(dsn))
    assert await query(admin, "SELECT GET_LOCK(%s, 0)", (name,)) == [(1,)]
    try:
        with pytest.raises(Transient, match=r"queue tables' lock"):
            await first.queues.publish("fresh", [(None, b"m")])
    finally:
        await query(admin, "SELECT RELEASE_LOCK(%s)", (name,))
    assert await second.queues.depth("fresh") == 0
    await first.queues.publish("fresh", [(None, b"m")])
    assert await first.queues.depth("fresh") == 1
