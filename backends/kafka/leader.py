"""The leader lock on Kafka: leases decided by the order of a one-partition topic.

Every ``acquire`` and ``release`` is a record (key: the lock's name) appended to a
single-partition topic; every process replays that one log in the same order with
the same rule, so all reach the same verdict on each record without asking one
another: an acquire wins when the lock is free, held by the same holder, or its
lease ended before the acquire's time; it then holds the lock until that time plus
its TTL. A caller appends its record and reads the log up to it to learn its
verdict. A dead holder is simply not renewing: its lease runs out and the next
acquire wins, so nothing depends on the broker expiring a consumer-group member
(noida-db does not), and nothing needs transactions (Tansu has none): the records
are plain ``acks=all`` writes, and a duplicate of one by a retry is a renewal.

Times are the callers' clocks (the backend's clock), so the hosts' clocks must
agree to well within a TTL (NTP), as for the SQL backends' leases. The topic keeps
six hours of records (``topics.leader_spec``), far longer than any lease: a process
starting after older records were deleted replays from where retention left off,
and any difference that makes to its view ends with the leases of those old records.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from backends.errors import Transient
from backends.kafka.settings import KafkaSettings
from backends.kafka.tables import SETTLE_SECONDS
from backends.kafka.topics import ensure_topics, leader_spec
from backends.protocols import Clock


class _Claim(msgspec.Struct, frozen=True, kw_only=True):
    holder: str
    #: "acquire" or "release"
    op: str
    at: datetime
    ttl_seconds: float = 0.0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Claim)


class KafkaLeader:
    """The LeaderLock protocol on the leader topic (see the module doc)."""

    def __init__(self, settings: KafkaSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        self._topic = leader_spec(settings).name
        self._tp = TopicPartition(self._topic, 0)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        #: lock name -> (holder, end of its lease), as replayed so far
        self._held: dict[str, tuple[str, datetime]] = {}
        self._read = 0
        #: offsets of this process's acquires waiting for their verdict -> the verdict
        self._verdicts: dict[int, bool | None] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lock; False while another holder's lease is alive."""
        claim = _Claim(holder=holder, op="acquire", at=self._clock(), ttl_seconds=ttl_seconds)
        return await self._append(name, claim)

    async def release(self, name: str, holder: str) -> None:
        await self._append(name, _Claim(holder=holder, op="release", at=self._clock()))

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        consumer, self._consumer = self._consumer, None
        if producer is not None:
            await asyncio.shield(producer.stop())
        if consumer is not None:
            await asyncio.shield(consumer.stop())

    async def _append(self, name: str, claim: _Claim) -> bool:
        async with self._lock:
            try:
                async with asyncio.timeout(SETTLE_SECONDS):
                    producer, consumer = await self._started()
                    sent = await producer.send_and_wait(
                        self._topic, _encoder.encode(claim), key=name.encode(), partition=0
                    )
                    self._verdicts[sent.offset] = None
                    try:
                        while self._read <= sent.offset:
                            batches = await consumer.getmany(self._tp, timeout_ms=200)
                            for record in batches.get(self._tp, ()):
                                self._apply(record.offset, record.key, record.value)
                            self._read = await consumer.position(self._tp)
                        return bool(self._verdicts[sent.offset])
                    finally:
                        self._verdicts.pop(sent.offset, None)
            except KafkaError as exc:
                raise Transient(
                    f"Kafka at {self.settings.bootstrap_servers}: the leader lock {name!r}:"
                    f" {exc!r}; check that the brokers run"
                ) from exc
            except TimeoutError:
                raise Transient(
                    f"Kafka at {self.settings.bootstrap_servers}: the leader lock {name!r} got"
                    f" no answer within {SETTLE_SECONDS:g} s; check that the brokers run"
                ) from None

    def _apply(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        """The one rule every process replays, record by record, in log order."""
        if key is None or value is None:
            return
        try:
            claim = _decoder.decode(value)
        except msgspec.DecodeError:
            return  # not a claim: ignored by every reader alike
        name = bytes(key).decode()
        current = self._held.get(name)
        won = False
        if claim.op == "acquire":
            if current is None or current[0] == claim.holder or current[1] <= claim.at:
                self._held[name] = (claim.holder, claim.at + timedelta(seconds=claim.ttl_seconds))
                won = True
        elif claim.op == "release" and current is not None and current[0] == claim.holder:
            del self._held[name]
        if offset in self._verdicts:
            self._verdicts[offset] = won

    async def _started(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
        if self._producer is not None and self._consumer is not None:
            return self._producer, self._consumer
        await ensure_topics(self.settings, [leader_spec(self.settings)])
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.servers,
            client_id=f"{self._topic}.producer",
            acks="all",
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.servers,
            client_id=f"{self._topic}.reader",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        try:
            await producer.start()
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
        except BaseException:
            await asyncio.shield(producer.stop())
            await asyncio.shield(consumer.stop())
            raise
        self._producer, self._consumer = producer, consumer
        return producer, consumer
