"""MemoryBackend: every backend protocol in process memory, for tests and `flow test`.

Transactions run one at a time under one asyncio.Lock, which makes
``get_for_update`` a lock for free. A transaction stages its writes in a View and
applies them in one synchronous step on normal exit; an exception (cancellation
included) drops them. Autocommit writes are one-operation transactions under the
same lock; reads outside a transaction see committed data only and take no lock.

So a transaction must not wait for another task's autocommit write: that task waits
for the lock the transaction holds. The same task trying it gets a RuntimeError
instead of a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import msgspec

from backends.inbox import TransactionalInbox
from backends.memory.data import Data, View
from backends.memory.queues import MemoryQueues
from backends.memory.session import Notifier
from backends.memory.stores import (
    MemoryExecutions,
    MemoryFlows,
    MemoryKills,
    MemoryKV,
    MemoryLogs,
    MemoryTriggers,
)
from backends.protocols import Clock, Inbox, ServiceInstance

if TYPE_CHECKING:
    from backends.protocols import Backend, Stores

T = TypeVar("T")


def utc_now() -> datetime:
    """The real clock, timezone-aware UTC."""
    return datetime.now(UTC)


class _Transaction:
    """The session of one open transaction: operations run on its View directly (the
    transaction already holds the backend's lock)."""

    def __init__(self, backend: MemoryBackend, view: View) -> None:
        self.backend = backend
        self.view = view
        self.open = True

    async def read(self, op: Callable[[View], T]) -> T:
        return op(self._live())

    async def write(self, op: Callable[[View], T]) -> T:
        return op(self._live())

    def _live(self) -> View:
        if not self.open:
            raise RuntimeError(
                "MemoryBackend: these stores belong to a transaction that has ended; "
                "open a new one with backend.transaction()"
            )
        return self.view


#: the transaction open in this task (and in tasks it started while it was open)
_current: ContextVar[_Transaction | None] = ContextVar("memory_backend_tx", default=None)


class _Autocommit:
    """The session of the backend's own attributes: each write its own transaction."""

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend

    async def read(self, op: Callable[[View], T]) -> T:
        return op(self._backend._view())

    async def write(self, op: Callable[[View], T]) -> T:
        backend = self._backend
        backend._refuse_inside_transaction("an autocommit write")
        async with backend._lock:
            view = backend._view()
            result = op(view)
            backend._commit(view)
            return result


class _Stores:
    """The transactional stores over one session."""

    def __init__(self, session: _Autocommit | _Transaction, notifier: Notifier) -> None:
        self.executions = MemoryExecutions(session)
        self.queues = MemoryQueues(session, notifier)
        self.flows = MemoryFlows(session)
        self.triggers = MemoryTriggers(session)
        self.kv = MemoryKV(session)
        self.logs = MemoryLogs(session)
        self.kills = MemoryKills(session)


_service_encoder = msgspec.json.Encoder()
_service_decoder = msgspec.json.Decoder(ServiceInstance)


class MemoryServices:
    """The ServiceRegistry protocol in memory (not transactional)."""

    def __init__(self) -> None:
        self._instances: dict[str, bytes] = {}

    async def heartbeat(self, instance: ServiceInstance) -> None:
        self._instances[instance.id] = _service_encoder.encode(instance)

    async def list(self) -> list[ServiceInstance]:
        return [_service_decoder.decode(raw) for _, raw in sorted(self._instances.items())]

    async def remove(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)


class MemoryLeader:
    """The LeaderLock protocol in memory: a holder and a deadline per name."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, datetime]] = {}

    async def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        now = self._clock()
        current = self._held.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._held[name] = (holder, now + timedelta(seconds=ttl_seconds))
        return True

    async def release(self, name: str, holder: str) -> None:
        current = self._held.get(name)
        if current is not None and current[0] == holder:
            del self._held[name]


class MemoryBackend:
    """Every backend protocol, in process memory.

    Nothing survives the process and nothing bounds the data but memory (see
    ``backends.memory.data.Data``). ``clock`` is read for every "now" (leases, TTLs,
    delays); pass a settable one in tests. ``Queues.wait`` measures real time.
    """

    name = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or utc_now
        self._data = Data()
        self._lock = asyncio.Lock()
        self._notifier = Notifier()
        stores = _Stores(_Autocommit(self), self._notifier)
        self.executions = stores.executions
        self.queues = stores.queues
        self.flows = stores.flows
        self.triggers = stores.triggers
        self.kv = stores.kv
        self.logs = stores.logs
        self.kills = stores.kills
        self.services = MemoryServices()
        self.leader = MemoryLeader(self._clock)

    @property
    def clock(self) -> Clock:
        return self._clock

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Wake every ``wait`` caller so consumers notice promptly; the data stays."""
        self._notifier.wake_all()

    def inbox(
        self,
        queue: str,
        consumer: str,
        *,
        lease_seconds: float,
        prefetch_executions: bool = False,
    ) -> Inbox:
        """``consumer``'s transactional inbox on ``queue`` (backends.inbox)."""
        return TransactionalInbox(
            self,
            queue,
            consumer,
            lease_seconds=lease_seconds,
            prefetch_executions=prefetch_executions,
        )

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Stores]:
        """The stores bound to one transaction: committed on normal exit, dropped when
        the block raises (cancellation included)."""
        self._refuse_inside_transaction("a nested transaction")
        async with self._lock:
            tx = _Transaction(self, self._view())
            token = _current.set(tx)
            try:
                yield _Stores(tx, self._notifier)
                self._commit(tx.view)
            finally:
                tx.open = False
                _current.reset(token)

    # -- internals shared with the sessions ------------------------------------------
    def _view(self) -> View:
        return View(self._data, self._clock)

    def _commit(self, view: View) -> None:
        self._notifier.wake(view.commit())

    def _refuse_inside_transaction(self, what: str) -> None:
        """The lock is not reentrant: waiting for it here would hang forever."""
        tx = _current.get()
        if tx is not None and tx.open and tx.backend is self:
            raise RuntimeError(
                f"MemoryBackend: {what} while this task has a transaction open would "
                "deadlock; use the stores that backend.transaction() yielded"
            )


if TYPE_CHECKING:
    _check: type[Backend] = MemoryBackend
