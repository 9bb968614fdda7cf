"""Settings: the example config loads, environment variables override, errors name keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import ConfigError, load_config

ROOT = Path(__file__).parents[2]


def test_the_example_config_is_valid_and_matches_the_defaults() -> None:
    loaded = load_config(ROOT / "config" / "standalone.yml", environ={})
    assert loaded == load_config(None, environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("worker:\n  concurrency: 3\n")
    config = load_config(
        path, environ={"RUNTIME_WORKER_CONCURRENCY": "16", "RUNTIME_DATA_DIR": "/x"}
    )
    assert config.worker.concurrency == 16
    assert config.sqlite_path() == Path("/x/runtime.db")


def test_errors_name_the_key_the_variable_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("worker:\n  concurency: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yml: setting `worker\.concurency`.*unknown setting"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match=r"RUNTIME_WORKER_CONCURRENCY.*Expected `int`"):
        load_config(None, environ={"RUNTIME_WORKER_CONCURRENCY": "lots"})


def test_the_ha_config_selects_kafka_with_env_overrides() -> None:
    from backends.kafka.settings import KafkaSettings

    config = load_config(ROOT / "config" / "ha-kafka.yml", environ={})
    settings = KafkaSettings.from_config(config)
    assert config.backend.type == "kafka"
    assert len(settings.servers) == 3
    assert settings.replication_factor == 3
    override = load_config(
        ROOT / "config" / "ha-kafka.yml",
        environ={"RUNTIME_BACKEND_BOOTSTRAP_SERVERS": "127.0.0.1:9092"},
    )
    assert KafkaSettings.from_config(override).servers == ["127.0.0.1:9092"]


def test_the_medium_configs_use_shared_storage_with_env_overrides() -> None:
    for name in ("medium-postgres.yml", "medium-mysql.yml", "ha-kafka.yml"):
        config = load_config(ROOT / "config" / name, environ={})
        assert (config.storage.type, config.storage.bucket) == ("s3", "runtime-storage")
        override = load_config(
            ROOT / "config" / name,
            environ={
                "RUNTIME_STORAGE_BUCKET": "other",
                "RUNTIME_STORAGE_ENDPOINT_URL": "http://127.0.0.1:8333",
                "RUNTIME_STORAGE_PATH_STYLE": "true",
                "RUNTIME_STORAGE_PARALLEL_PARTS": "4",
            },
        )
        assert override.storage.bucket == "other"
        assert override.storage.endpoint_url == "http://127.0.0.1:8333"
        assert override.storage.path_style is True
        assert override.storage.parallel_parts == 4


def test_the_metrics_listener_and_tracing_are_off_unless_set() -> None:
    default = load_config(None, environ={})
    assert default.metrics.port is None
    assert default.tracing.endpoint is None
    set_ = load_config(
        None,
        environ={
            "RUNTIME_METRICS_PORT": "9100",
            "RUNTIME_TRACING_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
        },
    )
    assert (set_.metrics.host, set_.metrics.port) == ("127.0.0.1", 9100)
    assert set_.tracing.endpoint == "http://127.0.0.1:4318/v1/traces"
    with pytest.raises(ConfigError, match="metrics"):
        load_config(None, environ={"RUNTIME_METRICS_PORT": "many"})
