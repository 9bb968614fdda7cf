"""Helpers of the search tests: noida-db (Kafka + Elasticsearch), a Kafka backend
and search settings with names of their own per test, an indexer run in-process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
from aiokafka import AIOKafkaProducer

from backends.elasticsearch.backend import SearchBackend
from backends.elasticsearch.settings import SearchSettings
from backends.elasticsearch.store import SearchStore
from backends.elasticsearch.testing import SearchServer
from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.storage_local import LocalStorage
from runtime.actors import ActorSystem, ChildSpec
from runtime.config import BackendConfig, Config, IndexerConfig, SearchConfig, WebserverConfig
from runtime.flow.execution import Execution, new_execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry
from services.indexer import Indexer, logs_topic
from services.standalone import Server
from services.webserver import create_app
from tests.services.server_helpers import settings as server_settings
from tests.webserver.helpers import Api

FAST = IndexerConfig(fetch_wait_ms=50, retry_first_seconds=0.1, retry_max_seconds=0.5)


@dataclass
class Deployment:
    """A Kafka backend and the search store on one noida-db, named for one test."""

    server: SearchServer
    kafka: KafkaSettings
    search: SearchSettings
    backend: KafkaBackend
    store: SearchStore

    async def log(self, *entries: LogEntry) -> None:
        """Write log lines to the logs topic, as the workers do on Kafka."""
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.servers)
        await producer.start()
        try:
            for entry in entries:
                await producer.send_and_wait(
                    logs_topic(self.kafka),
                    msgspec.json.encode(entry),
                    key=entry.execution_id.encode(),
                )
        finally:
            await producer.stop()


def names(server: SearchServer, *, partitions: int = 2) -> tuple[KafkaSettings, SearchSettings]:
    tag = secrets.token_hex(4)
    kafka = KafkaSettings(
        bootstrap_servers=server.bootstrap_servers, topic_prefix=f"s{tag}.", partitions=partitions
    )
    search = SearchSettings(hosts=(server.es_url,), index_prefix=f"s{tag}_")
    return kafka, search


@asynccontextmanager
async def deployment(server: SearchServer, *, partitions: int = 2) -> AsyncIterator[Deployment]:
    kafka, search = names(server, partitions=partitions)
    backend = KafkaBackend(kafka)
    store = SearchStore(search)
    await backend.start()
    try:
        await store.migrate()
        yield Deployment(server, kafka, search, backend, store)
    finally:
        await store.close()
        await backend.stop()


@asynccontextmanager
async def indexer(d: Deployment, **kwargs: object) -> AsyncIterator[Indexer]:
    """An indexer in a supervision tree of its own, until the block exits."""
    component = Indexer(d.kafka, d.search, FAST, **kwargs)  # type: ignore[arg-type]
    system = ActorSystem([ChildSpec(id="indexer", start=component.run, shutdown_timeout=10.0)])
    await system.start()
    try:
        yield component
    finally:
        await system.stop()


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Seconds until ``check`` holds (AssertionError past ``within``)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def execution(
    id: str,
    namespace: str,
    flow_id: str,
    at: datetime,
    states: tuple[StateType, ...] = (),
    labels: dict[str, str] | None = None,
) -> Execution:
    e = new_execution(
        id=id, namespace=namespace, flow_id=flow_id, flow_revision=1, at=at, labels=labels
    )
    for n, state in enumerate(states, start=1):
        e = msgspec.structs.replace(e, state=e.state.to(state, at.replace(second=n)))
    return e


def ha_config(base: Config, kafka: KafkaSettings, search: SearchSettings) -> Config:
    """``base`` on the Kafka backend with the search store, the indexer quick."""
    return msgspec.structs.replace(
        base,
        backend=BackendConfig(
            type="kafka",
            bootstrap_servers=kafka.bootstrap_servers,
            topic_prefix=kafka.topic_prefix,
            partitions=kafka.partitions,
        ),
        search=SearchConfig(
            type="elasticsearch", hosts=search.hosts[0], index_prefix=search.index_prefix
        ),
        indexer=FAST,
    )


@asynccontextmanager
async def ha_api(
    server: SearchServer,
    tmp_path: Path,
    *,
    components: tuple[str, ...] = ("executor", "worker", "indexer"),
) -> AsyncIterator[Api]:
    """The API as the high-availability size serves it: the Kafka backend with an
    executor, a worker and the indexer running, the webserver's reads through the
    search store; reached in-process through httpx."""
    kafka, search = names(server)
    config = ha_config(server_settings(), kafka, search)
    async with AsyncExitStack() as stack:
        running = Server(
            config, components=components, storage=LocalStorage(tmp_path / "storage"), watch=False
        )
        await stack.enter_async_context(running)
        store = SearchStore(search)
        stack.push_async_callback(store.close)
        await store.migrate()
        web = SearchBackend(running.backend, store)
        app = create_app(
            web, running.storage, WebserverConfig(poll_seconds=0.02), flows=running.flows
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        yield Api(client, running, app)
