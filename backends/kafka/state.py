"""The executor's execution state, per owned partition (issue 22, "Execution state").

The executor's inbox queue and the compacted ``t.executions`` topic (the changelog)
have the same partition count and key (the execution id), so an execution's events
and its state share a partition number. When the group gives this process a
partition of the inbox, :class:`ExecutionState` first fences the partition's
previous owner (its transactional producer is started here, which aborts whatever
the old one left open), then restores the same partition of the changelog from its
start to its end offset (``read_committed``) into a local store, and from then on
tails it: every later record of the partition, this process's own writes and other
processes' (the webserver's submissions, restarts), lands in the store in log order.
A read first catches its partition up to the end offset of the moment, so it sees
every write committed before it. On revocation the partition's store is dropped.

An ended execution is written a last time and then tombstoned (with an ``ended``
header) in the same transaction, so the store holds what is running and a restore
reads running executions, not the installation's history. Global readers of the
changelog (``backends.kafka.tables``) keep the last value of such a tombstone: the
webserver's get-by-id of an ended execution works until the search store serves it.

Where the store lives is a setting (``backend.state_store``): ``memory`` (a dict of
encoded executions per partition, decoded on read) or ``sqlite`` (a file under
``backend.state_dir``, written and read on aiosqlite's thread, for state larger
than memory). The file is a cache: it is emptied at start and rebuilt from the
changelog, so losing it costs a restore, never data.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

import aiosqlite
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from backends.errors import Transient
from backends.kafka.settings import KafkaSettings
from backends.kafka.topics import TopicSpec, ensure_topics, table_topic
from runtime.flow.execution import Execution

log = logging.getLogger(__name__)

#: the header of the tombstone that follows an ended execution's last record
ENDED = "ended"
#: how long a catch-up waits before it reports the brokers unreachable
SETTLE_SECONDS = 30.0

_decode = msgspec.json.Decoder(Execution).decode


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a keyed record (murmur2, as the
    Java client and aiokafka do): where an execution's events and state go."""
    return (int(murmur2(key.encode())) & 0x7FFFFFFF) % partitions


def ended_tombstone(headers: Iterable[tuple[str, bytes]]) -> bool:
    return any(name == ENDED for name, _ in headers)


class PartitionStore(Protocol):
    """Where one process keeps its partitions' running executions (encoded)."""

    async def open(self) -> None: ...

    async def apply(self, partition: int, changes: list[tuple[str, bytes | None]]) -> None:
        """Apply records in log order (None: remove the key)."""
        ...

    async def get(self, partition: int, key: str) -> bytes | None: ...

    async def drop(self, partition: int) -> None: ...

    async def count(self, partition: int) -> int: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Encoded executions in a dict per partition (decoded on read: a restore only
    copies bytes)."""

    def __init__(self) -> None:
        self._partitions: dict[int, dict[str, bytes]] = {}

    async def open(self) -> None:
        return None

    async def apply(self, partition: int, changes: list[tuple[str, bytes | None]]) -> None:
        store = self._partitions.setdefault(partition, {})
        for key, value in changes:
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value

    async def get(self, partition: int, key: str) -> bytes | None:
        return self._partitions.get(partition, {}).get(key)

    async def drop(self, partition: int) -> None:
        self._partitions.pop(partition, None)

    async def count(self, partition: int) -> int:
        return len(self._partitions.get(partition, {}))

    async def close(self) -> None:
        self._partitions.clear()


class SqliteStore:
    """Encoded executions in a SQLite file (one per process; a cache of the changelog,
    so it is not fsynced and is emptied when opened)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=OFF")
        await db.execute("DROP TABLE IF EXISTS state")
        await db.execute(
            "CREATE TABLE state (partition INTEGER NOT NULL, id TEXT NOT NULL,"
            " value BLOB NOT NULL, PRIMARY KEY (partition, id)) WITHOUT ROWID"
        )
        await db.commit()
        self._db = db

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"the state store {self.path} is not open")
        return self._db

    async def apply(self, partition: int, changes: list[tuple[str, bytes | None]]) -> None:
        db = self._conn()
        # in log order: a key set then removed in one batch ends removed
        for key, value in changes:
            if value is None:
                await db.execute(
                    "DELETE FROM state WHERE partition = ? AND id = ?", (partition, key)
                )
            else:
                await db.execute(
                    "INSERT OR REPLACE INTO state (partition, id, value) VALUES (?, ?, ?)",
                    (partition, key, value),
                )
        await db.commit()

    async def get(self, partition: int, key: str) -> bytes | None:
        async with self._conn().execute(
            "SELECT value FROM state WHERE partition = ? AND id = ?", (partition, key)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else bytes(row[0])

    async def drop(self, partition: int) -> None:
        db = self._conn()
        await db.execute("DELETE FROM state WHERE partition = ?", (partition,))
        await db.commit()

    async def count(self, partition: int) -> int:
        async with self._conn().execute(
            "SELECT count(*) FROM state WHERE partition = ?", (partition,)
        ) as cursor:
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()
            await asyncio.to_thread(self._remove_files)

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def make_store(settings: KafkaSettings) -> PartitionStore:
    if settings.state_store == "sqlite":
        folder = Path(settings.state_dir or ".")
        return SqliteStore(folder / f"{settings.topic_prefix}state-{uuid.uuid4().hex[:12]}.db")
    return MemoryStore()


class ExecutionState:
    """The owned partitions of the changelog, restored and tailed into a store."""

    def __init__(self, settings: KafkaSettings, store: PartitionStore | None = None) -> None:
        self.settings = settings
        self.topic = table_topic(settings, "executions")
        self.store = store or make_store(settings)
        #: the partitions this process owns (assigned to its inbox member)
        self.owned: set[int] = set()
        #: partition -> the position the store has applied up to
        self._applied: dict[int, int] = {}
        #: partition -> seconds its last restore took, and how many executions it holds
        self.restored: dict[int, tuple[float, int]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._failure: Exception | None = None
        self._lock = asyncio.Lock()

    def owns(self, execution_id: str) -> bool:
        return self.partition_of(execution_id) in self.owned

    def partition_of(self, execution_id: str) -> int:
        return partition_for(execution_id, self.settings.partitions)

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        await ensure_topics(
            self.settings,
            [
                TopicSpec(
                    name=self.topic,
                    partitions=self.settings.partitions,
                    config={"cleanup.policy": "compact"},
                )
            ],
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.servers,
            client_id=f"{self.topic}.state",
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
            await consumer.topics()  # the metadata that names the partitions
            await self.store.open()
        except KafkaError as exc:
            await consumer.stop()
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: cannot read the executions"
                f" changelog {self.topic!r} ({exc!r}); check that the brokers run"
            ) from exc
        self._consumer = consumer
        return consumer

    async def assign(
        self, partitions: Iterable[int], fence: Callable[[int], Awaitable[object]] | None = None
    ) -> None:
        """Take ``partitions``: fence their previous owner (``fence``), then restore
        each from the changelog's start to its end offset."""
        new = sorted(set(partitions) - self.owned)
        if not new:
            return
        async with self._lock:
            consumer = await self._start()
            if fence is not None:
                for partition in new:
                    await fence(partition)
            await self._stop_fetch()
            for partition in new:
                await self.store.drop(partition)
                self._applied.pop(partition, None)
            self.owned.update(new)
            self._reassign(consumer)
            await consumer.seek_to_beginning(
                *(TopicPartition(self.topic, partition) for partition in new)
            )
            self._start_fetch()
        started = time.perf_counter()
        await self.catch_up(new)
        took = time.perf_counter() - started
        for partition in new:
            count = await self.store.count(partition)
            self.restored[partition] = (took, count)
            log.info(
                "kafka.state_restored partition=%d executions=%d seconds=%.3f",
                partition,
                count,
                took,
            )

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Give ``partitions`` up: their store goes (the next owner restores them)."""
        gone = sorted(set(partitions) & self.owned)
        if not gone:
            return
        async with self._lock:
            await self._stop_fetch()
            self.owned.difference_update(gone)
            for partition in gone:
                self._applied.pop(partition, None)
                self.restored.pop(partition, None)
                await self.store.drop(partition)
            if self._consumer is not None:
                self._reassign(self._consumer)
            self._start_fetch()

    def _reassign(self, consumer: AIOKafkaConsumer) -> None:
        # assign() forgets every position: the kept partitions go back to what the
        # store applied (a record applied twice is the same write, in the same order)
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(self.owned)])
        for partition, position in self._applied.items():
            consumer.seek(TopicPartition(self.topic, partition), position)

    def _start_fetch(self) -> None:
        if self.owned and self._consumer is not None:
            self._failure = None
            self._fetch = asyncio.create_task(self._fetch_loop(), name=f"kafka-state-{self.topic}")

    async def _stop_fetch(self) -> None:
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.cancel()
            await asyncio.wait({fetch})

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    changes: list[tuple[str, bytes | None]] = []
                    for record in records:
                        if record.key is None:
                            continue
                        key = bytes(record.key).decode(errors="backslashreplace")
                        changes.append((key, None if record.value is None else record.value))
                    await self.store.apply(tp.partition, changes)
                for tp in consumer.assignment():
                    self._applied[tp.partition] = await consumer.position(tp)
                async with self._progress:
                    self._progress.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = exc
            async with self._progress:
                self._progress.notify_all()
            raise

    async def catch_up(self, partitions: Iterable[int]) -> None:
        """Return once every record committed to ``partitions`` before the call is in
        the store (read your writes, and the restore)."""
        consumer = self._consumer
        wanted = [TopicPartition(self.topic, p) for p in partitions if p in self.owned]
        if consumer is None or not wanted:
            return
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                ends = await consumer.end_offsets(wanted)
                async with self._progress:
                    await self._progress.wait_for(
                        lambda: (
                            self._failure is not None
                            or all(
                                self._applied.get(tp.partition, -1) >= end
                                for tp, end in ends.items()
                                if tp.partition in self.owned
                            )
                        )
                    )
        except KafkaError as exc:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: the executions changelog: {exc!r}"
            ) from exc
        except TimeoutError:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: the executions changelog"
                f" {self.topic!r} did not catch up within {SETTLE_SECONDS:g} s; check that"
                " the brokers run"
            ) from None
        if self._failure is not None:
            raise Transient(
                f"Kafka: the read of the executions changelog stopped ({self._failure!r});"
                " restart the component"
            ) from self._failure

    async def get(self, execution_id: str) -> Execution | None:
        """The running execution from the store, caught up first; None when this
        process does not hold it (ended, never created, or another's partition)."""
        partition = self.partition_of(execution_id)
        if partition not in self.owned:
            return None
        await self.catch_up([partition])
        raw = await self.store.get(partition, execution_id)
        return None if raw is None else _decode(raw)

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_fetch()
            consumer, self._consumer = self._consumer, None
            self.owned.clear()
            self._applied.clear()
            if consumer is not None:
                await asyncio.shield(consumer.stop())
                await self.store.close()


__all__ = [
    "ENDED",
    "ExecutionState",
    "MemoryStore",
    "PartitionStore",
    "SqliteStore",
    "ended_tombstone",
    "make_store",
    "partition_for",
]
