"""The raw database floor: one durable queue hop on a bare driver connection.

A hop is what moving one message costs at the very least: in one transaction,
claim the oldest row of a pre-filled table, delete it, insert one row (and, on
PostgreSQL, ``pg_notify``), commit. A task costs several hops in the server (the
job to the worker, its result back, the engine's next step), so every other
figure is also reported as a multiple of this one, measured in the same run on the
same disk.

* PostgreSQL: asyncpg, ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1`` (see
  :func:`bench.postgres.floor`).
* MySQL/MariaDB: aiomysql, the same claim, InnoDB's default durability
  (``innodb_flush_log_at_trx_commit`` is reported with the figure).
* SQLite: the backend's own connection class (``backends.sqlite.connection``) with
  its settings: WAL, ``synchronous=FULL``, one ``BEGIN IMMEDIATE`` transaction sent
  to the database thread as one op.
* Kafka: a consume -> transactional produce hop on bare aiokafka clients, when
  a broker is configured (:mod:`bench.kafka`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from backends.postgres.testing import server_dsn
from bench import kafka, postgres
from bench.model import Result, percentile
from bench.targets import FLOOR

#: the MySQL/MariaDB server of the tests and the benchmark
MYSQL_DSN_VARIABLE = "RUNTIME_TEST_MYSQL_DSN"
MYSQL_DEFAULT_DSN = "mysql://root@127.0.0.1:3306/test"
_PAYLOAD = b"x" * 200
#: aiomysql 0.3 cannot escape bytes with PyMySQL >= 1.1; the same 200 bytes as text
_TEXT = "x" * 200
_PREFILL = 2000


def mysql_dsn() -> str:
    return os.environ.get(MYSQL_DSN_VARIABLE) or MYSQL_DEFAULT_DSN


def mysql_connect_kwargs(dsn: str) -> dict[str, Any]:
    """aiomysql.connect arguments from a ``mysql://user:password@host:port/db`` DSN."""
    parts = urlsplit(dsn)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/") or "test",
        "autocommit": False,
    }


def _result(backend: str, samples: list[float], settings: dict[str, Any]) -> Result:
    hop_ms = statistics.median(samples) * 1e3
    p90 = percentile(samples, 0.90)
    assert p90 is not None, f"no {backend} floor samples"
    return Result(
        measure=FLOOR,
        backend=backend,
        settings={"rounds": len(samples), **settings},
        figures={
            "hop_ms": hop_ms,
            "hop_p90_ms": p90 * 1e3,
            "hops_per_s": 1e3 / hop_ms,
        },
        floor_ms=hop_ms,
    )


async def postgres_floor(*, rounds: int = 500) -> Result:
    dsn = server_dsn()
    async with postgres.fresh_schema(dsn) as schema:
        version = await postgres.server_version(dsn)
        samples = await postgres.floor_samples(dsn, schema, rounds=rounds, warmup=min(50, rounds))
    return _result("postgres", samples, {"server_version": version, "driver": "asyncpg"})


async def mysql_floor(*, rounds: int = 500, warmup: int = 50) -> Result:
    import aiomysql  # type: ignore[import-untyped]  # only this measure needs it

    dsn = mysql_dsn()
    conn = await aiomysql.connect(**mysql_connect_kwargs(dsn), connect_timeout=5)
    table = f"bench_floor_{os.getpid()}"
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
            version, flush = await cur.fetchone()
            await cur.execute(
                f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                " k VARCHAR(64) NOT NULL, payload BLOB) ENGINE=InnoDB"
            )
            await cur.executemany(
                f"INSERT INTO {table} (k, payload) VALUES (%s, %s)",
                [(f"k{i}", _TEXT) for i in range(_PREFILL)],
            )
            await conn.commit()
            samples = []
            for i in range(warmup + rounds):
                began = time.perf_counter()
                await conn.begin()
                await cur.execute(
                    f"SELECT id, k, payload FROM {table} ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                )
                row = await cur.fetchone()
                await cur.execute(f"DELETE FROM {table} WHERE id = %s", (row[0],))
                await cur.execute(
                    f"INSERT INTO {table} (k, payload) VALUES (%s, %s)", (row[1], _TEXT)
                )
                await conn.commit()
                if i >= warmup:
                    samples.append(time.perf_counter() - began)
            await cur.execute(f"DROP TABLE {table}")
            await conn.commit()
    finally:
        conn.close()
    return _result(
        "mysql",
        samples,
        {
            "server_version": str(version),
            "driver": "aiomysql",
            "innodb_flush_log_at_trx_commit": int(flush),
        },
    )


async def sqlite_floor(*, rounds: int = 500, warmup: int = 50) -> Result:
    import sqlite3

    from backends.sqlite.connection import Connection, in_transaction

    def setup(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE floor (id INTEGER PRIMARY KEY, k TEXT NOT NULL, payload BLOB)")
        c.executemany(
            "INSERT INTO floor (k, payload) VALUES (?, ?)",
            [(f"k{i}", _PAYLOAD) for i in range(_PREFILL)],
        )

    def hop(c: sqlite3.Connection) -> None:
        row = c.execute("SELECT id, k, payload FROM floor ORDER BY id LIMIT 1").fetchone()
        c.execute("DELETE FROM floor WHERE id = ?", (row[0],))
        c.execute("INSERT INTO floor (k, payload) VALUES (?, ?)", (row[1], _PAYLOAD))

    with tempfile.TemporaryDirectory(prefix="runtime-bench-floor-") as scratch:
        conn = await Connection.open(Path(scratch) / "floor.db", synchronous="FULL", busy_timeout=5)
        try:
            await conn.run(in_transaction(setup))
            step = in_transaction(hop)
            samples = []
            for i in range(warmup + rounds):
                began = time.perf_counter()
                await conn.run(step)
                if i >= warmup:
                    samples.append(time.perf_counter() - began)
        finally:
            await conn.close()
    return _result(
        "sqlite",
        samples,
        {
            "library_version": sqlite3.sqlite_version,
            "driver": "aiosqlite",
            "journal_mode": "WAL",
            "synchronous": "FULL",
        },
    )


async def measure(backend: str, *, rounds: int) -> Result:
    if backend == "postgres":
        return await postgres_floor(rounds=rounds)
    if backend == "mysql":
        return await mysql_floor(rounds=rounds, warmup=min(50, rounds))
    if backend == "sqlite":
        return await sqlite_floor(rounds=rounds, warmup=min(50, rounds))
    if backend == "kafka":
        return await kafka.floor(rounds=rounds, warmup=min(50, rounds))
    raise ValueError(f"no floor for backend {backend!r}")
