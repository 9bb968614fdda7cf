"""What only the PostgreSQL backend promises: migrations under a lock, claims shared by
several processes (pools), LISTEN/NOTIFY wake-ups across backends and after a dropped
connection, the advisory leader lock, and its errors. Against the real server of
``RUNTIME_TEST_POSTGRES_DSN``, each test in a fresh schema."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from backends.errors import BackendError, Conflict, Transient
from backends.postgres import PostgresBackend, migrate
from backends.postgres.backend import MIGRATIONS
from backends.postgres.connection import close_quietly, translated
from backends.postgres.testing import admin_connection, fresh_schema, server_dsn
from backends.protocols import ExecutionFilter
from backends.sql.mapping import execution_row_binary
from backends.sql.migrations import SchemaTooNew
from backends.testing.base import cancel_quietly, make_execution, make_log
from backends.testing.clock import ManualClock
from backends.testing.pools import each_once_and_in_key_order, two_pools_share_no_message_nor_key
from runtime.flow.execution import new_execution

Q = "jobs"
AT = datetime(2030, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def schema() -> AsyncIterator[str]:
    async with fresh_schema() as name:
        yield name


@pytest_asyncio.fixture
async def admin() -> AsyncIterator[Any]:
    connection = await admin_connection()
    try:
        yield connection
    finally:
        await close_quietly(connection)


@pytest_asyncio.fixture
async def pair(schema: str) -> AsyncIterator[tuple[PostgresBackend, PostgresBackend]]:
    """Two backends on one schema: two pools, two listeners, like two processes."""
    clock = ManualClock()
    first = PostgresBackend(server_dsn(), clock=clock, schema=schema, pool_max=6)
    second = PostgresBackend(server_dsn(), clock=clock, schema=schema, pool_max=6)
    await first.start()
    try:
        await second.start()
        try:
            yield first, second
        finally:
            await second.stop()
    finally:
        await first.stop()


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
async def test_migrations_apply_once_under_the_lock(schema: str, admin: Any) -> None:
    # Three processes starting at once: one applies, the others wait and find it done.
    applied = await asyncio.gather(*(migrate(server_dsn(), schema=schema) for _ in range(3)))
    assert sorted(applied) == [[], [], [m.version for m in MIGRATIONS]]
    backends = [PostgresBackend(server_dsn(), schema=schema) for _ in range(3)]
    try:
        await asyncio.gather(*(b.start() for b in backends))
    finally:
        await asyncio.gather(*(b.stop() for b in backends))
    rows = await admin.fetch(f"SELECT version, name FROM {schema}.schema_migrations")
    assert [tuple(row) for row in rows] == [(m.version, m.name) for m in MIGRATIONS]


@pytest.mark.asyncio
async def test_backends_starting_together_create_the_schema_once(admin: Any) -> None:
    schema = f"runtime_test_new_{secrets.token_hex(6)}"  # does not exist yet
    backends = [PostgresBackend(server_dsn(), schema=schema) for _ in range(3)]
    try:
        await asyncio.gather(*(b.start() for b in backends))
        rows = await admin.fetch(f"SELECT version FROM {schema}.schema_migrations")
        assert [row[0] for row in rows] == [m.version for m in MIGRATIONS]
        await backends[0].queues.publish(Q, [(None, b"x")])
        assert await backends[2].queues.depth(Q) == 1
    finally:
        await asyncio.gather(*(b.stop() for b in backends))
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused(schema: str, admin: Any) -> None:
    assert await migrate(server_dsn(), schema=schema) == [m.version for m in MIGRATIONS]
    await admin.execute(f"INSERT INTO {schema}.schema_migrations VALUES (9999, 'future', 0)")
    backend = PostgresBackend(server_dsn(), schema=schema)
    with pytest.raises(SchemaTooNew, match=r"schema version 9999, newer than this release"):
        await backend.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = backend.queues


# -- claims across processes --------------------------------------------------------------
@pytest.mark.asyncio
async def test_two_pools_never_share_a_message_nor_a_key(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    """Consumers on two backends, half claiming inside a transaction (the executor: its
    leases stay invisible until commit), half in autocommit, over a few hot keys."""
    async with asyncio.timeout(40):
        await two_pools_share_no_message_nor_key(pair, Q, messages=400)


class _RolledBack(Exception):
    pass


@pytest.mark.asyncio
async def test_executor_claims_on_two_pools_keep_keys_exclusive_and_in_order(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    """The executor's one-statement claim (prefetch_executions, no recheck) on two
    backends, over a few hot keys and with keys as execution ids, some batches rolled
    back (a crash mid-batch): no key held twice, every message once, each key in order,
    a rolled-back message before the later ones of its key."""
    first, _ = pair
    published = [(f"k{i % 4}" if i % 5 else None, f"{i:04}".encode()) for i in range(400)]
    for key in {k for k, _ in published if k is not None}:
        await first.executions.save(make_execution(key, AT))
    await first.queues.publish(Q, published)
    holding: dict[str, str] = {}
    done: list[bytes] = []
    problems: list[str] = []
    batches = 0

    async def executor(backend: PostgresBackend, consumer: str) -> None:
        nonlocal batches
        while await backend.queues.depth(Q):
            batches += 1
            roll_back = batches % 7 == 0
            batch: list[Any] = []
            try:
                async with backend.transaction() as tx:
                    batch = await tx.queues.claim(
                        Q, consumer, limit=3, lease_seconds=60, prefetch_executions=True
                    )
                    keys = {m.key for m in batch if m.key is not None}
                    for key in keys:
                        if key in holding:
                            problems.append(f"{consumer} got key {key} held by {holding[key]}")
                        holding[key] = consumer
                        if await tx.executions.get_for_update(key) is None:
                            problems.append(f"execution {key} not read with its claim")
                    await asyncio.sleep(0.002)
                    for key in keys:  # before the commit frees them
                        del holding[key]
                    if roll_back and batch:
                        raise _RolledBack
                    done.extend(m.payload for m in batch)
                    await tx.queues.ack(Q, [m.id for m in batch])
            except _RolledBack:
                pass
            if not batch:
                await backend.queues.wait(Q, at_most=0.01)

    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        for n, backend in enumerate(pair):
            for c in range(2):
                group.create_task(executor(backend, f"executor-{n}-{c}"))

    assert problems == []
    each_once_and_in_key_order(published, done)


@pytest.mark.asyncio
async def test_an_uncommitted_claim_holds_its_keys_for_other_pools(
    pair: tuple[PostgresBackend, PostgresBackend],
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
async def test_liveness_on_another_process_requeues_every_queue(
    pair: tuple[PostgresBackend, PostgresBackend],
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
async def test_a_transaction_cancelled_mid_statement_lets_go_of_everything(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    first, second = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)
    await first.executions.save(make_execution("e1", clock()))
    locked = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with first.transaction() as tx:
            await tx.executions.get_for_update("e1")
            locked.set()
            await release.wait()

    async def waiter() -> None:
        async with second.transaction() as tx:
            await tx.executions.get_for_update("e1")  # waits in the server: cancelled there
            await tx.queues.publish(Q, [(None, b"never")])

    holding = asyncio.create_task(holder())
    await asyncio.wait_for(locked.wait(), timeout=5)
    waiting = asyncio.create_task(waiter())
    try:
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, timeout=5)
        release.set()
        await asyncio.wait_for(holding, timeout=5)
    finally:
        await cancel_quietly(waiting)
        await cancel_quietly(holding)
    assert await second.queues.depth(Q) == 0
    # Both pools are whole, and the row is free again.
    async with asyncio.timeout(5), second.transaction() as tx:
        assert await tx.executions.get_for_update("e1") is not None
    stats = second.statistics()
    assert stats["pool_idle"] == stats["pool_size"]


# -- wake-ups ----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_publish_on_one_backend_wakes_a_wait_on_the_other(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    first, second = pair
    waiter = asyncio.create_task(first.queues.wait(Q, at_most=10))
    try:
        await asyncio.sleep(0.2)
        assert not waiter.done()
        published = time.monotonic()
        await second.queues.publish(Q, [(None, b"wake")])
        await asyncio.wait_for(waiter, timeout=5)
        assert time.monotonic() - published < 1.0
    finally:
        await cancel_quietly(waiter)


@pytest.mark.asyncio
@pytest.mark.parametrize("way", ["notifier", "commit"])
async def test_notifications_sent_after_the_commit_wake_the_other_backend(
    pair: tuple[PostgresBackend, PostgresBackend], way: str
) -> None:
    """The two ways a commit's notification goes out besides the statement itself
    (backends.postgres.notifier): by the notifier, for a statement committing on its
    own while another is under way; in the COMMIT's round trip, for a transaction."""
    first, second = pair
    waiter = asyncio.create_task(first.queues.wait(Q, at_most=10))
    try:
        await asyncio.sleep(0.2)
        assert not waiter.done()
        published = time.monotonic()
        core = second._started()
        if way == "notifier":
            core.alone_in_flight += 1  # as if another statement were under way
            try:
                await second.queues.publish(Q, [(None, b"wake")])
            finally:
                core.alone_in_flight -= 1
        else:
            async with second.transaction() as tx:
                await tx.queues.depth(Q)  # a read: BEGIN, so the commit is a COMMIT
                await tx.queues.publish(Q, [(None, b"wake")])
        await asyncio.wait_for(waiter, timeout=5)
        assert time.monotonic() - published < 1.0
    finally:
        await cancel_quietly(waiter)


@pytest.mark.asyncio
async def test_the_listener_reconnects_after_its_connection_is_killed(
    pair: tuple[PostgresBackend, PostgresBackend], admin: Any
) -> None:
    first, second = pair
    await first.queues.wait(Q, at_most=0.01)  # LISTEN on the queue's channel
    listener = first.statistics()["listener"]
    assert listener["connected"]
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", listener["pid"])

    async def reconnected() -> bool:
        stats = first.statistics()["listener"]
        return bool(stats["reconnects"] == 1 and stats["connected"])

    await eventually(reconnected)
    assert first.statistics()["listener"]["pid"] != listener["pid"]
    await first.queues.wait(Q, at_most=0.01)  # the reconnect woke every waiter
    waiter = asyncio.create_task(first.queues.wait(Q, at_most=10))
    try:
        await asyncio.sleep(0.1)
        assert not waiter.done()
        published = time.monotonic()
        await second.queues.publish(Q, [(None, b"after the drop")])
        await asyncio.wait_for(waiter, timeout=5)
        assert time.monotonic() - published < 1.0
    finally:
        await cancel_quietly(waiter)


@pytest.mark.asyncio
async def test_without_listen_wait_polls(schema: str) -> None:
    async with PostgresBackend(
        server_dsn(), schema=schema, listen=False, poll_seconds=0.1
    ) as backend:
        started = time.monotonic()
        await backend.queues.wait(Q, at_most=10)
        assert 0.08 <= time.monotonic() - started < 1.0


# -- leader lock -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_leader_lock_is_exclusive_across_backends_and_dies_with_its_holder(
    pair: tuple[PostgresBackend, PostgresBackend], admin: Any
) -> None:
    first, second = pair
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)
    assert not await second.leader.acquire("scheduler", "b", ttl_seconds=30)
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)  # renew
    assert not await second.leader.acquire("scheduler", "b", ttl_seconds=30)
    # The holder's process dies: its connection goes, and the lease with it, long
    # before its TTL (the clock does not move).
    pid = first.statistics()["leader_pid"]
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    await eventually(lambda: second.leader.acquire("scheduler", "b", ttl_seconds=30), within=5.0)
    # The old holder, back (a first call may find its connection gone: Transient, and
    # the next one reconnects), is refused: another one holds the lock ...
    assert not await answer(lambda: first.leader.acquire("scheduler", "a", ttl_seconds=30))
    # ... until the new one releases it.
    await second.leader.release("scheduler", "b")
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=30)


@pytest.mark.asyncio
async def test_a_stuck_leader_loses_the_lease_after_its_ttl(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    first, second = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)
    assert await first.leader.acquire("scheduler", "a", ttl_seconds=10)
    clock.advance(11)  # "a" stopped renewing, but its connection is alive
    assert await second.leader.acquire("scheduler", "b", ttl_seconds=10)
    assert not await first.leader.acquire("scheduler", "a", ttl_seconds=10)
    # "a" let go of its advisory lock: "b" now holds it, so "a" stays out even past
    # the TTL once "b" renews.
    clock.advance(5)
    assert await second.leader.acquire("scheduler", "b", ttl_seconds=10)
    assert not await first.leader.acquire("scheduler", "a", ttl_seconds=10)


# -- errors ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_unreachable_server_is_transient_and_named() -> None:
    backend = PostgresBackend("postgresql://postgres@127.0.0.1:1/test", connect_timeout=5)
    started = time.monotonic()
    with pytest.raises(Transient, match=r"127\.0\.0\.1:1/test.*unreachable"):
        await backend.start()
    assert time.monotonic() - started < 2.0
    with pytest.raises(RuntimeError, match="not started"):
        _ = backend.executions


@pytest.mark.asyncio
async def test_a_unique_violation_is_a_conflict(admin: Any, schema: str) -> None:
    await admin.execute(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY)")
    await admin.execute(f"INSERT INTO {schema}.t VALUES (1)")
    with pytest.raises(Conflict, match="duplicate key"), translated("test"):
        await admin.execute(f"INSERT INTO {schema}.t VALUES (1)")


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_call_is_transient_then_replaced(
    pair: tuple[PostgresBackend, PostgresBackend], admin: Any, schema: str
) -> None:
    first, _ = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)
    await first.executions.save(make_execution("e1", clock()))
    # Hold the call in the server (behind a table lock), then kill its connection.
    async with admin.transaction():
        await admin.execute(f"LOCK TABLE {schema}.executions IN ACCESS EXCLUSIVE MODE")
        call = asyncio.create_task(first.executions.get("e1"))
        try:

            async def blocked() -> bool:
                pids = await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'runtime' AND query LIKE '%FROM executions%'"
                )
                return bool(pids) and all(
                    [
                        await admin.fetchval("SELECT pg_terminate_backend($1)", row[0])
                        for row in pids
                    ]
                )

            await eventually(blocked)
            with pytest.raises(Transient, match=re.escape(first.where)):
                await asyncio.wait_for(call, timeout=5)
        finally:
            await cancel_quietly(call)
    # The pool replaces the dead connection.
    assert await answer(lambda: _readable(first, "e1"))


async def _readable(backend: PostgresBackend, execution_id: str) -> bool:
    return await backend.executions.get(execution_id) is not None


# -- logs ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_concurrent_log_appends_from_two_backends_number_without_gaps(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    first, second = pair
    clock = first.clock
    assert isinstance(clock, ManualClock)

    async def append(backend: PostgresBackend, name: str) -> None:
        for n in range(20):
            await backend.logs.append(
                [make_log("e1", f"{name}-{n}-{i}", clock()) for i in range(3)]
                + [make_log("e2", f"{name}-{n}", clock())]
            )

    await asyncio.gather(
        append(first, "a"), append(second, "b"), append(first, "c"), append(second, "d")
    )
    e1 = await first.logs.query("e1", limit=10_000)
    assert [entry.seq for entry in e1] == list(range(1, 241))
    e2 = await second.logs.query("e2", limit=10_000)
    assert [entry.seq for entry in e2] == list(range(1, 81))


@pytest.mark.asyncio
async def test_upgrading_fills_the_labels_of_existing_executions(schema: str, admin: Any) -> None:
    # a database at version 1, with executions saved before labels had a column
    await admin.execute(f"SET search_path TO {schema}")
    await admin.execute(MIGRATIONS[0].sql)
    await admin.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at BIGINT NOT NULL)"
    )
    await admin.execute("INSERT INTO schema_migrations VALUES (1, $1, 0)", MIGRATIONS[0].name)
    for execution_id, labels in (("a", {"env": "prod", "team": "x"}), ("b", {"env": "dev"})):
        execution = new_execution(
            id=execution_id, namespace="ns", flow_id="f", flow_revision=1, at=AT, labels=labels
        )
        await admin.execute(
            "INSERT INTO executions VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *execution_row_binary(execution)[:7],
        )
    await admin.execute("SET search_path TO public")
    async with PostgresBackend(server_dsn(), schema=schema) as backend:
        found, total = await backend.executions.find(
            ExecutionFilter(labels=(("env", "prod"), ("team", "x")))
        )
        assert ([e.id for e in found], total) == (["a"], 1)
        found, _ = await backend.executions.find(ExecutionFilter(labels=(("env", "dev"),)))
        assert [e.id for e in found] == ["b"]


# -- deferred writes and the claim's prefetch -----------------------------------------
@pytest.mark.asyncio
async def test_prefetched_execution_is_locked_and_saves_are_read_back(
    pair: tuple[PostgresBackend, PostgresBackend], admin: Any, schema: str
) -> None:
    backend, _ = pair
    created = make_execution("locked", AT)
    await backend.executions.save(created)
    await backend.queues.publish("events", [("locked", b"e1"), ("absent", b"e2")])
    async with backend.transaction() as tx:
        claimed = await tx.queues.claim("events", "c", 10, 30, prefetch_executions=True)
        assert [m.key for m in claimed] == ["locked", "absent"]
        # another session cannot lock the row: the claim holds it
        with pytest.raises(Exception, match="could not obtain lock"):
            await admin.fetch(
                f"SELECT 1 FROM {schema}.executions WHERE id = 'locked' FOR UPDATE NOWAIT"
            )
        assert await tx.executions.get_for_update("locked") == created
        assert await tx.executions.get_for_update("absent") is None
        # a save in the transaction is what it reads next, prefetched or not
        moved = msgspec.structs.replace(created, flow_revision=7)
        await tx.executions.save(moved)
        assert await tx.executions.get_for_update("locked") == moved
        await tx.queues.ack("events", [m.id for m in claimed])
    assert await backend.executions.get("locked") == moved
    assert await backend.queues.depth("events") == 0


@pytest.mark.asyncio
async def test_deferred_writes_failing_at_commit_roll_everything_back(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    backend, _ = pair
    await backend.queues.publish("jobs", [(None, b"job")])
    async with backend.transaction() as tx:
        (job,) = await tx.queues.claim("jobs", "w", 1, 30)

    async def refused() -> None:
        async with backend.transaction() as tx:
            await tx.kv.set("ns", "written", 1)  # sent at once
            await tx.queues.ack("jobs", [job.id])  # held back...
            await tx.queues.publish("events", [("k", b"result")])
            # ...with a save PostgreSQL refuses (text cannot hold NUL)
            await tx.executions.save(make_execution("bad\x00id", AT))

    with pytest.raises(BackendError):
        await refused()
    assert await backend.kv.get("ns", "written") is None
    assert await backend.queues.depth("jobs") == 1
    assert await backend.queues.depth("events") == 0


@pytest.mark.asyncio
async def test_a_transaction_of_deferred_writes_only_is_atomic(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    backend, other = pair
    await backend.queues.publish("jobs", [(None, b"job")])
    (job,) = await backend.queues.claim("jobs", "w", 1, 30)
    # the worker's report: ack the job and publish its result (no BEGIN is sent)
    async with backend.transaction() as tx:
        await tx.queues.publish("events", [("e", b"result")])
        await tx.queues.ack("jobs", [job.id])
    assert await other.queues.depth("jobs") == 0
    (result,) = await other.queues.claim("events", "x", 5, 30)
    assert result.payload == b"result"

    async def refused() -> None:
        async with backend.transaction() as tx:
            await tx.queues.publish("events", [("e", b"never")])
            await tx.executions.save(make_execution("bad\x00id", AT))

    with pytest.raises(BackendError):
        await refused()
    assert await other.queues.depth("events") == 1  # only the claimed result


@pytest.mark.asyncio
async def test_an_ack_wakes_consumers_only_when_a_message_waits_behind_the_key(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    backend, _ = pair
    await backend.queues.publish("events", [("a", b"1"), ("b", b"1"), ("b", b"2")])
    first = await backend.queues.claim("events", "c", 2, 30)
    assert [(m.key, m.payload) for m in first] == [("a", b"1"), ("b", b"1")]
    waiting = backend._started().wakeup("events")
    waiting.clear()
    await backend.queues.ack("events", [first[0].id])  # nothing waits behind "a"
    assert not waiting.is_set()
    await backend.queues.ack("events", [first[1].id])  # ("b", 2) waits behind "b"
    assert waiting.is_set()
    (second,) = await backend.queues.claim("events", "c", 10, 30)
    assert (second.key, second.payload) == ("b", b"2")


@pytest.mark.asyncio
async def test_an_autocommit_claims_lighter_commit_does_not_leak_to_the_connection(
    pair: tuple[PostgresBackend, PostgresBackend],
) -> None:
    """queue_claim_autocommit turns synchronous_commit off for its own transaction only:
    every pooled connection is back to the server's setting for the next statement."""
    backend, _ = pair
    await backend.queues.publish("jobs", [(None, f"{n}".encode()) for n in range(20)])
    claims = [backend.queues.claim("jobs", f"w{n}", 2, 30) for n in range(6)]
    claimed = [m for batch in await asyncio.gather(*claims) for m in batch]
    assert len(claimed) == 12
    pool = backend._started().pool
    connections = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        for connection in connections:
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
    finally:
        for connection in connections:
            await pool.release(connection)
    # the leases it committed hold: a later claim gets the other 8 messages only
    rest = await backend.queues.claim("jobs", "late", 20, 30)
    assert sorted(m.id for m in rest + claimed) == sorted({m.id for m in rest + claimed})
    assert len(rest) == 8
