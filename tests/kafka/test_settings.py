"""The Kafka backend's settings and `runtime migrate` on Kafka."""

from __future__ import annotations

import secrets

import pytest
from click.testing import CliRunner

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import BrokerProcess, free_port
from backends.kafka.topics import all_specs
from runtime.config import ConfigError, load_config
from services.cli import cli
from services.standalone import make_backend


def test_environment_variables_select_the_brokers_and_topics() -> None:
    config = load_config(
        environ={
            "RUNTIME_BACKEND_TYPE": "kafka",
            "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": "10.0.0.1:9092, 10.0.0.2:9092",
            "RUNTIME_BACKEND_TOPIC_PREFIX": "prod.",
            "RUNTIME_BACKEND_PARTITIONS": "24",
            "RUNTIME_BACKEND_REPLICATION_FACTOR": "3",
        }
    )
    settings = KafkaSettings.from_config(config)
    assert settings.servers == ["10.0.0.1:9092", "10.0.0.2:9092"]
    assert (settings.topic_prefix, settings.partitions, settings.replication_factor) == (
        "prod.",
        24,
        3,
    )
    assert all(spec.name.startswith("prod.") for spec in all_specs(settings))


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "RUNTIME_BACKEND_BOOTSTRAP_SERVERS",
            "localhost",
            r"backend\.bootstrap_servers.*host:port",
        ),
        ("RUNTIME_BACKEND_TOPIC_PREFIX", "a/b", r"backend\.topic_prefix.*Kafka's topic name"),
        ("RUNTIME_BACKEND_PARTITIONS", "0", r"backend\.partitions.*between 1 and 1024"),
        ("RUNTIME_BACKEND_REPLICATION_FACTOR", "0", r"backend\.replication_factor.*1 or more"),
    ],
)
def test_bad_settings_name_the_setting(variable: str, value: str, message: str) -> None:
    environ = {"RUNTIME_BACKEND_BOOTSTRAP_SERVERS": "127.0.0.1:9092", variable: value}
    with pytest.raises(ConfigError, match=message):
        KafkaSettings.from_config(load_config(environ=environ))


def test_missing_brokers_are_named() -> None:
    with pytest.raises(ConfigError, match=r"backend\.bootstrap_servers.*required"):
        KafkaSettings.from_config(load_config(environ={"RUNTIME_BACKEND_TYPE": "kafka"}))


def test_kafka_is_selected_by_the_environment() -> None:
    config = load_config(
        environ={
            "RUNTIME_BACKEND_TYPE": "kafka",
            "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": "127.0.0.1:9092, h2:9093",
            "RUNTIME_BACKEND_TOPIC_PREFIX": "prod.",
        }
    )
    backend = make_backend(config)
    assert isinstance(backend, KafkaBackend)
    assert backend.settings.servers == ["127.0.0.1:9092", "h2:9093"]
    assert backend.settings.topic_prefix == "prod."


def test_kafka_without_brokers_is_refused_by_make_backend() -> None:
    with pytest.raises(ConfigError, match=r"backend\.bootstrap_servers.*required"):
        make_backend(load_config(environ={"RUNTIME_BACKEND_TYPE": "kafka"}))


@pytest.mark.slow
def test_runtime_migrate_creates_the_topics(broker: BrokerProcess) -> None:
    env = {
        "RUNTIME_BACKEND_TYPE": "kafka",
        "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "RUNTIME_BACKEND_TOPIC_PREFIX": f"m{secrets.token_hex(3)}.",
        "RUNTIME_BACKEND_PARTITIONS": "2",
    }
    result = CliRunner().invoke(cli, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count("created topic") == 10
    assert "topics under prefix" in result.output
    again = CliRunner().invoke(cli, ["migrate"], env=env)
    assert again.exit_code == 0, again.output
    assert "created topic" not in again.output


def test_runtime_migrate_names_unreachable_brokers() -> None:
    env = {
        "RUNTIME_BACKEND_TYPE": "kafka",
        "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    result = CliRunner().invoke(cli, ["migrate"], env=env)
    assert result.exit_code == 1
    assert "Kafka at 127.0.0.1:" in result.output
    assert "Traceback" not in result.output
