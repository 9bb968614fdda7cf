"""Settings: a YAML file, then environment variables, then defaults.

Every setting can be overridden by an environment variable named
``RUNTIME_<SECTION>_<KEY>`` in upper case (``RUNTIME_WORKER_CONCURRENCY=16``,
``RUNTIME_BACKEND_TYPE=sqlite``); top-level keys are ``RUNTIME_<KEY>``
(``RUNTIME_DATA_DIR``). Errors name the key and the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the key and where it came from."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class BackendConfig(_Section, frozen=True, kw_only=True):
    #: sqlite (the embedded default), postgres, mysql (MySQL 8 / MariaDB 10.6+) or
    #: memory (nothing kept)
    type: str = "sqlite"
    #: the SQLite database file; default: <data_dir>/runtime.db
    path: str | None = None
    #: SQLite synchronous mode: FULL (durable commits, the default) or NORMAL
    synchronous: str = "FULL"
    #: a PostgreSQL/MySQL DSN, for the backends that need one
    dsn: str | None = None
    #: the PostgreSQL schema holding runtime's tables
    schema: str = "public"
    #: connections in the process's pool
    pool_max: int = 10
    #: mysql: the longest an idle queue's consumers wait between polls (seconds): how
    #: late, at most, a message another process published is seen once all is quiet
    poll_seconds: float = 0.5
    #: kafka: the brokers, comma-separated host:port
    bootstrap_servers: str | None = None
    #: kafka: the prefix of every topic and consumer group name
    topic_prefix: str = "runtime."
    #: kafka: partitions of each topic `runtime migrate` creates
    partitions: int = 12
    #: kafka: replicas of each topic `runtime migrate` creates (3 in production)
    replication_factor: int = 1
    #: kafka: where an executor keeps its partitions' running executions: memory, or
    #: sqlite (a file under state_dir, for state larger than memory)
    state_store: str = "memory"
    #: kafka: the folder of the sqlite state store (default: the working directory)
    state_dir: str | None = None
    #: kafka: one transaction per unit of work (exactly once); false for brokers
    #: without transactions: at least once, duplicates absorbed by the engine's dedup
    exactly_once: bool = True


class StorageConfig(_Section, frozen=True, kw_only=True):
    #: local (a folder on this host), or shared across hosts: s3 (AWS, MinIO,
    #: SeaweedFS, ...), gcs (Google Cloud Storage) or azure (Azure Blob)
    type: str = "local"
    #: local: the folder; default: <data_dir>/storage
    path: str | None = None
    #: s3, gcs: the bucket; azure: the container
    bucket: str | None = None
    #: s3, gcs, azure: another address than the cloud's (MinIO, SeaweedFS, an emulator)
    endpoint_url: str | None = None
    #: s3: the bucket's region (default us-east-1)
    region: str | None = None
    #: s3, gcs, azure: a key prefix in the bucket, for sharing one with others
    prefix: str = ""
    #: s3: path-style addresses (http://host/bucket/key); default: on with an
    #: endpoint_url, AWS's choice without
    path_style: bool | None = None
    #: s3: credentials; default: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, roles
    access_key_id: str | None = None
    secret_access_key: str | None = None
    #: gcs: a service-account JSON file; default: GOOGLE_APPLICATION_CREDENTIALS or
    #: the machine's default credentials
    credentials_file: str | None = None
    #: azure: a connection string; default: AZURE_STORAGE_CONNECTION_STRING
    connection_string: str | None = None
    #: azure, without a connection string: the account, with its key or a SAS token
    account_name: str | None = None
    account_key: str | None = None
    sas_token: str | None = None
    #: object stores: the part size of uploads, in MiB (at least 5)
    part_size_mb: int = 8
    #: object stores: parts of one upload sent at once (each holds a part in memory)
    parallel_parts: int = 1


class ExecutorConfig(_Section, frozen=True, kw_only=True):
    batch: int = 100
    lease_seconds: float = 60.0
    idle_wait_seconds: float = 1.0
    #: how often it refreshes its entry in the service registry (the instance page)
    heartbeat_seconds: float = 2.0


class WorkerConfig(_Section, frozen=True, kw_only=True):
    concurrency: int = 8
    lease_seconds: float = 24 * 3600.0
    heartbeat_seconds: float = 2.0
    kill_poll_seconds: float = 0.5
    grace_seconds: float = 30.0
    log_flush_seconds: float = 0.2
    #: a task still running after this long is reported RUNNING (shorter ones only end)
    running_report_seconds: float = 0.5
    process_pool: int = 2
    #: a job handed back this many times (its worker died, hung or was stopped while
    #: running it) fails instead of running again: no poison job re-queued for ever
    max_requeues: int = 2
    workdir: str | None = None


class SchedulerConfig(_Section, frozen=True, kw_only=True):
    tick_seconds: float = 1.0
    leader_ttl_seconds: float = 10.0
    #: a missed date is "late" (recovered per recoverMissedSchedules) past this many seconds
    late_after_seconds: float = 60.0


class LivenessConfig(_Section, frozen=True, kw_only=True):
    interval_seconds: float = 2.0
    worker_timeout_seconds: float = 15.0


class WebserverUser(_Section, frozen=True, kw_only=True):
    """One basic-authentication account of the REST API."""

    username: str
    password: str


class VariablesConfig(_Section, frozen=True, kw_only=True):
    """What every template sees besides the execution: Kestra's ``globals`` and
    ``envs`` (the process environment's variables named with ``env_vars_prefix``,
    without it, in lower case: ``KESTRA_REGION`` is ``{{ envs.region }}``)."""

    globals: dict[str, Any] = {}
    env_vars_prefix: str = "KESTRA_"


class WebserverConfig(_Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests)
    port: int = 8080
    #: the largest request body accepted, uploads aside (413 past it)
    max_body_bytes: int = 10 * 1024 * 1024
    #: the largest multipart request (FILE inputs), streamed to storage as it arrives
    max_upload_bytes: int = 1024 * 1024 * 1024
    #: basic-authentication accounts; when any is given every endpoint but the health
    #: checks requires one (RUNTIME_WEBSERVER_USERS='[{username: a, password: b}]')
    users: tuple[WebserverUser, ...] = ()
    #: whether webhook URLs also require those credentials; off as in Kestra, where the
    #: webhook's key (part of its URL) is the credential and callers send no other
    webhook_auth: bool = False
    #: how often live follows (SSE) poll the backend for changes
    poll_seconds: float = 0.25
    #: how long a graceful stop waits for open requests (SSE streams are ended at once)
    shutdown_seconds: float = 5.0


class MetricsConfig(_Section, frozen=True, kw_only=True):
    """A listener serving only ``GET /metrics``, for processes without a webserver
    (which serves ``/metrics`` itself). Off unless ``port`` is set; 0 picks a free one.
    Under basic authentication when ``webserver.users`` are configured."""

    host: str = "127.0.0.1"
    port: int | None = None


class TracingConfig(_Section, frozen=True, kw_only=True):
    """OpenTelemetry traces (the ``opentelemetry`` extra): an execution as a trace,
    its task runs as spans, sent by the executor once the execution has ended."""

    #: an OTLP/HTTP traces URL (``http://127.0.0.1:4318/v1/traces``); unset, none
    endpoint: str | None = None
    service_name: str = "runtime"


class TemplateConfig(_Section, frozen=True, kw_only=True):
    """The budget of every template evaluation (one property, one condition)."""

    #: CPU time one evaluation may use; past it the evaluation fails with its name
    cpu_seconds: float = 1.0
    #: bytes of values one evaluation may build (intermediate values count)
    memory_bytes: int = 64 * 1024 * 1024
    #: how long an evaluation may run on a component's event loop before it moves
    #: to a thread (so /health and the other executions never wait on it)
    loop_slice_seconds: float = 0.02


class SearchConfig(_Section, frozen=True, kw_only=True):
    """The search store the webserver lists, searches and aggregates in (the
    high-availability size), fed by the indexer (issue 14)."""

    #: elasticsearch, or none (the backend's database serves the searches itself)
    type: str = "none"
    #: comma-separated Elasticsearch URLs, e.g. http://127.0.0.1:9200
    hosts: str | None = None
    #: put before every index and alias name, to share a cluster
    index_prefix: str = "runtime_"
    #: basic-authentication credentials, or an API key (base64 id:key)
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    #: how long one request may take before the store counts as unreachable
    request_timeout_seconds: float = 10.0


class IndexerConfig(_Section, frozen=True, kw_only=True):
    """The indexer: topics to the search store, in bulk requests."""

    #: records per bulk request at most
    batch: int = 500
    #: how long a fetch waits for records to fill a batch (milliseconds)
    fetch_wait_ms: int = 200
    #: the first and the longest wait between bulk attempts while the store is down
    retry_first_seconds: float = 0.5
    retry_max_seconds: float = 30.0
    #: how often the lag is logged
    lag_log_seconds: float = 30.0
    #: the consumer group's rebalance timeout: how long a rebalance waits for a member
    #: that stopped polling (one stuck on a long outage of the search store rejoins
    #: after it, and re-reads its uncommitted batch: versioned, so harmless)
    rebalance_timeout_seconds: float = 60.0


class Config(_Section, frozen=True, kw_only=True):
    #: where the embedded database and the local storage live by default
    data_dir: str | None = None
    log_level: str = "INFO"
    backend: BackendConfig = BackendConfig()
    storage: StorageConfig = StorageConfig()
    executor: ExecutorConfig = ExecutorConfig()
    worker: WorkerConfig = WorkerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    liveness: LivenessConfig = LivenessConfig()
    webserver: WebserverConfig = WebserverConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    template: TemplateConfig = TemplateConfig()
    variables: VariablesConfig = VariablesConfig()
    search: SearchConfig = SearchConfig()
    indexer: IndexerConfig = IndexerConfig()

    def resolved_data_dir(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "runtime"

    def sqlite_path(self) -> Path:
        return (
            Path(self.backend.path).expanduser()
            if self.backend.path
            else (self.resolved_data_dir() / "runtime.db")
        )

    def storage_path(self) -> Path:
        return (
            Path(self.storage.path).expanduser()
            if self.storage.path
            else (self.resolved_data_dir() / "storage")
        )


_SECTIONS = {
    name: info.type
    for info in msgspec.structs.fields(Config)
    if isinstance(info.type, type) and issubclass(info.type, _Section)
    for name in [info.name]
}


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (if given), apply ``RUNTIME_*`` environment overrides, validate."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections")
        data = loaded
    for name, value in environ.items():
        if not name.startswith("RUNTIME_"):
            continue
        rest = name.removeprefix("RUNTIME_").lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section is not None:
            key = rest.removeprefix(section + "_")
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(f"{source}: `{section}` must be a mapping")
            data[section][key] = _env_value(value)
        elif rest in {f.name for f in msgspec.structs.fields(Config)}:
            data[rest] = _env_value(value)
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        message, found, where = str(exc).rpartition(" - at `$")
        if not found:  # at the top level msgspec names no path
            message, where = str(exc), ""
        key = where.rstrip("`").lstrip(".") if where else ""
        if "unknown field `" in message:
            field = message.split("unknown field `", 1)[1].split("`", 1)[0]
            key = f"{key}.{field}" if key else field
            message = "unknown setting"
        env = f" (or RUNTIME_{key.replace('.', '_').upper()})" if key else ""
        raise ConfigError(f"{source}: setting `{key}`{env}: {message or exc}") from None


def _env_value(value: str) -> Any:
    """Environment values are YAML scalars: numbers and booleans convert."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value
