"""What every backend provides, as typing.Protocols.

A backend bundles the stores and queues the services need. Each attribute of
:class:`Backend` works on its own (every call commits by itself); ``transaction()``
gives the same attributes bound to one transaction, so the executor can lock an
execution, save it, publish the messages its commands produce and ack the events
it consumed, all or nothing (the transactional outbox of DESIGN §5).

Times are timezone-aware UTC datetimes. Backends read "now" from the ``clock``
they were built with, so tests can move time (leases, TTLs, delayed messages).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime
from typing import Any, Literal, Protocol

import msgspec

from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

Clock = Callable[[], datetime]


# -- records ----------------------------------------------------------------------
class QueueMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed message: ack it, or nack it to have it delivered again."""

    id: int
    queue: str
    key: str | None
    payload: bytes
    #: deliveries before this one (a nack or an expired lease counts one)
    attempts: int = 0


class FlowRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One revision of a flow's source."""

    namespace: str
    id: str
    revision: int
    source: str
    updated: datetime
    deleted: bool = False


class TriggerState(msgspec.Struct, frozen=True, kw_only=True):
    """What the scheduler remembers of one trigger between ticks and restarts."""

    namespace: str
    flow_id: str
    trigger_id: str
    #: the next date this trigger is due (None: not scheduled)
    next_date: datetime | None = None
    #: the last date it fired for
    last_date: datetime | None = None
    disabled: bool = False
    #: the flow revision the state was computed for
    flow_revision: int | None = None
    #: free-form state of the trigger type (backfill progress, ...)
    data: dict[str, Any] = {}


class KVEntry(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    key: str
    value: Any
    updated: datetime
    expires_at: datetime | None = None


class ServiceInstance(msgspec.Struct, frozen=True, kw_only=True):
    """A running component, as its heartbeats describe it."""

    id: str
    kind: str  #: executor, worker, scheduler, webserver, ...
    state: str  #: a runtime.actors.ServiceState value
    host: str
    pid: int
    started: datetime
    heartbeat: datetime
    info: dict[str, Any] = {}


class ExecutionFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What an execution search filters on (the API's query parameters); ``None``
    and empty mean "any". Every condition given must hold."""

    #: this namespace or any below it ("company" matches "company" and "company.team")
    namespace: str | None = None
    flow_id: str | None = None
    states: tuple[StateType, ...] | None = None
    #: start date at or after
    started_after: datetime | None = None
    #: start date strictly before
    started_before: datetime | None = None
    #: ``(key, value)`` pairs, each of which must be among the execution's labels
    labels: tuple[tuple[str, str], ...] = ()
    #: case-insensitive substring of the execution id, namespace or flow id
    query: str | None = None


#: the fields an execution search can sort on; ties are broken by id, in the same
#: direction. An execution without an end date sorts as the earliest end date.
ExecutionSortField = Literal["start_date", "end_date", "id", "namespace", "flow_id", "state"]


class LogFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a log search (or a deletion by query) selects; ``None`` means "any".
    Every condition given must hold."""

    #: this namespace or any below it, as :class:`ExecutionFilter`
    namespace: str | None = None
    #: False: ``namespace`` alone, not those below it
    below: bool = True
    flow_id: str | None = None
    execution_id: str | None = None
    task_id: str | None = None
    task_run_id: str | None = None
    attempt: int | None = None
    #: this level and the more severe ones (TRACE, DEBUG, INFO, WARN, ERROR)
    min_level: str | None = None
    #: exactly these levels (Kestra's PurgeLogs ``logLevels``); WARN and WARNING are one
    levels: tuple[str, ...] | None = None
    #: timestamp at or after
    after: datetime | None = None
    #: timestamp strictly before
    before: datetime | None = None
    #: case-insensitive substring of the message
    query: str | None = None


class DailyCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many executions that started on ``day`` (UTC) are now in ``state``."""

    day: date
    state: StateType
    count: int


# -- capabilities -------------------------------------------------------------------
class Queues(Protocol):
    """Durable queues: at-least-once delivery with leases.

    Messages with a ``key`` are handed out in publication order, and never while
    another message with the same key is leased: the executor sees one execution's
    events in order, one batch at a time.
    """

    async def publish(
        self,
        queue: str,
        items: Sequence[tuple[str | None, bytes]],
        *,
        available_at: datetime | None = None,
    ) -> None:
        """Append ``(key, payload)`` items; hidden until ``available_at`` if given."""
        ...

    async def claim(
        self,
        queue: str,
        consumer: str,
        limit: int,
        lease_seconds: float,
        *,
        prefetch_executions: bool = False,
    ) -> list[QueueMessage]:
        """Lease up to ``limit`` available messages to ``consumer``, oldest first.

        ``prefetch_executions`` says the keys are execution ids the caller will
        ``get_for_update`` next, in the same transaction, and that it acks or nacks
        every message it claimed before that transaction commits (the executor): a
        backend may lock and read the executions with the claim and rely on no lease
        of the queue ever being committed (fewer round trips), or ignore the hint."""
        ...

    async def ack(self, queue: str, ids: Sequence[int]) -> None:
        """Delete the messages: they were handled."""
        ...

    async def nack(self, queue: str, ids: Sequence[int], *, delay_seconds: float = 0.0) -> None:
        """Release the leases; the messages come back (after ``delay_seconds``)."""
        ...

    async def requeue_consumer(self, consumer: str) -> int:
        """Release every lease ``consumer`` holds (it died); returns how many."""
        ...

    async def requeue_expired(self) -> int:
        """Release every lease past its deadline; returns how many."""
        ...

    async def depth(self, queue: str) -> int:
        """Messages in the queue, leased or not."""
        ...

    async def next_available(self, queue: str) -> datetime | None:
        """When the earliest message not leased becomes visible (None: queue empty)."""
        ...

    async def wait(self, queue: str, at_most: float) -> None:
        """Return when something may have been published to ``queue``, or after
        ``at_most`` seconds. A hint only: callers claim to find out."""
        ...


class ExecutionStore(Protocol):
    async def get(self, execution_id: str) -> Execution | None: ...

    async def get_for_update(self, execution_id: str) -> Execution | None:
        """In a transaction: the execution, locked until the transaction ends."""
        ...

    async def save(self, execution: Execution) -> None:
        """Insert or replace."""
        ...

    async def delete(self, execution_id: str) -> bool: ...

    async def search(
        self,
        *,
        namespace: str | None = None,
        flow_id: str | None = None,
        states: Sequence[StateType] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Execution]:
        """Newest first."""
        ...

    async def find(
        self,
        where: ExecutionFilter,
        *,
        sort: ExecutionSortField = "start_date",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Execution], int]:
        """One page of the executions matching ``where``, and how many match in all."""
        ...

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        """Executions matching ``where``, counted per UTC start day and current
        state; ordered by day then state name. Days without executions are absent."""
        ...

    async def count_running(self, namespace: str, flow_id: str) -> int:
        """Executions of the flow that hold a concurrency slot (started, not ended)."""
        ...

    async def oldest_queued(self, namespace: str, flow_id: str) -> str | None:
        """The id of the flow's oldest QUEUED execution."""
        ...


class FlowStore(Protocol):
    async def deploy(self, namespace: str, flow_id: str, source: str) -> FlowRecord:
        """Store ``source`` as the flow's next revision; the same source as the latest
        revision is not a new revision (returns the latest)."""
        ...

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        """A revision, or the latest one; deleted flows only by explicit revision."""
        ...

    async def list(self, namespace: str | None = None) -> list[FlowRecord]:
        """The latest revision of every flow not deleted, by namespace then id."""
        ...

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]: ...

    async def delete(self, namespace: str, flow_id: str) -> bool:
        """Mark the flow deleted (its revisions stay, for executions that use them)."""
        ...


class LogStore(Protocol):
    async def append(self, entries: Sequence[LogEntry]) -> None:
        """Store entries, numbering them per execution (``seq``) in arrival order."""
        ...

    async def query(
        self,
        execution_id: str,
        *,
        task_run_id: str | None = None,
        min_level: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LogEntry]:
        """Entries with ``seq`` > ``after_seq``, in order."""
        ...

    async def find(
        self, where: LogFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[LogEntry], int]:
        """One page of the entries matching ``where`` over every execution, newest
        first (timestamp, then execution id, then ``seq``, all descending), and how
        many match in all."""
        ...

    async def delete(self, where: LogFilter) -> int:
        """Remove the entries matching ``where``; how many went. The numbering of the
        entries that stay does not change."""
        ...


class TriggerStore(Protocol):
    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None: ...

    async def save(self, state: TriggerState) -> None: ...

    async def list(self, namespace: str | None = None) -> list[TriggerState]: ...

    async def delete(self, namespace: str, flow_id: str, trigger_id: str) -> bool: ...


class KVStore(Protocol):
    async def get(self, namespace: str, key: str) -> KVEntry | None:
        """The entry, unless missing or expired."""
        ...

    async def set(
        self, namespace: str, key: str, value: Any, *, ttl_seconds: float | None = None
    ) -> KVEntry: ...

    async def delete(self, namespace: str, key: str) -> bool: ...

    async def list(self, namespace: str) -> list[KVEntry]:
        """Entries not expired, by key."""
        ...


class KillStore(Protocol):
    """Kill requests for task runs, seen by every worker (a broadcast, not a queue)."""

    async def request(self, task_run_ids: Sequence[str]) -> None: ...

    async def requested(self, task_run_ids: Sequence[str]) -> set[str]:
        """Which of ``task_run_ids`` have a kill request."""
        ...

    async def clear(self, task_run_ids: Sequence[str]) -> None: ...


class ServiceRegistry(Protocol):
    async def heartbeat(self, instance: ServiceInstance) -> None:
        """Insert or refresh."""
        ...

    async def list(self) -> list[ServiceInstance]: ...

    async def remove(self, instance_id: str) -> None: ...


class LeaderLock(Protocol):
    async def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lock; False while another holder's lease is alive."""
        ...

    async def release(self, name: str, holder: str) -> None: ...


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    """What storage knows of one file besides its bytes."""

    uri: str
    size: int
    #: the metadata given to ``put`` (text keys and values)
    metadata: dict[str, str] = {}


class Storage(Protocol):
    """Internal storage for files (task outputs, FILE inputs, namespace files).

    URIs look like ``kestra:///namespace/path`` whatever the store behind. A path can
    never leave its namespace (``..``, absolute paths, NUL, encoded separators,
    overlong names and symlinks out are refused with ValueError). A missing file is
    NotFound; an unreachable store is Transient. Content is streamed in bounded
    chunks both ways: no call but ``get`` holds a whole file in memory.
    """

    async def start(self) -> None:
        """Connect and check the settings (the bucket exists, the credentials work);
        a wrong setting is a ConfigError naming it. Calling it twice is harmless."""
        ...

    async def stop(self) -> None: ...

    async def put(
        self,
        namespace: str,
        path: str,
        data: bytes | AsyncIterator[bytes],
        *,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Store (replacing any file at ``path``: readers see the old content or the
        new, never a mix) and return the URI."""
        ...

    async def get(self, uri: str) -> bytes: ...

    def open(
        self, uri: str, chunk_size: int = 65536, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, end)`` of the file (to its end when ``end`` is None) in
        chunks of at most ``chunk_size`` bytes."""
        ...

    async def exists(self, uri: str) -> bool: ...

    async def delete(self, uri: str) -> bool:
        """False if there was no file."""
        ...

    async def list(self, namespace: str, prefix: str = "") -> builtins.list[str]:
        """URIs of the namespace's files whose path starts with ``prefix``, sorted."""
        ...

    async def size(self, uri: str) -> int: ...

    async def stat(self, uri: str) -> StoredFile:
        """Size and metadata; NotFound if missing."""
        ...


# -- the bundle -------------------------------------------------------------------
class Stores(Protocol):
    """The transactional part of a backend."""

    @property
    def executions(self) -> ExecutionStore: ...

    @property
    def queues(self) -> Queues: ...

    @property
    def flows(self) -> FlowStore: ...

    @property
    def triggers(self) -> TriggerStore: ...

    @property
    def kv(self) -> KVStore: ...

    @property
    def logs(self) -> LogStore: ...

    @property
    def kills(self) -> KillStore: ...


class InboxBatch(Protocol):
    """Messages handed out together with the unit of work they are handled in."""

    messages: list[QueueMessage]
    #: the unit of work's stores: what is written here commits with the batch's acks
    stores: Stores

    def retry(self, messages: Sequence[QueueMessage], delay_seconds: float) -> None:
        """Hand ``messages`` back (after the delay) instead of acking them."""
        ...


class Inbox(Protocol):
    """A component's transactional durable inbox on one queue (``backends.inbox``):
    a batch comes with its unit of work, and what the handler saves and publishes
    commits together with the batch's acks, or nothing does. The component does not
    know which backend it reads."""

    queue: str

    def batch(self, limit: int) -> AbstractAsyncContextManager[InboxBatch]:
        """Claim up to ``limit`` messages inside a unit of work, committed (with the
        acks) when the block exits normally, rolled back (claim included) if it raises."""
        ...

    async def receive(self, limit: int) -> list[QueueMessage]:
        """Lease up to ``limit`` messages now, for handlers that run long."""
        ...

    def settle(self, messages: Sequence[QueueMessage]) -> AbstractAsyncContextManager[Stores]:
        """The unit of work that finishes received ``messages``: committed with their acks."""
        ...

    async def give_back(
        self, messages: Sequence[QueueMessage], delay_seconds: float = 0.0
    ) -> None: ...

    async def wait(self, at_most: float) -> None:
        """Until something may have arrived, or ``at_most`` seconds (a hint only)."""
        ...

    async def next_available(self) -> datetime | None: ...


class Backend(Stores, Protocol):
    """A whole backend: the stores (autocommit), transactions, services, leader lock."""

    name: str

    async def start(self) -> None:
        """Connect and apply schema migrations."""
        ...

    async def stop(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Stores]:
        """The stores bound to one transaction, committed when the block exits
        normally and rolled back when it raises."""
        ...

    def inbox(
        self,
        queue: str,
        consumer: str,
        *,
        lease_seconds: float,
        prefetch_executions: bool = False,
    ) -> Inbox:
        """``consumer``'s transactional inbox on ``queue``; ``prefetch_executions``
        reads (and locks) the executions a batch's keys name with its claim."""
        ...

    @property
    def services(self) -> ServiceRegistry: ...

    @property
    def leader(self) -> LeaderLock: ...

    @property
    def clock(self) -> Clock: ...
