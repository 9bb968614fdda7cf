"""The search store answers as the memory store does (the reference every backend
passes): the same executions, flows, triggers and logs written to both, the same
questions asked of both. Data reach Elasticsearch the real way: written to the
Kafka backend's topics, indexed by the indexer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from backends.elasticsearch.repositories import PageTooDeep
from backends.elasticsearch.testing import SearchServer
from backends.memory import MemoryBackend
from backends.protocols import ExecutionFilter, LogFilter, TriggerState
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry
from tests.search.helpers import Deployment, deployment, execution, indexer, until

pytestmark = pytest.mark.asyncio

S = StateType
T0 = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
NAMESPACES = ("co", "co.team", "co.team.sub", "company", "other")
FLOWS = ("alpha", "Beta", "gamma_1")
ENDINGS: tuple[tuple[StateType, ...], ...] = (
    (),
    (S.RUNNING,),
    (S.RUNNING, S.SUCCESS),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.KILLING, S.KILLED),
    (S.QUEUED,),
    (S.RUNNING, S.WARNING),
)


def corpus() -> tuple[list[Execution], list[LogEntry]]:
    rng = random.Random(14)
    executions: list[Execution] = []
    logs: list[LogEntry] = []
    for n in range(60):
        at = T0 + timedelta(hours=rng.randrange(0, 96), minutes=rng.randrange(60))
        labels = {"team": rng.choice(["data", "ops"])}
        if n % 3 == 0:
            labels["env"] = rng.choice(["prod", "dev"])
        e = execution(
            f"ex{n:03d}{rng.choice(['A', 'b', '_c'])}",
            rng.choice(NAMESPACES),
            rng.choice(FLOWS),
            at,
            rng.choice(ENDINGS),
            labels,
        )
        executions.append(e)
        for line in range(rng.randrange(0, 4)):
            logs.append(
                LogEntry(
                    execution_id=e.id,
                    namespace=e.namespace,
                    flow_id=e.flow_id,
                    timestamp=at + timedelta(seconds=line),
                    level=rng.choice(["DEBUG", "INFO", "WARN", "ERROR"]),
                    message=rng.choice(["Hello World", "disk 90% full", "a_b*c", "Done."]),
                    task_id=rng.choice(["t1", "t2"]),
                    task_run_id=f"{e.id}-r{line % 2}",
                    attempt=line % 2,
                )
            )
    return executions, logs


FILTERS = [
    ExecutionFilter(),
    ExecutionFilter(namespace="co"),
    ExecutionFilter(namespace="co.team"),
    ExecutionFilter(namespace="comp"),
    ExecutionFilter(flow_id="Beta"),
    ExecutionFilter(flow_id="beta"),
    ExecutionFilter(states=(S.SUCCESS, S.FAILED)),
    ExecutionFilter(states=()),
    ExecutionFilter(started_after=T0 + timedelta(days=1)),
    ExecutionFilter(started_before=T0 + timedelta(days=2), started_after=T0 + timedelta(hours=5)),
    ExecutionFilter(labels=(("team", "data"),)),
    ExecutionFilter(labels=(("team", "data"), ("env", "prod"))),
    ExecutionFilter(labels=(("team", "nobody"),)),
    ExecutionFilter(query="TEAM"),
    ExecutionFilter(query="_c"),
    ExecutionFilter(query="ex01"),
    ExecutionFilter(query="*"),
    ExecutionFilter(namespace="co", states=(S.RUNNING,), labels=(("team", "ops"),), query="a"),
]


async def _load(d: Deployment) -> tuple[MemoryBackend, list[Execution], list[LogEntry]]:
    memory = MemoryBackend()
    executions, logs = corpus()
    for e in executions:
        await d.backend.executions.save(e)
        await memory.executions.save(e)
    await d.backend.logs.append(logs)
    await memory.logs.append(logs)
    return memory, executions, logs


def _ids(found: tuple[list[Execution], int]) -> tuple[list[str], int]:
    return [e.id for e in found[0]], found[1]


def _flows(records: object) -> object:
    """Flow records without their deploy time (each store was deployed to apart)."""
    if records is None:
        return None
    if isinstance(records, list):
        return [_flows(r) for r in records]
    return msgspec.structs.replace(records, updated=T0)  # type: ignore[type-var]


async def test_searches_answer_as_the_memory_store(search_server: SearchServer) -> None:
    async with deployment(search_server) as d:
        memory, executions, logs = await _load(d)
        async with indexer(d):

            async def caught_up() -> bool:
                _, total = await d.store.executions.find(ExecutionFilter(), limit=0)
                _, lines = await d.store.logs.find(LogFilter(), limit=0)
                return total == len(executions) and lines == len(logs)

            await until(caught_up, 30, "the corpus indexed")
        es, mem = d.store.executions, memory.executions
        for where in FILTERS:
            for sort in ("start_date", "end_date", "id", "namespace", "flow_id", "state"):
                for descending in (True, False):
                    page = {"sort": sort, "descending": descending, "limit": 7, "offset": 3}
                    assert _ids(await es.find(where, **page)) == _ids(  # type: ignore[arg-type]
                        await mem.find(where, **page)  # type: ignore[arg-type]
                    ), (where, page)
            assert await es.daily_counts(where) == await mem.daily_counts(where), where
        for namespace, flow_id, states in (
            (None, None, None),
            ("co", None, None),
            ("co", "alpha", (S.SUCCESS,)),
            (None, None, ()),
        ):
            kwargs = {"namespace": namespace, "flow_id": flow_id, "states": states}
            got = await es.search(**kwargs, limit=5, offset=2)  # type: ignore[arg-type]
            want = await mem.search(**kwargs, limit=5, offset=2)  # type: ignore[arg-type]
            assert [e.id for e in got] == [e.id for e in want]
        assert await es.get(executions[0].id) == executions[0]
        assert await es.get("missing") is None

        log_filters = [
            LogFilter(),
            LogFilter(namespace="co"),
            LogFilter(namespace="co", below=False),
            LogFilter(flow_id="alpha", min_level="WARN"),
            LogFilter(levels=("DEBUG", "ERROR")),
            LogFilter(query="90%"),
            LogFilter(query="B*C"),
            LogFilter(query="world", task_id="t1", attempt=0),
            LogFilter(execution_id=logs[0].execution_id),
            LogFilter(task_run_id=logs[0].task_run_id),
            LogFilter(after=T0 + timedelta(days=1), before=T0 + timedelta(days=3)),
        ]
        for log_where in log_filters:
            got_logs, total = await d.store.logs.find(log_where, limit=9, offset=1)
            want_logs, want_total = await memory.logs.find(log_where, limit=9, offset=1)
            assert (got_logs, total) == (want_logs, want_total), log_where
        target = logs[0].execution_id
        mine = await d.store.logs.query(target)
        assert mine == await memory.logs.query(target)
        # the Kafka backend numbers an execution's lines as the index does
        assert mine == await d.backend.logs.query(target)
        rest = await d.store.logs.query(target, after_seq=1, limit=1)
        assert rest == await memory.logs.query(target, after_seq=1, limit=1)
        warn = await d.store.logs.query(target, min_level="warn")
        assert warn == await memory.logs.query(target, min_level="WARN")
        with pytest.raises(ValueError, match="unknown log level"):
            await d.store.logs.query(target, min_level="LOUD")
        with pytest.raises(PageTooDeep, match="first 10000 results"):
            await es.find(ExecutionFilter(), offset=10_000)


async def test_purged_lines_leave_the_index_and_keep_the_numbering(
    search_server: SearchServer,
) -> None:
    async with deployment(search_server) as d:
        memory, _, logs = await _load(d)
        purge = LogFilter(namespace="co", below=False, min_level="WARN")
        async with indexer(d):
            # a purge written to the logs topic (as PurgeLogs does) before and after
            # its lines are indexed
            assert await d.backend.logs.delete(purge) == await memory.logs.delete(purge) > 0

            async def caught_up() -> bool:
                _, total = await d.store.logs.find(LogFilter(), limit=0)
                _, want = await memory.logs.find(LogFilter(), limit=0)
                return total == want

            await until(caught_up, 30, "the purge applied")
            target = logs[-1].execution_id
            more = [msgspec.structs.replace(logs[-1], message="after the purge", seq=0)]
            await d.backend.logs.append(more)
            await memory.logs.append(more)

            async def appended() -> bool:
                _, found = await d.store.logs.find(LogFilter(query="after the purge"))
                return found == 1

            await until(appended, 30, "a line after the purge")
            assert await d.store.logs.query(target) == await memory.logs.query(target)
            # the API's deletion hides at once, without waiting for the indexer
            other = LogFilter(namespace="other")
            assert await d.store.logs.delete(other) == await memory.logs.delete(other)
            assert await d.store.logs.find(LogFilter(), limit=500) == await memory.logs.find(
                LogFilter(), limit=500
            )


async def test_flows_and_triggers(search_server: SearchServer) -> None:
    async with deployment(search_server) as d:
        memory = MemoryBackend()
        sources = [
            ("co", "a", "id: a\nnamespace: co\n"),
            ("co", "a", "id: a\nnamespace: co\n# two\n"),
            ("co", "b", "id: b\nnamespace: co\n"),
            ("co.team", "c", "id: c\nnamespace: co.team\n"),
            ("co", "a", "id: a\nnamespace: co\n# three\n"),
        ]
        for store in (d.backend.flows, memory.flows):
            for namespace, flow_id, source in sources:
                await store.deploy(namespace, flow_id, source)
            await store.delete("co", "b")
        states = [
            TriggerState(namespace="co", flow_id="a", trigger_id="every", next_date=T0),
            TriggerState(namespace="co", flow_id="a", trigger_id="hook"),
            TriggerState(namespace="co.team", flow_id="c", trigger_id="t", disabled=True),
        ]
        for triggers in (d.backend.triggers, memory.triggers):
            for state in states:
                await triggers.save(state)
            await triggers.delete("co", "a", "hook")
        async with indexer(d):

            async def caught_up() -> bool:
                flows, triggers = await d.store.flows.list(), await d.store.triggers.list()
                return len(flows) == 2 and len(triggers) == 2

            await until(caught_up, 30, "flows and triggers indexed")
        for within in (None, "co", "co.team", "none"):
            assert _flows(await d.store.flows.list(within)) == _flows(
                await memory.flows.list(within)
            )
            assert await d.store.triggers.list(within) == await memory.triggers.list(within)
        for flow in ("a", "b", "missing"):
            assert _flows(await d.store.flows.revisions("co", flow)) == _flows(
                await memory.flows.revisions("co", flow)
            )
            for revision in (None, 1, 2, 3, 9):
                assert _flows(await d.store.flows.get("co", flow, revision)) == _flows(
                    await memory.flows.get("co", flow, revision)
                ), (flow, revision)
        assert await d.store.triggers.get("co", "a", "every") == states[0]
        assert await d.store.triggers.get("co", "a", "hook") is None
