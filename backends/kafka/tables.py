"""Compacted topics read whole into a dict: the stores' tables (global tables).

Every process reads every partition of a table's topic (no consumer group,
``read_committed``) into memory; a record with no value (a tombstone) removes its
key. Writes are records produced in a unit of work's transaction; a read first
catches up with the topic's end offsets, so it sees every write committed before
it (its own included). The operations over the dicts are the memory backend's
(``backends.memory.stores``), run on a memory ``View`` whose committed data are
these dicts: one implementation of each store's rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from backends.errors import Transient
from backends.kafka.settings import KafkaSettings
from backends.kafka.state import ended_tombstone
from backends.kafka.topics import TopicSpec, ensure_topics, table_topic
from backends.memory.data import FlowEntry
from runtime.flow.execution import Execution

K = TypeVar("K")
V = TypeVar("V")

#: how long a read waits to catch up before it reports the brokers unreachable
SETTLE_SECONDS = 30.0


class Codec(Generic[K, V]):
    """How a table's keys and values become record keys and values."""

    def __init__(
        self,
        key: Callable[[K], bytes],
        key_back: Callable[[bytes], K],
        value: Callable[[V], bytes],
        value_back: Callable[[bytes], V],
    ) -> None:
        self.key, self.key_back, self.value, self.value_back = key, key_back, value, value_back


_json = msgspec.json.Encoder()
_tuple = msgspec.json.Decoder(tuple[str, ...])


def _raw(value: bytes) -> bytes:
    return bytes(value)


def _tuple_key(key: tuple[str, ...]) -> bytes:
    return _json.encode(key)


def _tuple_back(raw: bytes) -> tuple[str, ...]:
    return _tuple.decode(raw)


EXECUTIONS: Codec[str, Execution] = Codec(
    str.encode, bytes.decode, _json.encode, msgspec.json.Decoder(Execution).decode
)
FLOWS: Codec[tuple[str, ...], FlowEntry] = Codec(
    _tuple_key, _tuple_back, _json.encode, msgspec.json.Decoder(FlowEntry).decode
)
#: triggers and KV entries are kept encoded by the memory stores already
ENCODED: Codec[tuple[str, ...], bytes] = Codec(_tuple_key, _tuple_back, _raw, _raw)
#: kill requests and service instances: keyed by id, values as they are
BY_ID: Codec[str, bytes] = Codec(str.encode, bytes.decode, _raw, _raw)


class Table(Generic[K, V]):
    """One compacted topic, read whole into ``values``."""

    def __init__(self, settings: KafkaSettings, name: str, codec: Codec[K, V]) -> None:
        self.settings = settings
        self.name = name
        self.topic = table_topic(settings, name)
        self.codec = codec
        self.values: dict[K, V] = {}
        self._fetched: dict[int, int] = {}
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()
        self._topic_made = False
        #: what ended the fetch loop, reported by the next call that needs it
        self._failure: Exception | None = None

    def spec(self) -> TopicSpec:
        return TopicSpec(
            name=self.topic,
            partitions=self.settings.partitions,
            config={"cleanup.policy": "compact"},
        )

    async def ensure_topic(self) -> None:
        """Create the topic if it is missing (a write may come before any read)."""
        if not self._topic_made:
            await ensure_topics(self.settings, [self.spec()])
            self._topic_made = True

    async def ensure_started(self) -> None:
        async with self._started:
            if self._consumer is not None:
                return
            await self.ensure_topic()
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.servers,
                client_id=self.topic,
                isolation_level="read_committed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,
            )
            try:
                await consumer.start()
                await consumer.topics()  # the metadata that names the partitions
                partitions = consumer.partitions_for_topic(self.topic) or set()
                if not partitions:
                    raise Transient(f"Kafka: topic {self.topic!r} has no partitions")
                consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
            except (KafkaError, Transient) as exc:
                await consumer.stop()
                raise Transient(
                    f"Kafka at {self.settings.bootstrap_servers}: cannot read table"
                    f" {self.topic!r} ({exc!r}); check that the brokers run"
                ) from exc
            self._consumer = consumer
            self._fetch = asyncio.create_task(self._fetch_loop(), name=f"kafka-table-{self.topic}")

    async def stop(self) -> None:
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.cancel()
            # wait() neither raises the loop's failure (reported already) nor
            # swallows a cancellation of this caller
            await asyncio.wait({fetch})
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.shield(consumer.stop())

    async def _fetch_loop(self) -> None:
        """Fetch until stopped; a failure is kept for the next caller (never lost)."""
        try:
            await self._fetch_forever()
        except Exception as exc:
            self._failure = exc
            async with self._progress:
                self._progress.notify_all()
            raise

    async def _fetch_forever(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        codec = self.codec
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for record in records:
                    if record.key is None:
                        continue  # not ours: every table record is keyed
                    key = codec.key_back(bytes(record.key))
                    if record.value is None:
                        if not ended_tombstone(record.headers):
                            self.values.pop(key, None)
                        # else: an ended execution leaves the executors' state
                        # stores; a global reader keeps its last value
                    else:
                        self.values[key] = codec.value_back(bytes(record.value))
            for tp in consumer.assignment():
                self._fetched[tp.partition] = await consumer.position(tp)
            async with self._progress:
                self._progress.notify_all()

    async def catch_up(self) -> None:
        """Return once every record committed before the call is in ``values``."""
        await self.ensure_started()
        consumer = self._consumer
        assert consumer is not None
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                ends = await consumer.end_offsets(list(consumer.assignment()))
                async with self._progress:
                    await self._progress.wait_for(
                        lambda: (
                            self._failure is not None
                            or all(
                                self._fetched.get(tp.partition, -1) >= e for tp, e in ends.items()
                            )
                        )
                    )
            if self._failure is not None:
                raise Transient(
                    f"Kafka: the fetch of table {self.topic!r} stopped ({self._failure!r});"
                    " restart the component"
                ) from self._failure
        except KafkaError as exc:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: table {self.topic!r}: {exc!r}"
            ) from exc
        except TimeoutError:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: table {self.topic!r} did not"
                f" catch up within {SETTLE_SECONDS:g} s; check that the brokers run"
            ) from None

    def records(self, changes: dict[Any, Any]) -> list[tuple[bytes, bytes | None]]:
        """The records that write ``changes`` (key -> value, None for a deletion)."""
        codec = self.codec
        return [
            (codec.key(key), None if value is None else codec.value(value))
            for key, value in changes.items()
        ]
