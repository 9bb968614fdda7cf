"""What every SQL backend exposes the same way: its stores outside any transaction
(each call commits by itself), its service registry, leader lock and clock."""

from __future__ import annotations

from typing import Any

from backends.inbox import TransactionalInbox
from backends.protocols import (
    Backend,
    Clock,
    ExecutionStore,
    FlowStore,
    Inbox,
    KillStore,
    KVStore,
    LeaderLock,
    LogStore,
    Queues,
    ServiceRegistry,
    TriggerStore,
)


class SqlBackendBase:
    """The autocommit attributes of a SQL backend. A subclass sets ``_stores`` (its
    stores bound to its autocommit session), ``_services`` and ``_leader`` once started,
    back to None once stopped, and says what it is in ``describe()``."""

    _clock: Clock
    _stores: Any = None
    _services: ServiceRegistry | None = None
    _leader: LeaderLock | None = None

    def describe(self) -> str:
        """What the backend is and where, for messages: "the MySQL backend on ..."."""
        raise NotImplementedError

    def inbox(
        self,
        queue: str,
        consumer: str,
        *,
        lease_seconds: float,
        prefetch_executions: bool = False,
    ) -> Inbox:
        """``consumer``'s transactional inbox on ``queue`` (backends.inbox)."""
        backend: Backend = self  # type: ignore[assignment]
        return TransactionalInbox(
            backend,
            queue,
            consumer,
            lease_seconds=lease_seconds,
            prefetch_executions=prefetch_executions,
        )

    def _not_started(self) -> RuntimeError:
        return RuntimeError(f"{self.describe()} is not started")

    def _autocommit(self) -> Any:
        if self._stores is None:
            raise self._not_started()
        return self._stores

    @property
    def executions(self) -> ExecutionStore:
        store: ExecutionStore = self._autocommit().executions
        return store

    @property
    def queues(self) -> Queues:
        store: Queues = self._autocommit().queues
        return store

    @property
    def flows(self) -> FlowStore:
        store: FlowStore = self._autocommit().flows
        return store

    @property
    def triggers(self) -> TriggerStore:
        store: TriggerStore = self._autocommit().triggers
        return store

    @property
    def kv(self) -> KVStore:
        store: KVStore = self._autocommit().kv
        return store

    @property
    def logs(self) -> LogStore:
        store: LogStore = self._autocommit().logs
        return store

    @property
    def kills(self) -> KillStore:
        store: KillStore = self._autocommit().kills
        return store

    @property
    def services(self) -> ServiceRegistry:
        if self._services is None:
            raise self._not_started()
        return self._services

    @property
    def leader(self) -> LeaderLock:
        if self._leader is None:
            raise self._not_started()
        return self._leader

    @property
    def clock(self) -> Clock:
        return self._clock
