"""The indexer: the Kafka topics the API lists and searches, bulk-indexed into the
search store (issue 14).

It is one member of the consumer group ``<prefix>g.indexer`` over the executions
changelog, the flows and triggers tables and the logs topic: run more indexers and
the partitions spread over them. Each batch of records becomes one bulk request of
versioned writes (``backends.elasticsearch.writer``: the version is the record's
offset, so an older state never overwrites a newer one, whatever the order records
arrive in, redeliveries included). The batch's offsets are committed only after
its bulk request succeeded: a store that is down means lag, never loss, and the
bulk is tried again with a growing backoff. A record that cannot be read is logged
and skipped; it never stops the indexer. The lag (records not indexed yet, per
topic, over this member's partitions) is logged and served as a metric.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from backends.elasticsearch import documents, indices
from backends.elasticsearch.settings import SearchSettings
from backends.elasticsearch.store import SearchStore
from backends.elasticsearch.writer import Write
from backends.errors import Transient
from backends.kafka.settings import KafkaSettings
from backends.kafka.topics import TopicSpec, ensure_topics, table_topic
from backends.memory.data import FlowEntry
from backends.protocols import TriggerState
from runtime.actors import ChildContext
from runtime.config import IndexerConfig
from runtime.flow.execution import Execution
from runtime.log import get_logger
from runtime.messages import LogEntry
from services import metrics
from services.common import sleep_or_stop, wait_or_stop

log = get_logger(__name__)

_execution = msgspec.json.Decoder(Execution)
_flow = msgspec.json.Decoder(FlowEntry)
_log = msgspec.json.Decoder(LogEntry)
_key = msgspec.json.Decoder(tuple[str, ...])
_trigger = msgspec.json.Decoder(TriggerState)
_trigger_key = msgspec.json.Decoder(tuple[str, str, str])


def logs_topic(settings: KafkaSettings) -> str:
    """The topic log lines are written to (keyed by execution id, one JSON
    ``LogEntry`` a record)."""
    return f"{settings.topic_prefix}logs"


def topics(settings: KafkaSettings) -> dict[str, str]:
    """Topic -> the kind of record it holds."""
    return {
        table_topic(settings, "executions"): "executions",
        table_topic(settings, "flows"): "flows",
        table_topic(settings, "triggers"): "triggers",
        logs_topic(settings): "logs",
    }


def group(settings: KafkaSettings) -> str:
    return f"{settings.topic_prefix}g.indexer"


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    compact = {"cleanup.policy": "compact"}
    week = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)}
    return [
        TopicSpec(
            name=name,
            partitions=settings.partitions,
            config=dict(week if kind == "logs" else compact),
        )
        for name, kind in topics(settings).items()
    ]


#: header naming a logs record's kind (``backends.kafka.logs``); absent on a line
_KIND = "runtime.kind"
_DELETE = b"delete"
_seqs = msgspec.json.Decoder(list[int])


class LogLine(msgspec.Struct, frozen=True):
    offset: int
    partition: int
    entry: LogEntry


class Batch(msgspec.Struct, kw_only=True):
    """What a batch of records asks of the search store."""

    writes: list[Write] = []
    #: execution id -> its new lines, in offset order (numbered when indexed)
    lines: dict[str, list[LogLine]] = {}
    #: (execution id, the seqs a purge removed)
    purges: list[tuple[str, list[int]]] = []


class Translator:
    """Records as versioned writes to the search store's aliases."""

    def __init__(self, kafka: KafkaSettings, search: SearchSettings) -> None:
        self._kinds = topics(kafka)
        self._index = {spec.name: indices.alias(search, spec) for spec in indices.ALL}

    def batch(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> Batch:
        found = Batch()
        for record in records:
            try:
                if self._kinds[record.topic] == "logs":
                    self._log(record, found)
                else:
                    found.writes += self._one(record)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                log.error(
                    "indexer.record_unreadable",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=str(exc),
                )
        return found

    def _one(self, record: ConsumerRecord[bytes, bytes]) -> list[Write]:
        kind = self._kinds[record.topic]
        version, value = record.offset, record.value
        if kind == "executions":
            # a tombstone only takes an ended execution out of the executor's state:
            # its last state stays searchable
            if value is None:
                return []
            execution = _execution.decode(value)
            doc = documents.execution_doc(execution)
            return [
                Write(index=self._index["executions"], id=execution.id, version=version, source=doc)
            ]
        if kind == "flows":
            if value is None:
                return []
            entry = _flow.decode(value)
            return [
                Write(index=self._index["flows"], id=doc_id, version=version, source=doc)
                for doc_id, doc in documents.flow_docs(entry)
            ]
        if kind == "triggers":
            if record.key is None:
                raise ValueError("a trigger record without a key")
            namespace, flow_id, trigger = _trigger_key.decode(record.key)
            doc_id = documents.trigger_id(namespace, flow_id, trigger)
            if value is None:
                return [
                    Write(index=self._index["triggers"], id=doc_id, version=version, source=None)
                ]
            state = _trigger.decode(value)
            source = documents.trigger_doc(state)
            return [Write(index=self._index["triggers"], id=doc_id, version=version, source=source)]
        raise ValueError(f"no documents come from topic {record.topic!r}")

    def _log(self, record: ConsumerRecord[bytes, bytes], into: Batch) -> None:
        if record.value is None or record.key is None:
            return
        execution_id = record.key.decode()
        if (_KIND, _DELETE) in [(k, bytes(v)) for k, v in record.headers]:
            into.purges.append((execution_id, _seqs.decode(record.value)))
            return
        line = LogLine(record.offset, record.partition, _log.decode(record.value))
        into.lines.setdefault(execution_id, []).append(line)

    def log_writes(self, lines: list[LogLine], first_seq: int) -> list[Write]:
        """One execution's new lines as writes, numbered from ``first_seq`` (a line's
        seq is its place among its execution's lines in the topic, as the Kafka
        backend numbers them). The id is the record's place: a redelivery is the same
        document, refused as not newer."""
        return [
            Write(
                index=self._index["logs"],
                id=f"{line.partition}-{line.offset}",
                version=line.offset,
                source=documents.log_doc(
                    msgspec.structs.replace(line.entry, seq=first_seq + n), line.offset
                ),
            )
            for n, line in enumerate(lines)
        ]


class Indexer:
    """The indexer component (a supervised child; ``runtime run indexer``)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        search: SearchSettings,
        settings: IndexerConfig | None = None,
        *,
        member_id: str = "indexer",
        group_id: str | None = None,
    ) -> None:
        self.kafka = kafka
        self.search = search
        self.settings = settings or IndexerConfig()
        self.id = member_id
        #: the consumer group (another one re-reads every topic from its start)
        self.group = group_id or group(kafka)
        self.translator = Translator(kafka, search)
        #: topic -> records not indexed yet over this member's partitions
        self.lag: dict[str, int] = {}
        #: documents written since start, refused as not newer, and bulk retries
        self.written = 0
        self.stale = 0
        self.retries = 0
        self._stopping = asyncio.Event()

    async def run(self, ctx: ChildContext) -> None:
        ctx.on_stop_requested(self._stopping.set)
        store = SearchStore(self.search)
        # running from here: an unreachable store or broker is waited for, with
        # backoff and a log line per attempt, not a failed start
        ctx.ready()
        try:
            await self._retrying("create the indices", store.migrate)
            if self._stopping.is_set():
                return
            consumer = await self._consumer()
            if consumer is None:
                return
            try:
                log.info("indexer.started", group=self.group, search=self.search.where)
                await self._loop(consumer, store)
            finally:
                await asyncio.shield(consumer.stop())
        finally:
            await asyncio.shield(store.close())

    async def _consumer(self) -> AIOKafkaConsumer | None:
        """The group member, once the brokers answer (None: stopped first)."""
        delay = self.settings.retry_first_seconds
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                *topics(self.kafka),
                bootstrap_servers=self.kafka.servers,
                group_id=self.group,
                client_id=self.id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                fetch_max_wait_ms=self.settings.fetch_wait_ms,
                max_poll_interval_ms=int(self.settings.rebalance_timeout_seconds * 1000),
            )
            try:
                await ensure_topics(self.kafka, topic_specs(self.kafka))
                await consumer.start()
                return consumer
            except (KafkaError, Transient) as exc:
                await asyncio.shield(consumer.stop())
                log.warning(
                    "indexer.kafka_unreachable",
                    brokers=self.kafka.bootstrap_servers,
                    retry_in=delay,
                    error=str(exc),
                )
                await sleep_or_stop(self._stopping, delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
        return None

    async def _loop(self, consumer: AIOKafkaConsumer, store: SearchStore) -> None:
        logged = time.monotonic()
        while not self._stopping.is_set():
            fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            await wait_or_stop(self._stopping, self._fetch(consumer, fetched))
            if fetched:
                records = [r for batch in fetched.values() for r in batch]
                batch = self.translator.batch(records)
                # until committed, the batch is lag too
                pending = {tp: records[0].offset for tp, records in fetched.items()}
                attempt = partial(self._index, store, batch)
                if not await self._retrying(
                    "index a batch", attempt, partial(self._measure_lag, consumer, pending)
                ):
                    return  # stopped before the bulk went through: nothing committed
                offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items()}
                try:
                    await consumer.commit(offsets)
                except (CommitFailedError, KafkaError) as exc:
                    # the partitions moved; their next owner re-reads from the last
                    # commit, and the versions make the repeated writes no-ops
                    log.warning("indexer.commit_failed", error=str(exc))
            await self._measure_lag(consumer)
            if time.monotonic() - logged >= self.settings.lag_log_seconds:
                logged = time.monotonic()
                log.info("indexer.lag", lag=dict(self.lag), written=self.written)

    async def _fetch(
        self,
        consumer: AIOKafkaConsumer,
        into: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        into.update(
            await consumer.getmany(
                timeout_ms=self.settings.fetch_wait_ms, max_records=self.settings.batch
            )
        )

    async def _index(self, store: SearchStore, batch: Batch) -> None:
        """The batch's writes in one bulk request, its lines numbered first; then its
        purges (which may name lines of this very batch)."""
        writes = list(batch.writes)
        executions = list(batch.lines)
        counts = await asyncio.gather(
            *(store.logs.count_before(e, batch.lines[e][0].offset) for e in executions)
        )
        for execution_id, before in zip(executions, counts, strict=True):
            writes += self.translator.log_writes(batch.lines[execution_id], before + 1)
        await self._bulk(store, writes)
        for execution_id, seqs in batch.purges:
            query = {
                "bool": {
                    "filter": [
                        {"term": {"execution_id": execution_id}},
                        {"terms": {"seq": seqs}},
                    ]
                }
            }
            await store.logs.hide(query)

    async def _bulk(self, store: SearchStore, writes: list[Write]) -> None:
        result = await store.bulk(writes)
        self.written += result.written
        self.stale += result.stale
        for outcome, count in (
            ("written", result.written),
            ("stale", result.stale),
            ("rejected", result.rejected),
        ):
            if count:
                metrics.INDEXER_DOCUMENTS.labels(outcome).inc(count)

    async def _retrying(self, what: str, attempt: Any, measure: Any = None) -> bool:
        """Run ``attempt`` until it succeeds (True) or a stop is asked (False),
        backing off while the search store is unreachable (``measure``: how the lag
        is kept current meanwhile)."""
        delay = self.settings.retry_first_seconds
        while not self._stopping.is_set():
            try:
                await attempt()
                return True
            except Transient as exc:
                if measure is not None:
                    await measure()
                metrics.INDEXER_RETRIES.inc()
                self.retries += 1
                log.warning(
                    "indexer.search_unreachable", doing=what, retry_in=delay, error=str(exc)
                )
                await sleep_or_stop(self._stopping, delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
        return False

    async def _measure_lag(
        self, consumer: AIOKafkaConsumer, pending: dict[TopicPartition, int] | None = None
    ) -> None:
        """Records not indexed yet per topic: from the first record of a batch not
        committed yet (``pending``), else from the position, to the partition's end."""
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            # read_committed: the end is the last stable offset, not the high watermark
            end = consumer.last_stable_offset(tp)
            if end is None:
                continue
            position = (pending or {}).get(tp)
            if position is None:
                position = await consumer.position(tp)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(end - position, 0)
        for topic in topics(self.kafka):
            self.lag[topic] = lag.get(topic, 0)
            metrics.INDEXER_LAG.labels(topic).set(self.lag[topic])
