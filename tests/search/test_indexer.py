"""The indexer on noida-db: topics to indices, versioned, offsets after the bulk."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import msgspec
import pytest
from click.testing import CliRunner

from backends.elasticsearch import documents, indices
from backends.elasticsearch.store import SearchStore
from backends.elasticsearch.testing import SearchServer
from backends.elasticsearch.writer import Write
from backends.errors import Transient
from backends.kafka.testing import free_port
from backends.kafka.topics import table_topic
from backends.protocols import ExecutionFilter
from runtime.flow.execution import Execution, TaskRun
from runtime.flow.states import State, StateType
from services import metrics
from services.cli import cli
from tests.search.helpers import deployment, execution, indexer, names, until

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.mark.asyncio
async def test_executions_reach_the_index(search_server: SearchServer) -> None:
    async with deployment(search_server) as d:
        first = execution("e1", "co.team", "f", T0)
        await d.backend.executions.save(first)
        async with indexer(d):

            async def indexed() -> bool:
                _, total = await d.store.executions.find(ExecutionFilter(namespace="co"))
                return total == 1

            await until(indexed, 20, "e1 indexed")
            done = execution("e1", "co.team", "f", T0, (StateType.RUNNING, StateType.SUCCESS))
            await d.backend.executions.save(done)

            async def ended() -> bool:
                got = await d.store.executions.get("e1")
                return got is not None and got.state.current is StateType.SUCCESS

            await until(ended, 20, "e1 SUCCESS indexed")


def _states(n: int) -> list[Execution]:
    """One execution's successive states: each has one more task run."""
    base = execution("ex", "co", "f", T0, (StateType.RUNNING,))
    states = []
    for i in range(n):
        run = TaskRun(
            id=f"r{i}",
            execution_id="ex",
            namespace="co",
            flow_id="f",
            task_id=f"t{i}",
            state=State.new(StateType.SUCCESS, T0),
        )
        base = msgspec.structs.replace(base, task_run_list=(*base.task_run_list, run))
        states.append(base)
    return states


@pytest.mark.asyncio
async def test_out_of_order_and_duplicated_writes_end_with_the_newest(
    search_server: SearchServer,
) -> None:
    async with deployment(search_server) as d:
        states = _states(12)
        index = d.store.index(indices.EXECUTIONS)
        writes = [
            Write(index=index, id="ex", version=v * 10, source=documents.execution_doc(s))
            for v, s in enumerate(states)
        ]
        rng = random.Random(7)
        shuffled = writes + rng.sample(writes, 6)  # duplicates too
        rng.shuffle(shuffled)
        stale = written = 0
        for start in range(0, len(shuffled), 5):
            result = await d.store.bulk(shuffled[start : start + 5])
            stale += result.stale
            written += result.written
            assert result.rejected == 0
        assert stale > 0
        assert written + stale == len(shuffled)
        assert await d.store.executions.get("ex") == states[-1]
        # one bulk holding an old state after the newest changes nothing either
        result = await d.store.bulk([writes[-1], writes[0], writes[3]])
        assert result.stale == 3
        assert await d.store.executions.get("ex") == states[-1]


@pytest.mark.asyncio
async def test_a_rereading_indexer_never_goes_back(search_server: SearchServer) -> None:
    async with deployment(search_server) as d:
        states = _states(6)
        for state in states:
            await d.backend.executions.save(state)

        async def newest() -> bool:
            return await d.store.executions.get("ex") == states[-1]

        async with indexer(d):
            await until(newest, 20, "the newest state indexed")
        # a second group reads every record again, oldest first: all refused as stale
        async with indexer(d, group_id=f"{d.kafka.topic_prefix}again") as again:

            async def reread() -> bool:
                return again.stale >= len(states)

            await until(reread, 20, "the records read again")
            assert again.written == 0
            assert await d.store.executions.get("ex") == states[-1]


@pytest.mark.asyncio
async def test_search_store_down_is_lag_not_loss(search_server: SearchServer) -> None:
    async with deployment(search_server) as d, indexer(d) as running:
        await d.backend.executions.save(execution("e0", "co", "f", T0))

        async def first() -> bool:
            return await d.store.executions.get("e0") is not None

        await until(first, 20, "e0 indexed")
        search_server.stop_search()
        try:
            for n in range(1, 21):
                await d.backend.executions.save(execution(f"e{n}", "co", "f", T0))
            topic = table_topic(d.kafka, "executions")

            async def lagging() -> bool:
                return running.lag.get(topic, 0) > 0 and running.retries > 0

            await until(lagging, 20, "the lag shows while the store is down")
            assert metrics.INDEXER_LAG.labels(topic)._value.get() > 0
            with pytest.raises(Transient, match=r"search store .* is unreachable"):
                await d.store.executions.find(ExecutionFilter())
        finally:
            search_server.start_search()

        async def all_indexed() -> bool:
            _, total = await d.store.executions.find(ExecutionFilter(), limit=0)
            return total == 21 and running.lag.get(topic) == 0

        await until(all_indexed, 60, "every execution indexed once the store is back")


@pytest.mark.asyncio
async def test_a_mapping_change_moves_the_data_behind_the_alias(
    search_server: SearchServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with deployment(search_server) as d:
        states = _states(3)
        index = d.store.index(indices.EXECUTIONS)
        await d.store.bulk(
            [Write(index=index, id="ex", version=5, source=documents.execution_doc(states[1]))]
        )
        newer = msgspec.structs.replace(
            indices.EXECUTIONS,
            version=2,
            properties={**indices.EXECUTIONS.properties, "extra": {"type": "keyword"}},
        )
        monkeypatch.setattr(
            indices, "ALL", tuple(newer if s.name == "executions" else s for s in indices.ALL)
        )
        created = await d.store.migrate()
        assert created == [indices.concrete(d.search, newer)]
        aliases = await d.store.es.indices.get_alias(name=index)
        assert list(aliases.body) == [indices.concrete(d.search, newer)]
        # the document moved with its version: an older state is still refused
        assert await d.store.executions.get("ex") == states[1]
        stale = await d.store.bulk(
            [Write(index=index, id="ex", version=4, source=documents.execution_doc(states[0]))]
        )
        assert stale.stale == 1
        assert await d.store.migrate() == []  # nothing left to do


def test_runtime_migrate_makes_the_indices(search_server: SearchServer) -> None:
    kafka, search = names(search_server)
    env = {
        "RUNTIME_BACKEND_TYPE": "kafka",
        "RUNTIME_BACKEND_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "RUNTIME_BACKEND_TOPIC_PREFIX": kafka.topic_prefix,
        "RUNTIME_SEARCH_TYPE": "elasticsearch",
        "RUNTIME_SEARCH_HOSTS": search.hosts[0],
        "RUNTIME_SEARCH_INDEX_PREFIX": search.index_prefix,
    }
    first = CliRunner().invoke(cli, ["migrate"], env=env)
    assert first.exit_code == 0, first.output
    assert first.output.count("created index") == len(indices.ALL)
    assert "search indices on" in first.output
    again = CliRunner().invoke(cli, ["migrate"], env=env)
    assert again.exit_code == 0, again.output
    assert "created index" not in again.output
    down = CliRunner().invoke(
        cli, ["migrate"], env={**env, "RUNTIME_SEARCH_HOSTS": f"http://127.0.0.1:{free_port()}"}
    )
    assert down.exit_code == 1
    assert "search store (Elasticsearch at http://127.0.0.1:" in down.output


@pytest.mark.asyncio
async def test_migrations_at_the_same_time_agree(search_server: SearchServer) -> None:
    _, search = names(search_server)
    stores = [SearchStore(search) for _ in range(3)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
        made = sorted(name for created in results for name in created)
        assert made == sorted(indices.concrete(search, spec) for spec in indices.ALL)
    finally:
        await asyncio.gather(*(s.close() for s in stores))
