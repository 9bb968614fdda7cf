"""The Kafka backend's settings, checked once, with errors that name the setting."""

from __future__ import annotations

import re

import msgspec

from runtime.config import Config, ConfigError

#: message ids are ``offset * MAX_PARTITIONS + partition`` (unique per queue, stable
#: across redeliveries), so a topic may not have more partitions than this
MAX_PARTITIONS = 1024
_PREFIX = re.compile(r"[A-Za-z0-9._-]*")


class KafkaSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the brokers are and how the topics are made."""

    #: comma-separated ``host:port`` of the brokers
    bootstrap_servers: str
    #: put before every topic and consumer group name, to share a cluster
    topic_prefix: str = "runtime."
    partitions: int = 12
    replication_factor: int = 1
    #: where the executor keeps its partitions' running executions: memory, or sqlite
    #: (a file under ``state_dir``, for state larger than memory)
    state_store: str = "memory"
    #: the folder of the sqlite state store (default: the working directory)
    state_dir: str | None = None
    #: one Kafka transaction per unit of work (outputs and consumed offsets together);
    #: False: a plain producer, offsets committed once the outputs are acknowledged
    #: (at least once; for brokers without transactions)
    exactly_once: bool = True

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers or any(":" not in s for s in servers):
            raise ConfigError(
                f"setting `backend.bootstrap_servers` (or RUNTIME_BACKEND_BOOTSTRAP_SERVERS):"
                f" {self.bootstrap_servers!r} is not a comma-separated list of host:port,"
                " e.g. 127.0.0.1:9092"
            )
        if not _PREFIX.fullmatch(self.topic_prefix):
            raise ConfigError(
                f"setting `backend.topic_prefix` (or RUNTIME_BACKEND_TOPIC_PREFIX):"
                f" {self.topic_prefix!r} may hold only letters, digits, '.', '_' and '-'"
                " (Kafka's topic name characters)"
            )
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ConfigError(
                f"setting `backend.partitions` (or RUNTIME_BACKEND_PARTITIONS):"
                f" {self.partitions} must be between 1 and {MAX_PARTITIONS}"
            )
        if self.state_store not in ("memory", "sqlite"):
            raise ConfigError(
                f"setting `backend.state_store` (or RUNTIME_BACKEND_STATE_STORE):"
                f" {self.state_store!r} must be memory or sqlite"
            )
        if self.replication_factor < 1:
            raise ConfigError(
                f"setting `backend.replication_factor` (or RUNTIME_BACKEND_REPLICATION_FACTOR):"
                f" {self.replication_factor} must be 1 or more"
            )

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    @classmethod
    def from_config(cls, config: Config) -> KafkaSettings:
        backend = config.backend
        if not backend.bootstrap_servers:
            raise ConfigError(
                "setting `backend.bootstrap_servers` (or RUNTIME_BACKEND_BOOTSTRAP_SERVERS) is"
                " required for the kafka backend, e.g. 127.0.0.1:9092"
            )
        return cls(
            bootstrap_servers=backend.bootstrap_servers,
            topic_prefix=backend.topic_prefix,
            partitions=backend.partitions,
            replication_factor=backend.replication_factor,
            state_store=backend.state_store,
            state_dir=backend.state_dir,
            exactly_once=backend.exactly_once,
        )
