"""One queue's consumer-group member in this process, and the leases its logical
consumers hold on what it fetched.

The group gives this process some partitions of the queue's topic; a fetch loop
(the only reader of the aiokafka consumer) appends their records to a per-partition
buffer, pausing the fetch while the buffer is full. Logical consumers (the
executor's batch loop, a worker's slots) lease messages from the buffer with the
rules of the SQL queues: a key is held while any of its messages is leased, and a
delayed message (``available-at`` header, or a nack) does not hold it. An acked
message leaves the buffer; the partition's committed offset is the first offset
still in the buffer (or the fetch position when it is empty), so offsets never move
past a message not yet handled, and a restart re-reads from there (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from backends.errors import Transient
from backends.kafka.settings import MAX_PARTITIONS, KafkaSettings
from backends.kafka.topics import queue_group, queue_topic
from backends.protocols import Clock, QueueMessage

log = logging.getLogger(__name__)

#: the header carrying a delayed message's due time (ISO 8601, UTC)
AVAILABLE_AT = "available-at"
#: stop fetching beyond this many buffered messages per member (resumed below half)
MAX_BUFFERED = 10_000
#: how long a call waits for the group to give this member its partitions, or for
#: the fetch to reach the end offsets, before it reports the brokers unreachable
SETTLE_SECONDS = 30.0


class Entry:
    """A buffered message and its lease."""

    __slots__ = (
        "attempts",
        "available_at",
        "consumer",
        "id",
        "key",
        "lease_until",
        "offset",
        "partition",
        "payload",
        "timestamp",
    )

    def __init__(
        self,
        partition: int,
        offset: int,
        timestamp: int,
        key: str | None,
        payload: bytes,
        available_at: datetime,
    ) -> None:
        self.partition = partition
        self.offset = offset
        self.id = offset * MAX_PARTITIONS + partition
        self.timestamp = timestamp
        self.key = key
        self.payload = payload
        self.available_at = available_at
        self.attempts = 0
        self.consumer: str | None = None
        self.lease_until: datetime | None = None

    def message(self, queue: str) -> QueueMessage:
        return QueueMessage(
            id=self.id, queue=queue, key=self.key, payload=self.payload, attempts=self.attempts
        )


def partition_of(message_id: int) -> int:
    return message_id % MAX_PARTITIONS


class Ownership(Protocol):
    """What else follows this member's partitions (the executor's state store)."""

    async def assigned(self, member: Member, partitions: list[int]) -> None: ...

    async def revoked(self, member: Member, partitions: list[int]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: Member) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Leases on a revoked partition are lost: the new owner re-reads the messages
        # from the committed offset (at least once).
        member = self._member
        gone = sorted(tp.partition for tp in revoked)
        for partition in gone:
            member.buffers.pop(partition, None)
            member.fetched.pop(partition, None)
            await member.discard_producer(partition)
        if member.ownership is not None and gone:
            await member.ownership.revoked(member, gone)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        member = self._member
        taken = sorted(tp.partition for tp in assigned)
        if member.ownership is not None and taken:
            # before any message of these partitions is handed out: the fetch of this
            # member waits for the listener, so nothing is claimed on missing state
            try:
                await member.ownership.assigned(member, taken)
            except Exception:
                # the batch's own catch-up retries; a partition is never skipped
                log.exception("kafka: restoring the state of %s %s failed", member.topic, taken)
        for partition in taken:
            member.buffers.setdefault(partition, {})
        member.joined.set()
        member.wake.set()


class Member:
    """This process's member of ``queue``'s consumer group, with its buffer."""

    def __init__(
        self,
        settings: KafkaSettings,
        queue: str,
        clock: Clock,
        ownership: Ownership | None = None,
    ) -> None:
        self.settings = settings
        self.ownership = ownership
        self.queue = queue
        self.topic = queue_topic(settings, queue)
        self.group = queue_group(settings, queue)
        self.clock = clock
        #: partition -> offset -> entry, in offset order
        self.buffers: dict[int, dict[int, Entry]] = {}
        #: partition -> the consumer's position after the last fetch
        self.fetched: dict[int, int] = {}
        self.joined = asyncio.Event()
        #: set by whatever may make a message claimable; cleared by ``wait``
        self.wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()
        #: partition -> the transactional producer of the units of work that consume it
        self._producers: dict[int, AIOKafkaProducer] = {}
        #: partitions whose producer a unit of work is using (inside its transaction)
        self._busy: set[int] = set()
        #: producers discarded while busy: stopped when their unit of work is done
        self._retired: dict[int, AIOKafkaProducer] = {}
        #: what ended the fetch loop, reported by the next call that needs it
        self._failure: Exception | None = None

    # -- life ------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        async with self._started:
            if self._consumer is not None:
                return
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.servers,
                group_id=self.group,
                client_id=self.group,
                isolation_level="read_committed",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # a short long-poll bounds how late a transaction marker is seen
                fetch_max_wait_ms=100,
            )
            try:
                await consumer.start()
            except KafkaError as exc:
                await consumer.stop()
                raise Transient(
                    f"Kafka at {self.settings.bootstrap_servers}: cannot read queue"
                    f" {self.queue!r} ({exc!r}); check that the brokers run"
                ) from exc
            consumer.subscribe([self.topic], listener=_Listener(self))
            self._consumer = consumer
            self._fetch = asyncio.create_task(self._fetch_loop(), name=f"kafka-fetch-{self.topic}")

    async def producer_for(self, partition: int) -> AIOKafkaProducer:
        """The transactional producer of the units of work consuming ``partition``.

        Its ``transactional.id`` is the group's and the partition's, the same in every
        process: whoever owns the partition now starts it (InitProducerId), which
        fences the producer of a previous owner still running (a zombie), so its
        transaction with the partition's offsets is refused (Kafka Streams' first
        exactly-once scheme; aiokafka sends no group generation, KIP-447)."""
        producer = self._producers.get(partition)
        if producer is not None:
            return producer
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.servers,
            client_id=f"{self.group}.{partition}",
            transactional_id=f"{self.group}.{partition}",
            enable_idempotence=True,
            acks="all",
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: the producer of queue"
                f" {self.queue!r} partition {partition} does not start ({exc!r})"
            ) from exc
        self._producers[partition] = producer
        return producer

    @contextlib.asynccontextmanager
    async def producer_in_use(self, partition: int) -> AsyncIterator[AIOKafkaProducer]:
        """The partition's producer, for one unit of work's transaction."""
        producer = await self.producer_for(partition)
        self._busy.add(partition)
        try:
            yield producer
        finally:
            self._busy.discard(partition)
            retired = self._retired.pop(partition, None)
            if retired is not None:
                await asyncio.shield(close_producer(retired))

    async def discard_producer(self, partition: int) -> None:
        """Stop the partition's producer (revoked, or fenced: it cannot be used again).

        A producer inside a unit of work's transaction (a rebalance revokes its
        partition meanwhile) stops once that unit is done: stopped now, it would
        leave the unit waiting forever for the transaction's end, holding the
        backend's lock, and the transaction open on the broker (noida-db does not
        time transactions out), hiding every later record of its partitions from
        ``read_committed`` readers."""
        producer = self._producers.pop(partition, None)
        if producer is None:
            return
        if partition in self._busy:
            self._retired[partition] = producer
            return
        await asyncio.shield(close_producer(producer))

    async def stop(self) -> None:
        for partition in list(self._producers):
            await self.discard_producer(partition)
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.cancel()
            # wait() neither raises the loop's failure (reported already) nor
            # swallows a cancellation of this caller
            await asyncio.wait({fetch})
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.shield(consumer.stop())
        self.wake.set()

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
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = self.clock()
            for tp, records in batches.items():
                buffer = self.buffers.setdefault(tp.partition, {})
                for record in records:
                    due = _due(record.headers, now, self.topic, record.offset)
                    key = (
                        None
                        if record.key is None
                        else bytes(record.key).decode(errors="backslashreplace")
                    )
                    buffer[record.offset] = Entry(
                        tp.partition,
                        record.offset,
                        record.timestamp,
                        key,
                        bytes(record.value or b""),
                        due,
                    )
            for tp in consumer.assignment():
                self.fetched[tp.partition] = await consumer.position(tp)
            if batches:
                self.wake.set()
            self._apply_backpressure(consumer)
            async with self._progress:
                self._progress.notify_all()

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        buffered = sum(len(b) for b in self.buffers.values())
        assigned = consumer.assignment()
        if buffered >= MAX_BUFFERED:
            consumer.pause(*assigned)
        elif buffered < MAX_BUFFERED // 2 and consumer.paused():
            consumer.resume(*assigned)

    async def catch_up(self) -> None:
        """Return once everything committed to this member's partitions before the
        call is in the buffer (read your writes)."""
        await self.ensure_started()
        self._raise_failure()
        consumer = self._consumer
        assert consumer is not None
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                await self.joined.wait()
                assigned = list(consumer.assignment())
                if not assigned:
                    return
                ends = await consumer.end_offsets(assigned)

                def reached() -> bool:
                    if self._failure is not None:
                        return True
                    return all(
                        self.fetched.get(tp.partition, -1) >= end
                        for tp, end in ends.items()
                        if tp.partition in self.buffers  # still ours
                    )

                async with self._progress:
                    await self._progress.wait_for(reached)
            self._raise_failure()
        except KafkaError as exc:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: queue {self.queue!r}: {exc!r}"
            ) from exc
        except TimeoutError:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: queue {self.queue!r} did not"
                f" catch up within {SETTLE_SECONDS:g} s (group {self.group!r} not settled, or"
                " the brokers are unreachable)"
            ) from None

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise Transient(
                f"Kafka: the fetch of queue {self.queue!r} stopped ({self._failure!r});"
                " restart the component"
            ) from self._failure

    # -- leases ----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every buffered message, oldest first (partitions interleaved by timestamp)."""
        every = [e for buffer in self.buffers.values() for e in buffer.values()]
        every.sort(key=lambda e: (e.timestamp, e.partition, e.offset))
        return every

    def claim(
        self, consumer: str, limit: int, lease_seconds: float, *, one_partition: bool = False
    ) -> list[QueueMessage]:
        """Lease up to ``limit`` messages; ``one_partition``: only of the partition of
        the first claimable one (a unit of work then commits with its producer)."""
        if limit <= 0:
            return []
        now = self.clock()
        pending = self.entries()
        if one_partition:
            held = {e.key for e in pending if e.consumer is not None and e.key is not None}
            first = next(
                (
                    e
                    for e in pending
                    if e.consumer is None and e.available_at <= now and e.key not in held
                ),
                None,
            )
            if first is None:
                return []
            pending = [e for e in pending if e.partition == first.partition]
        blocked = {e.key for e in pending if e.consumer is not None and e.key is not None}
        until = now + timedelta(seconds=lease_seconds)
        claimed: list[QueueMessage] = []
        for entry in pending:
            if len(claimed) >= limit:
                break
            if entry.consumer is not None or entry.key in blocked:
                continue
            if entry.available_at > now:
                continue  # a delayed message does not hold its key
            entry.consumer = consumer
            entry.lease_until = until
            claimed.append(entry.message(self.queue))
        return claimed

    def find(self, ids: Sequence[int]) -> list[Entry]:
        found = []
        for message_id in ids:
            buffer = self.buffers.get(partition_of(message_id))
            entry = None if buffer is None else buffer.get(message_id // MAX_PARTITIONS)
            if entry is not None and entry.id == message_id:
                found.append(entry)
        return found

    def offsets_after(self, acked: Iterable[Entry]) -> dict[TopicPartition, int]:
        """The offsets to commit once ``acked`` leave the buffer: per partition touched,
        the first offset still waiting, else the fetch position."""
        gone: dict[int, set[int]] = {}
        for entry in acked:
            gone.setdefault(entry.partition, set()).add(entry.offset)
        offsets = {}
        for partition, offsets_gone in gone.items():
            buffer = self.buffers.get(partition, {})
            waiting = (o for o in buffer if o not in offsets_gone)
            first = next(waiting, None)
            position = self.fetched.get(partition)
            target = first if first is not None else position
            if target is not None:
                offsets[TopicPartition(self.topic, partition)] = target
        return offsets

    def remove(self, acked: Iterable[Entry]) -> None:
        for entry in acked:
            buffer = self.buffers.get(entry.partition)
            if buffer is not None and buffer.pop(entry.offset, None) is not None and entry.key:
                self.wake.set()  # the key's next message may be claimable now

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group outside a transaction (autocommit acks)."""
        consumer = self._consumer
        if not offsets or consumer is None:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The partition moved to another member: it re-reads from the last
            # committed offset, so the message comes again (at least once).
            raise Transient(
                f"Kafka: cannot commit the offsets of queue {self.queue!r} ({exc!r});"
                " the messages will be delivered again"
            ) from exc

    def release(self, entries: Iterable[Entry], available_at: datetime, *, count: bool) -> None:
        for entry in entries:
            if entry.consumer is None:
                continue
            entry.consumer = None
            entry.lease_until = None
            entry.available_at = available_at
            if count:
                entry.attempts += 1
            self.wake.set()

    def requeue(self, consumer: str | None, now: datetime) -> int:
        """Release ``consumer``'s leases, or (None) every lease past its deadline."""
        count = 0
        for entry in self.entries():
            if entry.consumer is None:
                continue
            if consumer is None:
                if entry.lease_until is None or entry.lease_until > now:
                    continue
            elif entry.consumer != consumer:
                continue
            self.release([entry], now, count=True)
            count += 1
        return count

    def next_available(self) -> datetime | None:
        pending = self.entries()
        held = {e.key for e in pending if e.consumer is not None and e.key is not None}
        dates = [
            e.available_at
            for e in pending
            if e.consumer is None and (e.key is None or e.key not in held)
        ]
        return min(dates, default=None)

    async def wait(self, at_most: float) -> None:
        if not self.wake.is_set() and at_most > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(at_most):
                    await self.wake.wait()
        self.wake.clear()


#: how long a producer's stop may wait for its unsent batches
CLOSE_SECONDS = 5.0


async def close_producer(producer: AIOKafkaProducer) -> None:
    """Stop ``producer``; after ``CLOSE_SECONDS`` give up on its unsent batches (aiokafka's
    stop waits for every batch to be delivered, forever for a stalled transaction's)
    and close its sender and connections."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=CLOSE_SECONDS)
    if done:
        if not stopping.cancelled():
            stopping.exception()  # seen: a failed stop is a closed producer all the same
        return
    stopping.cancel()
    await asyncio.wait({stopping})
    log.warning("kafka: a producer's unsent batches were dropped at its stop (it had stalled)")
    sender = getattr(producer, "_sender", None)
    with contextlib.suppress(Exception):
        if sender is not None:
            await sender.close()
        await producer.client.close()


def _due(headers: Sequence[tuple[str, bytes]], now: datetime, topic: str, offset: int) -> datetime:
    """When a record becomes claimable: its ``available-at`` header, else now. A
    header that does not parse (another writer's record) makes it due now, with a
    warning naming the record, rather than stopping the whole queue's fetch."""
    for name, value in headers:
        if name != AVAILABLE_AT:
            continue
        try:
            due = datetime.fromisoformat(bytes(value).decode())
        except ValueError:
            due = None
        if due is None or due.tzinfo is None:
            log.warning(
                "Kafka record %s@%d: header %s=%r is not an ISO 8601 UTC date; it is"
                " handed out now",
                topic,
                offset,
                AVAILABLE_AT,
                bytes(value)[:64],
            )
            return now
        return due
    return now


def encode_available_at(when: datetime) -> bytes:
    return when.astimezone(UTC).isoformat().encode()


__all__ = ["AVAILABLE_AT", "Entry", "Member", "close_producer", "encode_available_at"]
