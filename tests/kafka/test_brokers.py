"""What the Kafka backend will rely on, checked with aiokafka on each test broker.

Each test is one feature of real Kafka the backend (issue 22) is written against;
a broker that lacks it has the test marked xfail(strict=True) with the reason, so a
broker release that gains the feature turns the mark into a failure to update.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import ProducerFenced

from backends.kafka.testing import NOIDA_DB, TANSU, BrokerProcess
from tests.kafka.helpers import on_brokers

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

#: a step that a working broker does in well under a second; a lacking one may hang
STEP = 20.0


def _name(what: str) -> str:
    return f"{what}-{secrets.token_hex(4)}"


@asynccontextmanager
async def _admin(broker: BrokerProcess) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        # a start that fails half-way still has connections to close
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def _topic(
    broker: BrokerProcess, partitions: int, configs: dict[str, str] | None = None
) -> str:
    name = _name("topic")
    async with _admin(broker) as admin:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=configs or {})], timeout_ms=10_000
        )
    return name


@asynccontextmanager
async def _producer(broker: BrokerProcess, **settings: Any) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, **settings)
    try:
        # a start that fails half-way still has connections to close
        await producer.start()
        yield producer
    finally:
        await producer.stop()


@asynccontextmanager
async def _consumer(
    broker: BrokerProcess, *topics: str, **settings: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    settings.setdefault("auto_offset_reset", "earliest")
    settings.setdefault("enable_auto_commit", False)
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=broker.bootstrap_servers, **settings)
    try:
        # a start that fails half-way still has connections to close
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


async def _drain(consumer: AIOKafkaConsumer, count: int, *, quiet: float = 0.0) -> list[Any]:
    """``count`` records, then whatever else arrives within ``quiet`` seconds."""
    records: list[Any] = []
    async with asyncio.timeout(STEP):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    if quiet:
        batch = await consumer.getmany(timeout_ms=int(quiet * 1000))
        for part in batch.values():
            records.extend(part)
    return records


async def _wait_for(condition: Any, what: str, *, within: float = STEP) -> None:
    """Poll ``condition()`` (sync) until true; fails naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not happen within {within:g} s")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("broker", on_brokers(), indirect=True)
async def test_topic_with_partitions_and_compaction(broker: BrokerProcess) -> None:
    """Compacted topics keyed by id hold flows, triggers and executions; a tombstone
    (null value) is how an ended execution leaves the store."""
    topic = await _topic(broker, 3, {"cleanup.policy": "compact"})
    async with _admin(broker) as admin:
        described = await admin.describe_topics([topic])
        (configs,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, None)]
        )
    (meta,) = described
    assert sorted(p["partition"] for p in meta["partitions"]) == [0, 1, 2]
    entries = {entry[0]: entry[1] for resource in configs.resources for entry in resource[4]}
    assert entries.get("cleanup.policy") == "compact"

    async with _producer(broker) as producer:
        await producer.send_and_wait(topic, b"state-1", key=b"execution-1")
        await producer.send_and_wait(topic, None, key=b"execution-1")
    async with _consumer(broker, topic) as consumer:
        records = await _drain(consumer, 2)
    assert [(r.key, r.value) for r in records] == [
        (b"execution-1", b"state-1"),
        (b"execution-1", None),
    ]


@pytest.mark.parametrize("broker", on_brokers(), indirect=True)
async def test_keyed_records_keep_their_order_in_one_partition(broker: BrokerProcess) -> None:
    """One execution's events (keyed by its id) reach one partition, in order."""
    topic = await _topic(broker, 4)
    keys = [f"execution-{i}".encode() for i in range(8)]
    sent: dict[bytes, int] = {}
    async with _producer(broker, linger_ms=5) as producer:
        futures = [
            (key, await producer.send(topic, str(seq).encode(), key=key))
            for seq in range(25)
            for key in keys
        ]
        for key, future in futures:
            metadata = await future
            assert sent.setdefault(key, metadata.partition) == metadata.partition
    assert len(set(sent.values())) > 1, "8 keys over 4 partitions all landed in one"
    async with _consumer(broker, topic) as consumer:
        records = await _drain(consumer, 25 * len(keys))
    seen: dict[bytes, list[int]] = {}
    for record in records:
        assert record.partition == sent[record.key]
        seen.setdefault(record.key, []).append(int(record.value))
    assert seen == {key: list(range(25)) for key in keys}


@pytest.mark.parametrize("broker", on_brokers(), indirect=True)
async def test_group_splits_partitions_between_two_members(broker: BrokerProcess) -> None:
    """Executors share the events topic through a consumer group; one leaving hands
    its partitions to the other."""
    topic = await _topic(broker, 4)
    group = _name("group")
    every = {TopicPartition(topic, p) for p in range(4)}
    settings = {"group_id": group, "heartbeat_interval_ms": 300, "session_timeout_ms": 6000}
    async with _consumer(broker, topic, **settings) as first:
        await _wait_for(lambda: first.assignment() == every, "the first member owning all")
        async with _consumer(broker, topic, **settings) as second:
            # getmany drives the rebalance callbacks of each member
            async def split() -> None:
                while not (
                    first.assignment()
                    and second.assignment()
                    and first.assignment() | second.assignment() == every
                    and not first.assignment() & second.assignment()
                ):
                    await asyncio.gather(
                        first.getmany(timeout_ms=100), second.getmany(timeout_ms=100)
                    )

            async with asyncio.timeout(STEP):
                await split()
        async with asyncio.timeout(STEP):
            while first.assignment() != every:
                await first.getmany(timeout_ms=100)


class Member:
    """A group member in its own process (``member.py``), watched through its output.

    Members that a broker leaves stuck in a group are processes the test kills, so a
    broker's failure cannot leave a stuck client in the test's own loop.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.partitions: set[int] = set()
        self.commits = 0
        self.refusals: list[str] = []
        self._reader = asyncio.create_task(self._read(), name="member output")

    @classmethod
    async def start(cls, broker: BrokerProcess, topic: str, group: str, *flags: str) -> Member:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("member.py")),
            broker.bootstrap_servers,
            topic,
            group,
            *flags,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode().strip()
            if line.startswith("assigned"):
                owned = line.removeprefix("assigned").strip()
                self.partitions = {int(p) for p in owned.split(",")} if owned else set()
            elif line == "committed":
                self.commits += 1
            elif line.startswith("refused"):
                self.refusals.append(line)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await self._reader


@asynccontextmanager
async def _members() -> AsyncIterator[list[Member]]:
    started: list[Member] = []
    try:
        yield started
    finally:
        for member in started:
            await member.kill()


def _split(members: list[Member], partitions: int) -> bool:
    """Every member owns partitions, none twice, all of them owned."""
    owned = [m.partitions for m in members]
    union = set().union(*owned)
    return all(owned) and union == set(range(partitions)) and sum(map(len, owned)) == partitions


@pytest.mark.parametrize(
    "broker",
    on_brokers(
        {
            NOIDA_DB: "an offset commit during a rebalance gets IllegalGeneration and the group"
            " never settles (when a commit lands inside the rebalance window: a matter of"
            " timing, so on a slow or quiet run the test may pass)"
        },
        strict=False,
    ),
    indirect=True,
)
async def test_group_settles_while_members_commit(broker: BrokerProcess) -> None:
    """A member keeps committing its offsets while a second one joins: both end up
    owning partitions and their commits in the new generation are accepted."""
    topic = await _topic(broker, 4)
    group = _name("group")
    async with _members() as members:
        members.append(await Member.start(broker, topic, group, "--commit"))
        await _wait_for(
            lambda: members[0].partitions == {0, 1, 2, 3}, "the first member owning all"
        )
        await _wait_for(lambda: members[0].commits > 3, "the first member committing")
        members.append(await Member.start(broker, topic, group, "--commit"))
        await _wait_for(lambda: _split(members, 4), "the group settling with two members")
        settled = [m.commits for m in members]
        await _wait_for(
            lambda: all(m.commits > c + 3 for m, c in zip(members, settled, strict=True)),
            "commits of both members after the rebalance",
        )
        assert _split(members, 4)


@pytest.mark.parametrize(
    "broker",
    on_brokers({NOIDA_DB: "a member killed without leaving is never expired from the group"}),
    indirect=True,
)
async def test_group_expires_a_killed_member(broker: BrokerProcess) -> None:
    """An executor killed with -9 sends no LeaveGroup: the broker must expire it after
    its session timeout (6 s here) and give its partitions to the survivor."""
    topic = await _topic(broker, 4)
    group = _name("group")
    async with _members() as members:
        members.append(await Member.start(broker, topic, group))
        await _wait_for(
            lambda: members[0].partitions == {0, 1, 2, 3}, "the first member owning all"
        )
        members.append(await Member.start(broker, topic, group))
        await _wait_for(lambda: _split(members, 4), "the group settling with two members")
        doomed, survivor = members
        await doomed.kill()
        await _wait_for(
            lambda: survivor.partitions == {0, 1, 2, 3}, "the survivor owning every partition"
        )


@pytest.mark.parametrize(
    "broker",
    on_brokers({TANSU: "InitProducerId answers UNKNOWN_SERVER_ERROR: no idempotent producer"}),
    indirect=True,
)
async def test_idempotent_producer(broker: BrokerProcess) -> None:
    """Retries of an idempotent producer never duplicate or reorder a record."""
    topic = await _topic(broker, 1)
    async with asyncio.timeout(STEP):
        async with _producer(broker, enable_idempotence=True, acks="all") as producer:
            for i in range(50):
                await producer.send(topic, str(i).encode(), key=b"k")
            await producer.flush()
    async with _consumer(broker, topic) as consumer:
        records = await _drain(consumer, 50, quiet=0.5)
    assert [int(r.value) for r in records] == list(range(50))


@pytest.mark.parametrize(
    "broker",
    on_brokers({TANSU: "InitProducerId answers UNKNOWN_SERVER_ERROR: no transactional producer"}),
    indirect=True,
)
async def test_transaction_carries_consumed_offsets(broker: BrokerProcess) -> None:
    """The executor's unit of work: read events, write states and commands, and the
    consumed offsets, in one transaction; a read_committed consumer never sees an
    aborted write, and an aborted transaction leaves the group's offset where it was."""
    source = await _topic(broker, 1)
    sink = await _topic(broker, 1)
    group = _name("executor")
    async with _producer(broker) as plain:
        for i in range(4):
            await plain.send_and_wait(source, f"event-{i}".encode(), key=b"execution-1")
    async with asyncio.timeout(STEP):
        async with (
            _producer(broker, transactional_id=_name("tx")) as producer,
            _consumer(broker, source, group_id=group, isolation_level="read_committed") as consumer,
        ):
            events = await _drain(consumer, 4)
            tp = TopicPartition(source, 0)
            # commit the first two events' outcome with their offsets
            async with producer.transaction():
                for event in events[:2]:
                    await producer.send(sink, b"done:" + event.value, key=event.key)
                await producer.send_offsets_to_transaction({tp: events[1].offset + 1}, group)
            # abort the next two
            await producer.begin_transaction()
            for event in events[2:]:
                await producer.send(sink, b"aborted:" + event.value, key=event.key)
            await producer.send_offsets_to_transaction({tp: events[3].offset + 1}, group)
            await producer.abort_transaction()
    async with _consumer(broker, group_id=group) as reader:
        assert await reader.committed(TopicPartition(source, 0)) == events[1].offset + 1
    async with _consumer(broker, sink, isolation_level="read_committed") as committed:
        seen = await _drain(committed, 2, quiet=1.0)
    assert [r.value for r in seen] == [b"done:event-0", b"done:event-1"]
    # the aborted records were written (and are filtered), or the check above proves nothing
    async with _consumer(broker, sink, isolation_level="read_uncommitted") as uncommitted:
        everything = await _drain(uncommitted, 4, quiet=0.5)
    assert sorted(r.value for r in everything) == [
        b"aborted:event-2",
        b"aborted:event-3",
        b"done:event-0",
        b"done:event-1",
    ]


@pytest.mark.parametrize(
    "broker",
    on_brokers(
        {
            TANSU: "InitProducerId answers UNKNOWN_SERVER_ERROR: no transactional producer,"
            " so no fencing"
        }
    ),
    indirect=True,
)
async def test_zombie_producer_is_fenced(broker: BrokerProcess) -> None:
    """An executor that lost its partitions but still runs (a zombie) cannot commit
    once its successor started with the same transactional id."""
    topic = await _topic(broker, 1)
    transactional_id = _name("executor-p0")
    async with asyncio.timeout(STEP):
        async with _producer(broker, transactional_id=transactional_id) as zombie:
            await zombie.begin_transaction()
            await zombie.send_and_wait(topic, b"from the zombie", key=b"k")
            async with _producer(broker, transactional_id=transactional_id) as successor:
                async with successor.transaction():
                    await successor.send_and_wait(topic, b"from the successor", key=b"k")
                with pytest.raises(ProducerFenced):
                    await zombie.commit_transaction()
    async with _consumer(broker, topic, isolation_level="read_committed") as consumer:
        seen = await _drain(consumer, 1, quiet=1.0)
    assert [r.value for r in seen] == [b"from the successor"]


@pytest.mark.parametrize(
    "broker",
    on_brokers(
        {
            TANSU: "ListOffsets (latest) answers the last batch's base offset + 1, not the"
            " offset after its last record"
        }
    ),
    indirect=True,
)
async def test_end_offsets(broker: BrokerProcess) -> None:
    """Restoring a partition's state reads the changelog up to its end offset."""
    topic = await _topic(broker, 2)
    async with _producer(broker, linger_ms=50) as producer:
        # seven records sent together travel in one batch
        sent = [
            await producer.send(topic, b"x", key=str(i).encode(), partition=0) for i in range(7)
        ]
        await producer.flush()
        assert [(await f).offset for f in sent] == list(range(7))
        for i in range(3):
            await producer.send_and_wait(topic, b"y", key=str(i).encode(), partition=1)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    async with _consumer(broker) as consumer:
        consumer.assign([p0, p1])
        assert await consumer.beginning_offsets([p0, p1]) == {p0: 0, p1: 0}
        assert await consumer.end_offsets([p0, p1]) == {p0: 7, p1: 3}


@pytest.mark.parametrize(
    "broker",
    on_brokers(
        {TANSU: "memory storage (memory://tansu/): a restart starts empty, the topic is gone"}
    ),
    indirect=True,
)
async def test_graceful_restart_keeps_acknowledged_records(broker: BrokerProcess) -> None:
    """The fault tests restart the broker mid-run (SIGTERM): every acknowledged record
    is still there afterwards, and clients started before reconnect by themselves."""
    topic = await _topic(broker, 1)
    # a short request timeout: stopping a producer waits for its requests in flight
    async with _producer(broker, acks="all", request_timeout_ms=5000) as producer:
        for i in range(50):
            await producer.send_and_wait(topic, str(i).encode(), key=b"k")
        await asyncio.to_thread(broker.restart)
        # a reconnect takes well under a second; a broker that lost the topic never answers
        async with asyncio.timeout(STEP / 2):
            for i in range(50, 60):
                await producer.send_and_wait(topic, str(i).encode(), key=b"k")
    async with _consumer(broker, topic) as consumer:
        records = await _drain(consumer, 60, quiet=0.5)
    assert [int(r.value) for r in records] == list(range(60))


@pytest.mark.parametrize(
    "broker",
    on_brokers({TANSU: "memory storage never compacts: every superseded record stays"}),
    indirect=True,
)
async def test_compaction_keeps_the_latest_record_of_each_key(broker: BrokerProcess) -> None:
    """The executions topic is compacted so that restoring a partition reads its running
    executions, not the installation's history."""
    # small segments, cleaned at once: compaction within seconds instead of hours
    topic = await _topic(
        broker,
        1,
        {
            "cleanup.policy": "compact",
            "segment.ms": "100",
            "segment.bytes": "1024",
            "min.cleanable.dirty.ratio": "0.01",
        },
    )
    keys = [f"execution-{i}".encode() for i in range(10)]
    async with _producer(broker, linger_ms=5) as producer:
        for i in range(2000):
            await producer.send(topic, str(i).encode(), key=keys[i % len(keys)])
        await producer.flush()
        # as in Kafka, the active segment is never cleaned: a write after segment.ms
        # rolls it, so that every update above is in a cleanable segment
        await asyncio.sleep(0.5)
        await producer.send_and_wait(topic, b"rolled", key=b"roll")
    latest = {key: str(2000 - len(keys) + n).encode() for n, key in enumerate(keys)}
    latest[b"roll"] = b"rolled"
    partition = TopicPartition(topic, 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP
    readable: list[Any] = []
    while loop.time() < deadline:
        async with _consumer(broker) as consumer:
            consumer.assign([partition])
            end = (await consumer.end_offsets([partition]))[partition]
            readable = []
            while not readable or readable[-1].offset < end - 1:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                if not batch:
                    break
                readable.extend(batch[partition])
        if len(readable) <= 100:
            break
        await asyncio.sleep(1.0)
    assert len(readable) <= 100, f"{len(readable)} of 2000 records still readable"
    assert {r.key: r.value for r in readable} == latest
