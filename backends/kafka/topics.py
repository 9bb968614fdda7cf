"""The topics of the Kafka backend, and their creation (``runtime migrate``)."""

from __future__ import annotations

import contextlib

import msgspec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from backends.errors import Transient
from backends.kafka.settings import KafkaSettings
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE

#: the queues the services use, one topic each: the executor's inbox (execution
#: events, worker results, subflow ends, delays; keyed by execution id) and the jobs
QUEUES = (EXECUTOR_QUEUE, WORKER_QUEUE)
#: compacted tables keyed by id (the design in docs/architecture.md)
TABLES = ("executions", "flows", "triggers", "kv", "kills", "services")

_COMPACT = {"cleanup.policy": "compact"}
#: a week: events are consumed in seconds; the margin is for a long outage
_QUEUE_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)}
#: log lines stay 30 days unless purged sooner (a purge only hides them: see logs.py)
_LOGS_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(30 * 24 * 3600 * 1000)}


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    partitions: int
    config: dict[str, str]


def queue_topic(settings: KafkaSettings, queue: str) -> str:
    """The topic of ``queue``."""
    return f"{settings.topic_prefix}q.{queue}"


def queue_group(settings: KafkaSettings, queue: str) -> str:
    """The consumer group every process reading ``queue`` joins."""
    return f"{settings.topic_prefix}g.{queue}"


def table_topic(settings: KafkaSettings, table: str) -> str:
    return f"{settings.topic_prefix}t.{table}"


def queue_spec(settings: KafkaSettings, queue: str) -> TopicSpec:
    return TopicSpec(
        name=queue_topic(settings, queue),
        partitions=settings.partitions,
        config=dict(_QUEUE_CONFIG),
    )


def logs_spec(settings: KafkaSettings) -> TopicSpec:
    """The log lines, keyed by execution id (``backends.kafka.logs``)."""
    return TopicSpec(
        name=f"{settings.topic_prefix}logs",
        partitions=settings.partitions,
        config=dict(_LOGS_CONFIG),
    )


def leader_spec(settings: KafkaSettings) -> TopicSpec:
    """The leader lock's claims: one partition, so every process reads one order
    (``backends.kafka.leader``); six hours of them, far longer than any lease."""
    return TopicSpec(
        name=f"{settings.topic_prefix}leader",
        partitions=1,
        config={
            "cleanup.policy": "delete",
            "retention.ms": str(6 * 3600 * 1000),
            "segment.ms": str(3600 * 1000),
        },
    )


def all_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic ``runtime migrate`` makes. The executions table has the partitions of
    the executions queue, so an execution's state and its events share a partition
    number (the executor restores exactly the partitions it owns)."""
    specs = [queue_spec(settings, q) for q in QUEUES]
    specs += [
        TopicSpec(
            name=table_topic(settings, t), partitions=settings.partitions, config=dict(_COMPACT)
        )
        for t in TABLES
    ]
    specs += [logs_spec(settings), leader_spec(settings)]
    return specs


async def ensure_topics(settings: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics of ``specs`` that do not exist; the names created. An existing
    topic is left as it is (changing its partitions would move keys)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.servers, client_id=f"{settings.topic_prefix}admin"
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        # another process may make one between our listing and our request
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        s.partitions,
                        settings.replication_factor,
                        topic_configs=s.config,
                    )
                    for s in missing
                ]
            )
        return [s.name for s in missing]
    except KafkaError as exc:
        raise Transient(
            f"Kafka at {settings.bootstrap_servers}: cannot create topics ({exc!r}); check that"
            " the brokers run and `backend.bootstrap_servers` names them"
        ) from exc
    finally:
        await admin.close()


async def migrate(settings: KafkaSettings) -> list[str]:
    """``runtime migrate`` on Kafka: create every topic of the backend that is missing."""
    return await ensure_topics(settings, all_specs(settings))
