"""KafkaBackend: queues as topics read by consumer-group members, and the transactional
inbox as one producer transaction carrying a batch's outputs and consumed offsets.

Issue 22 (docs/architecture.md, "Kafka backend"): queues, the inbox, and
executions, flows, triggers, KV, kills and services as compacted topics read whole
(``backends.kafka.tables``); logs on a topic keyed by execution id
(``backends.kafka.logs``); the leader lock as leases ordered by a one-partition
topic (``backends.kafka.leader``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from backends.errors import Transient
from backends.kafka.executions import KafkaExecutions
from backends.kafka.leader import KafkaLeader
from backends.kafka.logs import KafkaLogs, LogTopic, log_records
from backends.kafka.members import (
    AVAILABLE_AT,
    Entry,
    Member,
    close_producer,
    encode_available_at,
)
from backends.kafka.quiet import quiet_aiokafka
from backends.kafka.settings import KafkaSettings
from backends.kafka.state import ENDED, ExecutionState
from backends.kafka.tables import BY_ID, ENCODED, EXECUTIONS, FLOWS, Table
from backends.kafka.topics import ensure_topics, queue_spec, queue_topic
from backends.memory.data import Data, Overlay, View
from backends.memory.stores import MemoryFlows, MemoryKV, MemoryTriggers
from backends.protocols import Clock, QueueMessage, ServiceInstance
from runtime.flow.states import StateType
from runtime.log import get_logger
from runtime.messages import EXECUTOR_QUEUE, LogEntry

log = get_logger(__name__)

_Items = Sequence[tuple[str | None, bytes]]
#: a record to produce: topic, key, value (None: a tombstone), headers
_Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
T = TypeVar("T")

#: the longest one producer transaction may take before it is given up (``_transact``)
TRANSACTION_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def _require_aware(when: datetime, what: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {when.isoformat()}")
    return when


def _seen(delivery: asyncio.Future[Any]) -> None:
    if not delivery.cancelled():
        delivery.exception()


class _Staged:
    """What one unit of work publishes and settles, applied at its commit."""

    def __init__(self) -> None:
        self.publishes: list[tuple[str, _Items, datetime | None]] = []
        #: queue -> entries to ack
        self.acks: dict[str, list[Entry]] = {}
        #: queue -> (entries, delay) to hand back after the commit
        self.nacks: list[tuple[str, list[Entry], float]] = []
        #: the tables as this unit of work sees them (made at its first store call)
        self.view: View | None = None
        #: the queue partition whose producer commits this unit (None: the process's)
        self.partition: tuple[Member, int] | None = None
        #: log lines appended, and the deletion markers of the log lines removed
        self.logs: list[LogEntry] = []
        self.log_deletes: list[_Record] = []


#: the unit of work open in this task: an autocommit write inside it would wait for
#: the producer lock the unit of work holds
_open: ContextVar[object | None] = ContextVar("kafka_backend_unit", default=None)


class KafkaQueues:
    """The Queues protocol: autocommit (``staged`` None) or inside one unit of work."""

    def __init__(self, backend: KafkaBackend, staged: _Staged | None = None) -> None:
        self._backend = backend
        self._staged = staged

    async def publish(
        self, queue: str, items: _Items, *, available_at: datetime | None = None
    ) -> None:
        """Append ``(key, payload)`` items; hidden until ``available_at`` if given."""
        if available_at is not None:
            _require_aware(available_at, "available_at")
        if not items:
            return
        items = [(k, bytes(p)) for k, p in items]
        if self._staged is not None:
            self._staged.publishes.append((queue, items, available_at))
            return
        backend = self._backend
        backend._refuse_inside_unit("an autocommit publish")
        await backend._ensure_topic(queue)
        await backend._produce(backend._publish_records(queue, items, available_at), {})
        member = backend._members.get(queue)
        if member is not None:
            member.wake.set()

    async def claim(
        self,
        queue: str,
        consumer: str,
        limit: int,
        lease_seconds: float,
        *,
        prefetch_executions: bool = False,
    ) -> list[QueueMessage]:
        """Lease up to ``limit`` messages of this process's partitions to ``consumer``."""
        member = await self._backend._member(queue)
        await member.catch_up()
        return member.claim(consumer, limit, lease_seconds)

    async def ack(self, queue: str, ids: Sequence[int]) -> None:
        member = await self._backend._member(queue)
        entries = member.find(ids)
        if self._staged is not None:
            self._staged.acks.setdefault(queue, []).extend(entries)
            return
        offsets = member.offsets_after(entries)
        member.remove(entries)
        await member.commit(offsets)

    async def nack(self, queue: str, ids: Sequence[int], *, delay_seconds: float = 0.0) -> None:
        member = await self._backend._member(queue)
        entries = member.find(ids)
        if self._staged is not None:
            self._staged.nacks.append((queue, entries, delay_seconds))
            return
        due = self._backend.clock() + timedelta(seconds=max(delay_seconds, 0.0))
        member.release(entries, due, count=True)

    async def requeue_consumer(self, consumer: str) -> int:
        """Release ``consumer``'s leases in this process (a dead process's partitions
        move to another member through the group instead)."""
        now = self._backend.clock()
        return sum(m.requeue(consumer, now) for m in self._backend._members.values())

    async def requeue_expired(self) -> int:
        now = self._backend.clock()
        return sum(m.requeue(None, now) for m in self._backend._members.values())

    async def depth(self, queue: str) -> int:
        """Messages waiting in this process's partitions of the queue, leased or not;
        inside a unit of work, with its own publishes and acks counted as done."""
        member = await self._backend._member(queue)
        await member.catch_up()
        count = sum(len(b) for b in member.buffers.values())
        staged = self._staged
        if staged is not None:
            count += sum(len(items) for q, items, _ in staged.publishes if q == queue)
            count -= len(staged.acks.get(queue, ()))
        return count

    async def next_available(self, queue: str) -> datetime | None:
        member = await self._backend._member(queue)
        await member.catch_up()
        return member.next_available()

    async def wait(self, queue: str, at_most: float) -> None:
        member = await self._backend._member(queue)
        await member.wait(at_most)


class _KafkaView(View):
    """A memory View over the tables, plus the kill requests (a table of task run ids)."""

    def __init__(self, data: Data, clock: Clock, kills: dict[str, bytes]) -> None:
        super().__init__(data, clock)
        self.kill_requests: Overlay[str, bytes] = Overlay(kills)


def _kills_of(view: View) -> Overlay[str, bytes]:
    assert isinstance(view, _KafkaView), "the Kafka stores run on a _KafkaView"
    return view.kill_requests


class KafkaKills:
    """The KillStore protocol: a compacted topic keyed by task run id, which every
    worker reads whole (a broadcast); a clear is a tombstone."""

    def __init__(self, session: _TableSession) -> None:
        self._session = session

    async def request(self, task_run_ids: Sequence[str]) -> None:
        def op(view: View) -> None:
            kills = _kills_of(view)
            for task_run_id in task_run_ids:
                if kills.get(task_run_id) is None:
                    kills.set(task_run_id, b"kill")

        await self._session.write(op)

    async def requested(self, task_run_ids: Sequence[str]) -> set[str]:
        if not task_run_ids:
            return set()
        return await self._session.read(
            lambda v: {i for i in task_run_ids if _kills_of(v).get(i) is not None}
        )

    async def clear(self, task_run_ids: Sequence[str]) -> None:
        def op(view: View) -> None:
            kills = _kills_of(view)
            for task_run_id in task_run_ids:
                kills.delete(task_run_id)

        await self._session.write(op)


_service_encoder = msgspec.json.Encoder()
_service_decoder = msgspec.json.Decoder(ServiceInstance)


class KafkaServices:
    """The ServiceRegistry protocol: a compacted topic keyed by instance id (each
    heartbeat a record; a removal a tombstone), read whole."""

    def __init__(self, backend: KafkaBackend, table: Table[str, bytes]) -> None:
        self._backend = backend
        self._table = table

    async def heartbeat(self, instance: ServiceInstance) -> None:
        await self._write(instance.id, _service_encoder.encode(instance))

    async def list(self) -> list[ServiceInstance]:
        await self._table.catch_up()
        return [_service_decoder.decode(raw) for _, raw in sorted(self._table.values.items())]

    async def remove(self, instance_id: str) -> None:
        await self._write(instance_id, None)

    async def _write(self, instance_id: str, value: bytes | None) -> None:
        await self._table.ensure_started()
        await self._backend._produce([(self._table.topic, instance_id.encode(), value, [])], {})


class _TableSession:
    """Runs the memory stores' operations over the tables: inside a unit of work on
    its view (its writes produced when it commits), or autocommit (a unit of its own)."""

    def __init__(self, backend: KafkaBackend, staged: _Staged | None) -> None:
        self._backend = backend
        self._staged = staged

    def staged_view(self) -> View | None:
        """The unit of work's view, once a store call made it."""
        return None if self._staged is None else self._staged.view

    async def read(self, op: Callable[[View], T]) -> T:
        if self._staged is not None:
            return op(await self._backend._view_of(self._staged))
        await self._backend._catch_up_tables()
        return op(self._backend._fresh_view())

    async def write(self, op: Callable[[View], T]) -> T:
        if self._staged is not None:
            return op(await self._backend._view_of(self._staged))
        self._backend._refuse_inside_unit("an autocommit write")
        staged = _Staged()
        async with self._backend._unit():
            result = op(await self._backend._view_of(staged))
            await self._backend._commit_unit(staged)
        return result


class KafkaStores:
    """The stores of one unit of work (or autocommit). Executions, flows, triggers and
    KV are tables (``backends.kafka.tables``); logs a topic of their own
    (``backends.kafka.logs``)."""

    def __init__(self, backend: KafkaBackend, staged: _Staged | None = None) -> None:
        session = _TableSession(backend, staged)
        self.queues = KafkaQueues(backend, staged)
        self.executions = KafkaExecutions(backend, session)
        self.flows = MemoryFlows(session)
        self.triggers = MemoryTriggers(session)
        self.kv = MemoryKV(session)
        self.logs = KafkaLogs(backend, backend._logs, staged)
        self.kills = KafkaKills(session)


class KafkaInboxBatch:
    __slots__ = ("_retry", "messages", "stores")

    def __init__(self, messages: list[QueueMessage], stores: KafkaStores) -> None:
        self.messages = messages
        self.stores = stores
        self._retry: dict[int, float] = {}

    def retry(self, messages: Sequence[QueueMessage], delay_seconds: float) -> None:
        for message in messages:
            self._retry[message.id] = delay_seconds


class KafkaInbox:
    """A consumer's inbox on a queue: a unit of work is one producer transaction
    carrying what the handler published and the offsets its batch consumed."""

    def __init__(self, backend: KafkaBackend, queue: str, consumer: str, lease: float) -> None:
        self.backend = backend
        self.queue = queue
        self.consumer = consumer
        self.lease_seconds = lease

    @contextlib.asynccontextmanager
    async def batch(self, limit: int) -> AsyncIterator[KafkaInboxBatch]:
        member = await self.backend._member(self.queue)
        await member.catch_up()
        # one partition per batch: its unit of work commits with that partition's
        # producer, which a later owner of the partition fences
        messages = member.claim(self.consumer, limit, self.lease_seconds, one_partition=True)
        entries = member.find([m.id for m in messages])
        staged = _Staged()
        batch = KafkaInboxBatch(messages, KafkaStores(self.backend, staged))
        try:
            if entries:
                staged.partition = (member, entries[0].partition)
            async with self.backend._unit():
                yield batch
                retry = batch._retry
                staged.acks.setdefault(self.queue, []).extend(
                    e for e in entries if e.id not in retry
                )
                for delay in sorted(set(retry.values())):
                    again = [e for e in entries if retry.get(e.id) == delay]
                    staged.nacks.append((self.queue, again, delay))
                await self.backend._commit_unit(staged)
        except BaseException:
            # The claim rolls back with the unit of work: claimable again at once.
            member.release(entries, self.backend.clock(), count=False)
            raise

    async def receive(self, limit: int) -> list[QueueMessage]:
        return await self.backend.queues.claim(self.queue, self.consumer, limit, self.lease_seconds)

    @contextlib.asynccontextmanager
    async def settle(self, messages: Sequence[QueueMessage]) -> AsyncIterator[KafkaStores]:
        member = await self.backend._member(self.queue)
        staged = _Staged()
        async with self.backend._unit():
            yield KafkaStores(self.backend, staged)
            entries = member.find([m.id for m in messages])
            partitions = {e.partition for e in entries}
            if len(partitions) == 1:
                staged.partition = (member, partitions.pop())
            staged.acks.setdefault(self.queue, []).extend(entries)
            await self.backend._commit_unit(staged)

    async def give_back(self, messages: Sequence[QueueMessage], delay_seconds: float = 0.0) -> None:
        await self.backend.queues.nack(
            self.queue, [m.id for m in messages], delay_seconds=delay_seconds
        )

    async def wait(self, at_most: float) -> None:
        await self.backend.queues.wait(self.queue, at_most)

    async def next_available(self) -> datetime | None:
        return await self.backend.queues.next_available(self.queue)


class KafkaBackend:
    """Queues, the transactional inbox and the tables on Kafka (aiokafka); see the
    module doc.

    A transactional producer of the instance's own (``transactional.id`` unique to
    it) for autocommit writes, and one per consumed partition for the units of work
    that consume it (``Member.producer_for``). Units of work of one process run one
    at a time (a lock).
    """

    name = "kafka"

    def __init__(self, settings: KafkaSettings, clock: Clock | None = None) -> None:
        quiet_aiokafka()
        self.settings = settings
        self._clock: Clock = clock or utc_now
        self._members: dict[str, Member] = {}
        self._topics_made: set[str] = set()
        self._producer: AIOKafkaProducer | None = None
        #: the process producer's, kept when it is renewed (the new one fences it)
        self._transactional_id = f"{settings.topic_prefix}tx.{uuid.uuid4()}"
        self._lock = asyncio.Lock()
        self._executions = Table(settings, "executions", EXECUTIONS)
        self._flows = Table(settings, "flows", FLOWS)
        self._triggers = Table(settings, "triggers", ENCODED)
        self._kv = Table(settings, "kv", ENCODED)
        self._kills = Table(settings, "kills", BY_ID)
        #: the tables a unit of work writes, in the order _commit_unit reads them
        self._tables: list[Table[Any, Any]] = [
            self._executions,
            self._flows,
            self._triggers,
            self._kv,
            self._kills,
        ]
        #: the tables a unit of work reads caught up (the executions' global reader
        #: only on demand: see ``backends.kafka.executions``)
        self._read_tables = self._tables[1:]
        self._services = Table(settings, "services", BY_ID)
        #: the running executions of the executor queue's partitions this process owns
        self.state = ExecutionState(settings)
        self._logs = LogTopic(settings)
        stores = KafkaStores(self)
        self.queues = stores.queues
        self.executions = stores.executions
        self.flows = stores.flows
        self.triggers = stores.triggers
        self.kv = stores.kv
        self.logs = stores.logs
        self.kills = stores.kills
        self.services = KafkaServices(self, self._services)
        self.leader = KafkaLeader(settings, self._clock)

    @property
    def clock(self) -> Clock:
        return self._clock

    async def start(self) -> None:
        """Start the transactional producer (InitProducerId: the broker must support
        transactions). Calling it again once started is harmless."""
        if self._producer is not None:
            return
        if not self.settings.exactly_once:
            await self._start_plain()
            return
        self._producer = await self._new_producer(self._transactional_id)

    async def _new_producer(self, transactional_id: str) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.servers,
            client_id=f"{self.settings.topic_prefix}producer",
            transactional_id=transactional_id,
            enable_idempotence=True,
            acks="all",
        )
        try:
            await producer.start()
            # InitProducerId is sent lazily: ask for it now, so a broker without
            # transactions is reported at start, not at the first publish.
            await producer.begin_transaction()
            await producer.abort_transaction()
        except KafkaConnectionError as exc:
            await producer.stop()
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: no broker answers ({exc});"
                " check that the brokers run and that `backend.bootstrap_servers`"
                " (RUNTIME_BACKEND_BOOTSTRAP_SERVERS) names them"
            ) from exc
        except KafkaError as exc:
            await producer.stop()
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: the transactional producer does"
                f" not start ({exc!r}). The backend needs a broker with idempotent and"
                " transactional producers (Kafka 0.11+ semantics, InitProducerId); check that"
                " the brokers run and support them"
            ) from exc
        return producer

    async def _start_plain(self) -> None:
        """At least once (``backend.exactly_once: false``): a plain producer, for brokers
        without transactions; ``_produce`` writes a unit's records one by one, then
        commits its offsets."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.servers,
            client_id=f"{self.settings.topic_prefix}producer",
            enable_idempotence=False,
            acks="all",
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: no broker answers ({exc!r});"
                " check that the brokers run and that `backend.bootstrap_servers`"
                " (RUNTIME_BACKEND_BOOTSTRAP_SERVERS) names them"
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        members, self._members = list(self._members.values()), {}
        for member in members:
            await member.stop()
        for table in [*self._tables, self._services]:
            await table.stop()
        await self.state.stop()
        await self._logs.stop()
        await self.leader.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.shield(close_producer(producer))

    async def _renew_producer(self, stuck: AIOKafkaProducer) -> None:
        """Replace the process's producer by one with its transactional.id, whose
        InitProducerId aborts the transaction ``stuck`` left open."""
        current = self._producer
        if current is None or current is not stuck:
            return  # renewed already
        self._producer = None
        await asyncio.shield(close_producer(current))
        self._producer = await self._new_producer(self._transactional_id)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[KafkaStores]:
        return self._transaction()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[KafkaStores]:
        """The stores bound to one producer transaction (publishes and acks)."""
        staged = _Staged()
        async with self._unit():
            yield KafkaStores(self, staged)
            await self._commit_unit(staged)

    def inbox(
        self,
        queue: str,
        consumer: str,
        *,
        lease_seconds: float,
        prefetch_executions: bool = False,
    ) -> KafkaInbox:
        return KafkaInbox(self, queue, consumer, lease_seconds)

    # -- internals ---------------------------------------------------------------------
    async def _member(self, queue: str) -> Member:
        member = self._members.get(queue)
        if member is None:
            ownership = self if queue == EXECUTOR_QUEUE else None
            member = self._members[queue] = Member(self.settings, queue, self._clock, ownership)
        await self._ensure_topic(queue)
        await member.ensure_started()
        return member

    async def assigned(self, member: Member, partitions: list[int]) -> None:
        """The executor queue's ``partitions`` are this process's now: fence their
        previous owner (start each partition's producer), then restore their state."""

        async def fence(partition: int) -> None:
            # InitProducerId on the partition's transactional id aborts what a previous
            # owner left open and fences it. The producer is not kept: one started in
            # the rebalance listener was seen (noida-db, aiokafka 0.14) to leave its
            # first transaction's batches unsent; the unit of work starts its own.
            await member.producer_for(partition)
            await member.discard_producer(partition)

        await self.state.assign(partitions, fence if self.settings.exactly_once else None)

    async def revoked(self, member: Member, partitions: list[int]) -> None:
        await self.state.revoke(partitions)

    async def _catch_up_tables(self) -> None:
        # side by side: each is a ListOffsets round trip, then a wait for the fetch
        await asyncio.gather(*(table.catch_up() for table in self._read_tables))

    def _fresh_view(self) -> View:
        """A memory View whose committed data are the tables' dicts (read live)."""
        data = Data()
        data.executions = self._executions.values
        data.flows = self._flows.values  # type: ignore[assignment]
        data.triggers = self._triggers.values  # type: ignore[assignment]
        data.kv = self._kv.values  # type: ignore[assignment]
        return _KafkaView(data, self._clock, self._kills.values)

    async def _view_of(self, staged: _Staged) -> View:
        if staged.view is None:
            await self._catch_up_tables()
            staged.view = self._fresh_view()
        return staged.view

    def _publish_records(
        self, queue: str, items: _Items, available_at: datetime | None
    ) -> list[_Record]:
        headers = (
            [] if available_at is None else [(AVAILABLE_AT, encode_available_at(available_at))]
        )
        topic = queue_topic(self.settings, queue)
        return [
            (topic, None if key is None else key.encode(), payload, headers)
            for key, payload in items
        ]

    async def _ensure_topic(self, queue: str) -> None:
        if queue in self._topics_made:
            return
        await ensure_topics(self.settings, [queue_spec(self.settings, queue)])
        self._topics_made.add(queue)

    @contextlib.asynccontextmanager
    async def _unit(self) -> AsyncIterator[None]:
        self._refuse_inside_unit("a nested unit of work")
        async with self._lock:
            token = _open.set(self)
            try:
                yield
            finally:
                _open.reset(token)

    def _refuse_inside_unit(self, what: str) -> None:
        if _open.get() is self:
            raise RuntimeError(
                f"KafkaBackend: {what} while this task has a unit of work open would"
                " deadlock; use the stores the transaction or inbox batch yielded"
            )

    async def _commit_unit(self, staged: _Staged) -> None:
        """Produce the staged records and the acked offsets in one transaction; apply
        the acks and nacks to the buffers only once it committed."""
        offsets: dict[str, dict[TopicPartition, int]] = {}
        for queue, entries in staged.acks.items():
            if entries:
                offsets[self._members[queue].group] = self._members[queue].offsets_after(entries)
        #: new executions' first records go before the messages about them (at least
        #: once, a message must not reach its reader before its execution)
        records: list[_Record] = []
        early: list[_Record] = []
        for queue, items, available_at in staged.publishes:
            await self._ensure_topic(queue)
            records += self._publish_records(queue, items, available_at)
        if staged.view is not None:
            view = staged.view
            changes: list[dict[Any, Any]] = [
                view.executions.staged(),
                view.flows.staged(),
                view.triggers.staged(),
                view.kv.staged(),
                _kills_of(view).staged(),
            ]
            for table, changed in zip(self._tables, changes, strict=True):
                if changed:
                    await table.ensure_topic()
                records += [(table.topic, k, v, []) for k, v in table.records(changed)]
            new = [
                execution_id
                for execution_id, execution in changes[0].items()
                if execution is not None and execution.state.current is StateType.CREATED
            ]
            if new:
                early = [
                    (self._executions.topic, k, v, [])
                    for k, v in self._executions.records({i: changes[0][i] for i in new})
                ]
                records = [r for r in records if r not in early]
            # an ended execution is written a last time (the indexer reads it), then
            # leaves the executors' state stores
            records += [
                (self._executions.topic, execution_id.encode(), None, [(ENDED, b"1")])
                for execution_id, execution in changes[0].items()
                if execution is not None and execution.state.current.terminated
            ]
        if staged.logs or staged.log_deletes:
            await self._logs.ensure_started()
            records += log_records(self._logs.topic, staged.logs) + staged.log_deletes
        await self._produce(early + records, offsets, staged.partition)
        woken = {queue for queue, _, _ in staged.publishes}
        for queue in woken:
            member = self._members.get(queue)
            if member is not None:
                member.wake.set()
        for queue, entries in staged.acks.items():
            self._members[queue].remove(entries)
        for queue, entries, delay in staged.nacks:
            due = self._clock() + timedelta(seconds=max(delay, 0.0))
            self._members[queue].release(entries, due, count=True)

    async def _produce(
        self,
        records: Sequence[_Record],
        offsets: dict[str, dict[TopicPartition, int]],
        partition: tuple[Member, int] | None = None,
    ) -> None:
        """Write ``records`` and commit ``offsets`` in one transaction, with the
        producer of ``partition`` (a queue partition consumed) or the process's own."""
        if not records and not any(offsets.values()):
            return
        own = self._producer
        if own is None:
            raise RuntimeError("KafkaBackend: start() the backend before using it")
        if not self.settings.exactly_once:
            await self._produce_plain(own, records, offsets)
            return
        producer: AIOKafkaProducer = own
        deliveries: list[asyncio.Future[Any]] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                if _open.get() is not self:
                    await stack.enter_async_context(self._lock)
                if partition is not None:
                    member, number = partition
                    producer = await stack.enter_async_context(member.producer_in_use(number))
                try:
                    await self._transact(producer, records, offsets, deliveries)
                except BaseException:
                    # fenced, stalled, cancelled mid-commit or in an unknown state: it
                    # may never begin another transaction, so a new producer (the same
                    # transactional id, so it fences this one) is made for the next unit
                    await asyncio.shield(self._drop_producer(partition, producer))
                    raise
        # AssertionError: aiokafka asserts its transaction states (one left half-way
        # by a cancelled commit refuses the next begin)
        except (KafkaError, TimeoutError, AssertionError) as exc:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: a transaction failed ({exc!r});"
                " it was aborted, or its outcome is unknown: the batch comes again (at least once)"
            ) from exc
        finally:
            # A failed transaction fails its records' deliveries too; the error above
            # says it once, so each delivery's own is only marked as seen.
            for delivery in deliveries:
                delivery.add_done_callback(_seen)

    async def _transact(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[_Record],
        offsets: dict[str, dict[TopicPartition, int]],
        deliveries: list[asyncio.Future[Any]],
    ) -> None:
        """One transaction, given up after ``TRANSACTION_SECONDS``: a producer whose
        first transaction's batches were never sent was seen on noida-db (after a
        broker restart, or started inside a rebalance), and waiting on it would stall
        the component for good. A stalled transaction is not aborted (the abort would
        wait on the same batches); the next producer's InitProducerId aborts it."""
        await producer.begin_transaction()
        try:
            async with asyncio.timeout(TRANSACTION_SECONDS):
                for topic, key, value, headers in records:
                    deliveries.append(
                        await producer.send(topic, value=value, key=key, headers=headers)
                    )
                for group, group_offsets in offsets.items():
                    if group_offsets:
                        await producer.send_offsets_to_transaction(group_offsets, group)
                await producer.commit_transaction()
        except TimeoutError:
            log.warning(
                "kafka.transaction_stalled",
                seconds=TRANSACTION_SECONDS,
                producer=getattr(producer.client, "_client_id", "?"),
            )
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(producer.abort_transaction())
            raise

    async def _drop_producer(
        self, partition: tuple[Member, int] | None, producer: AIOKafkaProducer
    ) -> None:
        # Left open, its transaction would hide every later record of its partitions
        # from read_committed readers (noida-db never times one out): the next
        # producer with the same transactional.id aborts it.
        if partition is not None:
            await partition[0].discard_producer(partition[1])
        else:
            await self._renew_producer(producer)

    async def _produce_plain(
        self,
        producer: AIOKafkaProducer,
        records: Sequence[_Record],
        offsets: dict[str, dict[TopicPartition, int]],
    ) -> None:
        """At least once: each record acknowledged before the next is sent (their
        order holds without an idempotent producer, and a broker whose end offsets
        count batches, as Tansu's, still answers right), then the consumed offsets
        committed. A crash in between hands the batch out again; the engine's dedup
        absorbs what it had done."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                if _open.get() is not self:
                    await stack.enter_async_context(self._lock)
                for topic, key, value, headers in records:
                    await producer.send_and_wait(topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: a write failed ({exc!r}); the"
                " batch comes again (at least once)"
            ) from exc
        members = {member.group: member for member in self._members.values()}
        for group, group_offsets in offsets.items():
            await members[group].commit(group_offsets)
