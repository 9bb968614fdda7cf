"""The memory backend's committed data, and the write set a transaction stages over it.

Every write goes to a :class:`View` first: reads through the view see the committed data
with the view's own changes on top, and ``commit()`` applies the changes in one
synchronous step (no await), so no other task ever sees half a transaction. A view
that is dropped instead leaves nothing behind.

Values kept here are immutable (frozen Structs, bytes, tuples); the containers are
never handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Generic, TypeVar

import msgspec

from backends.protocols import FlowRecord
from runtime.flow.execution import Execution
from runtime.messages import LogEntry

K = TypeVar("K")
V = TypeVar("V")


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A queued message as the memory backend keeps it (replaced, never mutated)."""

    id: int
    key: str | None
    payload: bytes
    available_at: datetime
    attempts: int = 0
    consumer: str | None = None
    lease_until: datetime | None = None


class FlowEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Every revision of one flow, oldest first, and whether the flow is deleted."""

    revisions: tuple[FlowRecord, ...] = ()
    deleted: bool = False


class Overlay(Generic[K, V]):
    """Staged changes over a committed dict: reads see them, ``commit`` applies them.

    Iteration keeps the committed dict's order, then new keys in the order they were
    set (queues rely on it: message ids grow with publication).
    """

    __slots__ = ("_base", "_changes")

    def __init__(self, base: dict[K, V]) -> None:
        self._base = base
        #: None marks a deletion (stored values are never None)
        self._changes: dict[K, V | None] = {}

    def get(self, key: K) -> V | None:
        if key in self._changes:
            return self._changes[key]
        return self._base.get(key)

    def set(self, key: K, value: V) -> None:
        self._changes[key] = value

    def delete(self, key: K) -> bool:
        """Stage the deletion; whether the key existed (as this view sees it)."""
        existed = self.get(key) is not None
        if existed:
            self._changes[key] = None
        return existed

    def discard(self, key: K) -> None:
        """Stage the deletion whether or not the key is seen (a backend whose committed
        data lie elsewhere than the base dict, as Kafka's state store)."""
        self._changes[key] = None

    def items(self) -> Iterator[tuple[K, V]]:
        """The merged contents; materialise before staging more changes."""
        changes = self._changes
        if not changes:
            yield from self._base.items()
            return
        for key, value in self._base.items():
            if key in changes:
                staged = changes[key]
                if staged is not None:
                    yield key, staged
            else:
                yield key, value
        for key, staged in changes.items():
            if staged is not None and key not in self._base:
                yield key, staged

    def values(self) -> Iterator[V]:
        for _, value in self.items():
            yield value

    def staged(self) -> dict[K, V | None]:
        """The staged changes (None for a deletion), for a backend that writes them
        elsewhere than the committed dict (Kafka's tables)."""
        return dict(self._changes)

    def commit(self) -> None:
        base = self._base
        for key, staged in self._changes.items():
            if staged is None:
                base.pop(key, None)
            else:
                base[key] = staged
        self._changes = {}


class Data:
    """Everything a MemoryBackend stores, as committed. Bounded by nothing but memory:
    acked messages and deleted executions are dropped, but logs, flow revisions and
    expired KV entries stay until deleted (a reference backend, not a production one)."""

    def __init__(self) -> None:
        self.executions: dict[str, Execution] = {}
        self.queues: dict[str, dict[int, Message]] = {}
        self.flows: dict[tuple[str, str], FlowEntry] = {}
        #: msgspec-encoded TriggerState: stored like a database would, so callers
        #: can never mutate what is stored through the ``data`` dict they passed
        self.triggers: dict[tuple[str, str, str], bytes] = {}
        self.kv: dict[tuple[str, str], bytes] = {}
        #: per execution, entry ``seq`` n at index n - 1; a deleted entry leaves a hole
        #: (None), so numbering and paging by index stay right
        self.logs: dict[str, list[LogEntry | None]] = {}
        self.kills: set[str] = set()
        self._next_message_id = 1

    def allocate_message_id(self) -> int:
        """A fresh id. Ids of a rolled-back publish are simply never used."""
        value = self._next_message_id
        self._next_message_id += 1
        return value


class View:
    """One transaction's window on the data: reads see its own writes, ``commit`` applies
    them all, dropping the view discards them."""

    def __init__(self, data: Data, clock: Callable[[], datetime]) -> None:
        self.data = data
        self.clock = clock
        self.executions = Overlay(data.executions)
        self.flows = Overlay(data.flows)
        self.triggers = Overlay(data.triggers)
        self.kv = Overlay(data.kv)
        self._queues: dict[str, Overlay[int, Message]] = {}
        self._logs: dict[str, list[LogEntry | None]] = {}
        #: seqs of committed entries deleted by this view, per execution
        self._log_deletes: dict[str, set[int]] = {}
        #: kill requests staged: True requested, False cleared
        self._kills: dict[str, bool] = {}
        #: queues whose waiters should wake once this view commits
        self.wake: set[str] = set()

    # -- queues ------------------------------------------------------------------
    def queue(self, name: str) -> Overlay[int, Message]:
        overlay = self._queues.get(name)
        if overlay is None:
            # An empty committed dict for a queue only read is harmless: empty == absent.
            overlay = self._queues[name] = Overlay(self.data.queues.setdefault(name, {}))
        return overlay

    def queue_names(self) -> list[str]:
        return sorted(set(self.data.queues) | set(self._queues))

    # -- logs ----------------------------------------------------------------------
    def log_entries(self, execution_id: str, start: int = 0) -> Iterator[LogEntry]:
        """Committed then staged entries of one execution, from index ``start``."""
        deleted = self._log_deletes.get(execution_id, ())
        for entries in (self.data.logs.get(execution_id, []), self._logs.get(execution_id, [])):
            # Indexing, not islice: paging far into a long log must not walk its head.
            for index in range(start, len(entries)):
                entry = entries[index]
                if entry is not None and entry.seq not in deleted:
                    yield entry
            start = max(start - len(entries), 0)

    def log_execution_ids(self) -> set[str]:
        """Every execution with a log (some of it possibly deleted)."""
        return set(self.data.logs) | set(self._logs)

    def delete_log(self, entry: LogEntry) -> None:
        """Delete one entry (as read from this view)."""
        committed = len(self.data.logs.get(entry.execution_id, ()))
        if entry.seq > committed:
            self._logs[entry.execution_id][entry.seq - committed - 1] = None
        else:
            self._log_deletes.setdefault(entry.execution_id, set()).add(entry.seq)

    def log_count(self, execution_id: str) -> int:
        return len(self.data.logs.get(execution_id, ())) + len(self._logs.get(execution_id, ()))

    def stage_log(self, entry: LogEntry) -> None:
        self._logs.setdefault(entry.execution_id, []).append(entry)

    # -- kills -----------------------------------------------------------------------
    def kill_requested(self, task_run_id: str) -> bool:
        staged = self._kills.get(task_run_id)
        return task_run_id in self.data.kills if staged is None else staged

    def stage_kill(self, task_run_id: str, requested: bool) -> None:
        self._kills[task_run_id] = requested

    # -- commit ----------------------------------------------------------------------
    def commit(self) -> set[str]:
        """Apply every staged change; returns the queues whose waiters should wake."""
        self.executions.commit()
        self.flows.commit()
        self.triggers.commit()
        self.kv.commit()
        for overlay in self._queues.values():
            overlay.commit()
        for execution_id, seqs in self._log_deletes.items():
            committed = self.data.logs[execution_id]
            for seq in seqs:
                committed[seq - 1] = None
        for execution_id, entries in self._logs.items():
            self.data.logs.setdefault(execution_id, []).extend(entries)
        for task_run_id, requested in self._kills.items():
            if requested:
                self.data.kills.add(task_run_id)
            else:
                self.data.kills.discard(task_run_id)
        self._queues.clear()
        self._logs.clear()
        self._log_deletes.clear()
        self._kills.clear()
        wake, self.wake = self.wake, set()
        return wake
