"""Logs on Kafka: a delete-policy topic keyed by execution id.

An execution's log lines are records of one partition (the key's), in the order
they were produced, so an entry's ``seq`` is its position among its execution's
records: nothing is read to append, and a unit of work's lines are produced in its
transaction (aborted ones are never read: ``read_committed``).

Reading is the cost: ``query`` reads the execution's partition from its start into
memory (once per process; later calls fetch only what is new), ``find`` and a
``delete`` over every execution read every partition. That is enough for the API's
execution logs and for small installations; searching logs across executions
belongs to the search store (Elasticsearch, issue 14), which the indexer feeds
from this topic. A deletion (PurgeLogs) is a marker record naming the ``seq``s it
removes: readers drop them, the numbering of the others stays, and the bytes go
with the topic's retention.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from backends.errors import Transient
from backends.kafka.settings import KafkaSettings
from backends.kafka.tables import SETTLE_SECONDS
from backends.kafka.topics import ensure_topics, logs_spec
from backends.memory.stores import level_floor, level_rank, log_matcher
from backends.protocols import LogFilter
from runtime.messages import LogEntry

if TYPE_CHECKING:
    from backends.kafka.backend import KafkaBackend, _Record, _Staged

#: header naming a record's kind; absent on a log line
KIND = "runtime.kind"
DELETE = b"delete"

_entry_encoder = msgspec.json.Encoder()
_entry_decoder = msgspec.json.Decoder(LogEntry)
_seqs_decoder = msgspec.json.Decoder(list[int])
_partitioner = DefaultPartitioner()


def log_records(topic: str, entries: Sequence[LogEntry]) -> list[_Record]:
    """The records of new log lines (their ``seq`` is given by their position)."""
    return [(topic, e.execution_id.encode(), _entry_encoder.encode(e), []) for e in entries]


def delete_records(topic: str, removed: dict[str, list[int]]) -> list[_Record]:
    """The markers that remove ``seq``s, per execution."""
    return [
        (topic, execution_id.encode(), _entry_encoder.encode(sorted(seqs)), [(KIND, DELETE)])
        for execution_id, seqs in removed.items()
        if seqs
    ]


class LogTopic:
    """The logs topic as this process has read it: the partitions asked for so far,
    each read from its start and caught up with its end offset on every read."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.topic = logs_spec(settings).name
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[int] = []
        #: partition -> next offset to read, for the partitions read so far
        self._read: dict[int, int] = {}
        #: execution id -> its lines by seq - 1 (None: deleted)
        self._lines: dict[str, list[LogEntry | None]] = {}
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        if self._consumer is not None:
            return
        await ensure_topics(self.settings, [logs_spec(self.settings)])
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
            await consumer.topics()
            partitions = sorted(consumer.partitions_for_topic(self.topic) or ())
            if not partitions:
                raise Transient(f"Kafka: topic {self.topic!r} has no partitions")
        except (KafkaError, Transient) as exc:
            await consumer.stop()
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: cannot read the logs topic"
                f" {self.topic!r} ({exc!r}); check that the brokers run"
            ) from exc
        self._partitions = partitions
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.shield(consumer.stop())

    def partition_of(self, execution_id: str) -> int:
        """The partition the producer's default partitioner writes the key to."""
        return int(_partitioner(execution_id.encode(), self._partitions, []))

    async def lines(self, execution_id: str) -> list[LogEntry | None]:
        """Every committed line of the execution, by seq - 1 (None: deleted)."""
        async with self._lock:
            await self.ensure_started()
            await self._catch_up([self.partition_of(execution_id)])
            return list(self._lines.get(execution_id, ()))

    async def everything(self) -> dict[str, list[LogEntry | None]]:
        """Every committed line of every execution (reads the whole topic)."""
        async with self._lock:
            await self.ensure_started()
            await self._catch_up(self._partitions)
            return {k: list(v) for k, v in self._lines.items()}

    async def _catch_up(self, partitions: Iterable[int]) -> None:
        consumer = self._consumer
        assert consumer is not None
        wanted = [TopicPartition(self.topic, p) for p in sorted(set(partitions))]
        try:
            async with asyncio.timeout(SETTLE_SECONDS):
                new = [tp for tp in wanted if tp.partition not in self._read]
                if new:
                    for tp in new:
                        self._read[tp.partition] = 0
                    every = [TopicPartition(self.topic, p) for p in sorted(self._read)]
                    consumer.assign(every)
                    for tp in every:
                        consumer.seek(tp, self._read[tp.partition])
                ends = await consumer.end_offsets(wanted)
                behind = [tp for tp in wanted if self._read[tp.partition] < ends[tp]]
                while behind:
                    batches = await consumer.getmany(*behind, timeout_ms=200, max_records=5000)
                    for records in batches.values():
                        for record in records:
                            self._apply(record.key, record.value, record.headers)
                    for tp in behind:
                        self._read[tp.partition] = await consumer.position(tp)
                    behind = [tp for tp in behind if self._read[tp.partition] < ends[tp]]
        except KafkaError as exc:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: reading logs: {exc!r}"
            ) from exc
        except TimeoutError:
            raise Transient(
                f"Kafka at {self.settings.bootstrap_servers}: the logs topic {self.topic!r}"
                f" did not catch up within {SETTLE_SECONDS:g} s; check that the brokers run"
            ) from None

    def _apply(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        if key is None or value is None:
            return  # not ours: every log record is keyed and has a value
        lines = self._lines.setdefault(bytes(key).decode(), [])
        if any(name == KIND and bytes(kind) == DELETE for name, kind in headers):
            for seq in _seqs_decoder.decode(value):
                if 1 <= seq <= len(lines):
                    lines[seq - 1] = None
            return
        entry = _entry_decoder.decode(value)
        lines.append(msgspec.structs.replace(entry, seq=len(lines) + 1))


def _numbered(lines: list[LogEntry | None], staged: Sequence[LogEntry]) -> list[LogEntry | None]:
    """``lines`` followed by a unit of work's own lines, numbered after them."""
    start = len(lines)
    return lines + [msgspec.structs.replace(e, seq=start + n) for n, e in enumerate(staged, 1)]


class KafkaLogs:
    """The LogStore protocol on the logs topic: autocommit, or in one unit of work
    (``staged``: its lines and deletions are produced in its transaction, and its
    reads see its own lines after the committed ones)."""

    def __init__(self, backend: KafkaBackend, topic: LogTopic, staged: _Staged | None) -> None:
        self._backend = backend
        self._topic = topic
        self._staged = staged

    async def append(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        if self._staged is not None:
            self._staged.logs.extend(entries)
            return
        self._backend._refuse_inside_unit("an autocommit log append")
        await self._topic.ensure_started()
        await self._backend._produce(log_records(self._topic.topic, entries), {})

    def _own(self, execution_id: str) -> list[LogEntry]:
        if self._staged is None:
            return []
        return [e for e in self._staged.logs if e.execution_id == execution_id]

    async def query(
        self,
        execution_id: str,
        *,
        task_run_id: str | None = None,
        min_level: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LogEntry]:
        floor = level_floor(min_level)
        if limit <= 0:
            return []
        lines = _numbered(await self._topic.lines(execution_id), self._own(execution_id))
        found: list[LogEntry] = []
        for entry in lines[max(after_seq, 0) :]:
            if entry is None:
                continue
            if task_run_id is not None and entry.task_run_id != task_run_id:
                continue
            if floor is not None and level_rank(entry.level) < floor:
                continue
            found.append(entry)
            if len(found) >= limit:
                break
        return found

    async def _matching(
        self, where: LogFilter, keeps: Callable[[LogEntry], bool]
    ) -> list[LogEntry]:
        if where.execution_id is not None:
            every = {where.execution_id: await self._topic.lines(where.execution_id)}
        else:
            every = await self._topic.everything()
        if self._staged is not None:
            for entry in self._staged.logs:
                every.setdefault(entry.execution_id, [])
            every = {k: _numbered(v, self._own(k)) for k, v in every.items()}
        return [e for lines in every.values() for e in lines if e is not None and keeps(e)]

    async def find(
        self, where: LogFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[LogEntry], int]:
        """Reads every partition unless ``where`` names an execution: a search over
        executions belongs to the search store (issue 14)."""
        found = await self._matching(where, log_matcher(where))
        found.sort(key=lambda e: (e.timestamp, e.execution_id, e.seq), reverse=True)
        start = max(offset, 0)
        return found[start : start + max(limit, 0)], len(found)

    async def delete(self, where: LogFilter) -> int:
        found = await self._matching(where, log_matcher(where))
        removed: dict[str, list[int]] = {}
        for entry in found:
            removed.setdefault(entry.execution_id, []).append(entry.seq)
        if not removed:
            return 0
        records = delete_records(self._topic.topic, removed)
        if self._staged is not None:
            self._staged.log_deletes.extend(records)
        else:
            self._backend._refuse_inside_unit("an autocommit log deletion")
            await self._backend._produce(records, {})
        return len(found)
