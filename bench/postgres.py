"""PostgreSQL helpers of the harness: a fresh schema, the server's version, the floor hop.

* :func:`floor_samples`: the raw durable hop on a bare asyncpg connection: one
  transaction claims one row of a pre-filled table (``SELECT ... FOR UPDATE SKIP
  LOCKED LIMIT 1``), deletes it, inserts one row and calls ``pg_notify``.

The server is the tests' (``RUNTIME_TEST_POSTGRES_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``); each run uses a fresh schema, dropped
at the end.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from backends.postgres.connection import close_quietly, connect
from bench.procs import cpu_seconds, local_ports_to


@asynccontextmanager
async def fresh_schema(dsn: str) -> AsyncIterator[str]:
    """An empty schema with a random name, dropped (CASCADE) on exit on a new connection
    (the first may not survive a long run)."""
    schema = f"runtime_bench_{secrets.token_hex(6)}"
    admin = await connect(dsn, "public", connect_timeout=5.0, application_name="runtime-bench")
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await close_quietly(admin)
    try:
        yield schema
    finally:
        admin = await connect(dsn, "public", connect_timeout=5.0, application_name="runtime-bench")
        try:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await close_quietly(admin)


# -- the floor ---------------------------------------------------------------------------
async def server_version(dsn: str) -> str:
    conn = await connect(dsn, "public", connect_timeout=30.0, application_name="runtime-bench")
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await close_quietly(conn)


async def floor(dsn: str, schema: str, *, rounds: int = 500, warmup: int = 50) -> float:
    """Median seconds of one claim + delete + insert + notify transaction."""
    return statistics.median(await floor_samples(dsn, schema, rounds=rounds, warmup=warmup))


async def floor_samples(
    dsn: str, schema: str, *, rounds: int = 500, warmup: int = 50
) -> list[float]:
    """Seconds of each claim + delete + insert + notify transaction, after a warm-up."""
    conn = await connect(dsn, schema, connect_timeout=5.0, application_name="runtime-bench")
    try:
        await conn.execute(
            "CREATE TABLE bench_floor (id bigserial PRIMARY KEY, key text, payload bytea)"
        )
        await conn.execute(
            "INSERT INTO bench_floor (key, payload) "
            "SELECT 'k' || g, decode(repeat('78', 200), 'hex') FROM generate_series(1, 2000) g"
        )
        await conn.execute("ANALYZE bench_floor")
        claim = await conn.prepare(
            "SELECT id, key, payload FROM bench_floor ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1"
        )
        delete = await conn.prepare("DELETE FROM bench_floor WHERE id = $1")
        insert = await conn.prepare("INSERT INTO bench_floor (key, payload) VALUES ($1, $2)")
        notify = await conn.prepare("SELECT pg_notify($1, $2)")
        payload = b"x" * 200
        samples = []
        for i in range(warmup + rounds):
            began = time.perf_counter()
            async with conn.transaction():
                row = await claim.fetchrow()
                await delete.fetch(row["id"])
                await insert.fetch(row["key"], payload)
                await notify.fetch("bench_floor", "x")
            if i >= warmup:
                samples.append(time.perf_counter() - began)
        await conn.execute("DROP TABLE bench_floor")
        return samples
    finally:
        await close_quietly(conn)


# -- the server's CPU ----------------------------------------------------------------------
class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving given client processes.

    PostgreSQL serves each connection in a process of its own; which ones serve the
    measured server is found from the client side (the local ports of the processes'
    connections to the server's port, :func:`bench.procs.local_ports_to`) matched
    with ``pg_stat_activity.client_port``. Only on the same machine as the database
    (its processes' ``/proc`` entries are read); the WAL writer and the checkpointer,
    shared with whatever else uses the cluster, are not counted.
    """

    def __init__(self, dsn: str, clients: list[int]) -> None:
        self.dsn = dsn
        self.port = urlsplit(dsn).port or 5432
        self.clients = clients

    async def sample(self) -> dict[int, float]:
        """Backend pid -> its CPU seconds so far."""
        ports = sorted(local_ports_to(self.clients, self.port))
        if not ports:
            return {}
        conn = await connect(
            self.dsn, "public", connect_timeout=5.0, application_name="runtime-bench"
        )
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", ports
            )
        finally:
            await close_quietly(conn)
        return {int(r["pid"]): cpu_seconds(int(r["pid"])) for r in rows}

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds between two samples (a backend first seen in ``after`` started
        in between: all of its time counts)."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
