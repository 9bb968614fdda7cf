"""Conformance of the execution, flow and log stores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import pytest

from backends.protocols import Backend, ExecutionFilter
from backends.testing.base import (
    NAMESPACE,
    ConformanceBase,
    make_execution,
    make_log,
    with_state,
)
from backends.testing.clock import ManualClock
from runtime.flow.execution import Attempt, Execution, TaskRun, new_execution
from runtime.flow.states import State, StateType


def _rich_execution(clock: ManualClock) -> Execution:
    """An execution using every kind of field, to catch lossy serialisation."""
    at = clock()
    later = clock.after(1.5)
    base = new_execution(
        id="rich",
        namespace=NAMESPACE,
        flow_id="flow",
        flow_revision=3,
        at=at,
        inputs={"n": 1, "f": 2.5, "s": "text", "list": [1, "two", None], "map": {"a": True}},
        labels={"team": "data", "env": "prod"},
        trigger={"id": "schedule", "date": "2030-01-01T12:00:00Z"},
        parent_id="parent",
        parent_task_run_id="parent-run",
    )
    run = TaskRun(
        id="run-1",
        execution_id="rich",
        namespace=NAMESPACE,
        flow_id="flow",
        task_id="hello",
        value="v",
        iteration=2,
        attempts=(Attempt(state=State.new(StateType.SUCCESS, later), worker_id="w-1"),),
        outputs={"value": "hi", "items": [1, 2]},
        state=State.new(StateType.CREATED, at).to(StateType.SUCCESS, later),
        memo={"values": ["a", "b"]},
    )
    return msgspec.structs.replace(
        base,
        state=base.state.to(StateType.RUNNING, later),
        task_run_list=(run,),
        outputs={"out": 1},
        variables={"v": "x"},
        memo={"note": "memo"},
    )


class ExecutionConformance(ConformanceBase):
    """ExecutionStore: round trips, search, concurrency counts."""

    @pytest.mark.asyncio
    async def test_execution_save_get_replace_delete(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        execution = _rich_execution(clock)
        assert await backend.executions.get("rich") is None
        await backend.executions.save(execution)
        assert await backend.executions.get("rich") == execution
        done = msgspec.structs.replace(
            execution, state=execution.state.to(StateType.SUCCESS, clock.after(2))
        )
        await backend.executions.save(done)
        assert await backend.executions.get("rich") == done
        assert await backend.executions.delete("rich") is True
        assert await backend.executions.get("rich") is None
        assert await backend.executions.delete("rich") is False

    @pytest.mark.asyncio
    async def test_execution_search_filters(self, backend: Backend, clock: ManualClock) -> None:
        cases = [
            ("a-f-run", "a", "f", StateType.RUNNING),
            ("a-f-failed", "a", "f", StateType.FAILED),
            ("a-g-run", "a", "g", StateType.RUNNING),
            ("b-f-success", "b", "f", StateType.SUCCESS),
        ]
        for execution_id, namespace, flow_id, state in cases:
            clock.advance(1)
            await backend.executions.save(
                make_execution(execution_id, clock(), state, namespace=namespace, flow_id=flow_id)
            )

        async def ids(
            namespace: str | None = None,
            flow_id: str | None = None,
            states: list[StateType] | None = None,
        ) -> set[str]:
            found = await backend.executions.search(
                namespace=namespace, flow_id=flow_id, states=states
            )
            return {e.id for e in found}

        assert await ids() == {c[0] for c in cases}
        assert await ids(namespace="a") == {"a-f-run", "a-f-failed", "a-g-run"}
        assert await ids(flow_id="f") == {"a-f-run", "a-f-failed", "b-f-success"}
        assert await ids(namespace="a", flow_id="f") == {"a-f-run", "a-f-failed"}
        assert await ids(states=[StateType.RUNNING]) == {"a-f-run", "a-g-run"}
        assert await ids(states=[StateType.FAILED, StateType.SUCCESS]) == {
            "a-f-failed",
            "b-f-success",
        }
        assert await ids(namespace="b", states=[StateType.RUNNING]) == set()

    @pytest.mark.asyncio
    async def test_execution_search_newest_first_with_paging(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        created = []
        for n in range(5):
            created.append(make_execution(f"e{n}", clock.after(n * 10)))
        for execution in (created[2], created[0], created[4], created[1], created[3]):
            await backend.executions.save(execution)
        # A later state change does not move an execution: order is by start date.
        await backend.executions.save(
            msgspec.structs.replace(
                created[0], state=created[0].state.to(StateType.RUNNING, clock.after(100))
            )
        )
        newest_first = ["e4", "e3", "e2", "e1", "e0"]
        assert [e.id for e in await backend.executions.search()] == newest_first
        pages = [
            [e.id for e in await backend.executions.search(limit=2, offset=offset)]
            for offset in (0, 2, 4, 6)
        ]
        assert pages == [["e4", "e3"], ["e2", "e1"], ["e0"], []]

    @pytest.mark.asyncio
    async def test_execution_find_filters(self, backend: Backend, clock: ManualClock) -> None:
        start = clock()
        cases = [
            # id, namespace, flow, state, labels, minutes after start
            ("x1", "company", "etl", StateType.SUCCESS, {"env": "prod", "team": "a"}, 0),
            ("x2", "company.team", "etl", StateType.FAILED, {"env": "prod"}, 10),
            ("x3", "company.team.sub", "load", StateType.RUNNING, {"env": "dev"}, 20),
            ("x4", "companyx", "etl", StateType.SUCCESS, {}, 30),
            ("x5", "other", "Report_ETL", StateType.SUCCESS, {"team": "a"}, 40),
        ]
        for execution_id, namespace, flow_id, state, labels, minutes in cases:
            at = start + timedelta(minutes=minutes)
            created = new_execution(
                id=execution_id,
                namespace=namespace,
                flow_id=flow_id,
                flow_revision=1,
                at=at,
                labels=labels,
            )
            await backend.executions.save(with_state(created, state, at))

        async def ids(**conditions: Any) -> list[str]:
            found, total = await backend.executions.find(
                ExecutionFilter(**conditions), sort="id", descending=False
            )
            assert total == len(found)
            return [e.id for e in found]

        assert await ids() == ["x1", "x2", "x3", "x4", "x5"]
        # a namespace matches itself and the namespaces below it, not a longer name
        assert await ids(namespace="company") == ["x1", "x2", "x3"]
        assert await ids(namespace="company.team") == ["x2", "x3"]
        assert await ids(flow_id="etl") == ["x1", "x2", "x4"]
        assert await ids(states=(StateType.SUCCESS,)) == ["x1", "x4", "x5"]
        assert await ids(states=()) == []
        assert await ids(started_after=start + timedelta(minutes=10)) == ["x2", "x3", "x4", "x5"]
        assert await ids(started_before=start + timedelta(minutes=10)) == ["x1"]
        assert await ids(
            started_after=start + timedelta(minutes=10),
            started_before=start + timedelta(minutes=30),
        ) == ["x2", "x3"]
        assert await ids(labels=(("env", "prod"),)) == ["x1", "x2"]
        assert await ids(labels=(("env", "prod"), ("team", "a"))) == ["x1"]
        assert await ids(labels=(("team", "b"),)) == []
        # the query is a case-insensitive substring of the id, namespace or flow id
        assert await ids(query="etl") == ["x1", "x2", "x4", "x5"]
        assert await ids(query="TEAM.S") == ["x3"]
        assert await ids(query="x5") == ["x5"]
        # a query with SQL wildcards in it matches them literally
        assert await ids(query="%") == []
        assert await ids(query="_") == ["x5"]
        assert await ids(namespace="company", flow_id="etl", states=(StateType.FAILED,)) == ["x2"]

    @pytest.mark.asyncio
    async def test_execution_find_sorts_pages_and_counts(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        start = clock()
        # start order e0..e4; end dates: e1 first, e3 second, the others still running
        ends = {"e1": 100, "e3": 200}
        for n in range(5):
            execution_id = f"e{n}"
            at = start + timedelta(seconds=n)
            execution = make_execution(execution_id, at, StateType.RUNNING, flow_id=f"f{4 - n}")
            if execution_id in ends:
                execution = with_state(
                    execution, StateType.SUCCESS, start + timedelta(seconds=ends[execution_id])
                )
            await backend.executions.save(execution)
        everything = ExecutionFilter()

        async def order(sort: Any, descending: bool) -> list[str]:
            found, total = await backend.executions.find(
                everything, sort=sort, descending=descending
            )
            assert total == 5
            return [e.id for e in found]

        assert await order("start_date", True) == ["e4", "e3", "e2", "e1", "e0"]
        assert await order("start_date", False) == ["e0", "e1", "e2", "e3", "e4"]
        assert await order("flow_id", False) == ["e4", "e3", "e2", "e1", "e0"]
        # no end date sorts as the earliest; ties broken by id in the same direction
        assert await order("end_date", True) == ["e3", "e1", "e4", "e2", "e0"]
        assert await order("end_date", False) == ["e0", "e2", "e4", "e1", "e3"]
        assert await order("state", False) == ["e0", "e2", "e4", "e1", "e3"]

        pages = []
        for offset in (0, 2, 4, 6):
            page, total = await backend.executions.find(everything, limit=2, offset=offset)
            assert total == 5
            pages.append([e.id for e in page])
        assert pages == [["e4", "e3"], ["e2", "e1"], ["e0"], []]
        page, total = await backend.executions.find(
            ExecutionFilter(states=(StateType.SUCCESS,)), limit=1
        )
        assert ([e.id for e in page], total) == (["e3"], 2)

    @pytest.mark.asyncio
    async def test_execution_daily_counts(self, backend: Backend, clock: ManualClock) -> None:
        day1 = datetime(2031, 3, 1, 23, 30, tzinfo=UTC)
        day2 = day1 + timedelta(hours=1)  # 00:30 the next day, UTC
        cases = [
            ("d1", "ns", day1, StateType.SUCCESS),
            ("d2", "ns", day1, StateType.SUCCESS),
            ("d3", "ns", day1, StateType.FAILED),
            ("d4", "ns", day2, StateType.SUCCESS),
            ("d5", "ns.sub", day2, StateType.RUNNING),
            ("d6", "elsewhere", day2, StateType.SUCCESS),
        ]
        for execution_id, namespace, at, state in cases:
            await backend.executions.save(
                make_execution(execution_id, at, state, namespace=namespace)
            )
        counts = await backend.executions.daily_counts(ExecutionFilter(namespace="ns"))
        assert [(c.day, c.state, c.count) for c in counts] == [
            (date(2031, 3, 1), StateType.FAILED, 1),
            (date(2031, 3, 1), StateType.SUCCESS, 2),
            (date(2031, 3, 2), StateType.RUNNING, 1),
            (date(2031, 3, 2), StateType.SUCCESS, 1),
        ]
        later = await backend.executions.daily_counts(
            ExecutionFilter(started_after=day2, states=(StateType.SUCCESS,))
        )
        assert [(c.day, c.state, c.count) for c in later] == [
            (date(2031, 3, 2), StateType.SUCCESS, 2)
        ]
        assert await backend.executions.daily_counts(ExecutionFilter(flow_id="none")) == []

    @pytest.mark.asyncio
    async def test_execution_count_running(self, backend: Backend, clock: ManualClock) -> None:
        holding = [
            StateType.RUNNING,
            StateType.PAUSED,
            StateType.KILLING,
            StateType.RETRYING,
            StateType.RESTARTED,
        ]
        not_holding = [
            StateType.CREATED,
            StateType.QUEUED,
            StateType.SUCCESS,
            StateType.WARNING,
            StateType.FAILED,
            StateType.KILLED,
            StateType.CANCELLED,
        ]
        assert await backend.executions.count_running(NAMESPACE, "flow") == 0
        for state in [*holding, *not_holding]:
            await backend.executions.save(make_execution(f"e-{state.value}", clock(), state))
        await backend.executions.save(
            make_execution("other", clock(), StateType.RUNNING, flow_id="g")
        )
        await backend.executions.save(
            make_execution("elsewhere", clock(), StateType.RUNNING, namespace="other.ns")
        )
        assert await backend.executions.count_running(NAMESPACE, "flow") == len(holding)
        await backend.executions.save(make_execution("e-RUNNING", clock(), StateType.SUCCESS))
        assert await backend.executions.count_running(NAMESPACE, "flow") == len(holding) - 1
        assert await backend.executions.count_running(NAMESPACE, "g") == 1

    @pytest.mark.asyncio
    async def test_execution_oldest_queued(self, backend: Backend, clock: ManualClock) -> None:
        assert await backend.executions.oldest_queued(NAMESPACE, "flow") is None
        queued = StateType.QUEUED
        await backend.executions.save(make_execution("running", clock(), StateType.RUNNING))
        await backend.executions.save(make_execution("newer", clock.after(20), queued))
        await backend.executions.save(make_execution("older", clock.after(10), queued))
        await backend.executions.save(make_execution("elsewhere", clock(), queued, flow_id="g"))
        assert await backend.executions.oldest_queued(NAMESPACE, "flow") == "older"
        await backend.executions.save(make_execution("older", clock.after(10), StateType.RUNNING))
        assert await backend.executions.oldest_queued(NAMESPACE, "flow") == "newer"
        assert await backend.executions.oldest_queued(NAMESPACE, "g") == "elsewhere"


class FlowConformance(ConformanceBase):
    """FlowStore: revisions, latest, deletion."""

    @pytest.mark.asyncio
    async def test_flow_revision_only_on_change(self, backend: Backend, clock: ManualClock) -> None:
        first = await backend.flows.deploy("ns", "f", "id: f\nv: 1")
        assert (first.namespace, first.id, first.revision) == ("ns", "f", 1)
        assert (first.source, first.updated, first.deleted) == ("id: f\nv: 1", clock(), False)
        clock.advance(1)
        assert await backend.flows.deploy("ns", "f", "id: f\nv: 1") == first
        second = await backend.flows.deploy("ns", "f", "id: f\nv: 2")
        assert (second.revision, second.updated) == (2, clock())
        # Going back to an older source is a change too.
        third = await backend.flows.deploy("ns", "f", "id: f\nv: 1")
        assert third.revision == 3
        revisions = await backend.flows.revisions("ns", "f")
        assert [(r.revision, r.source) for r in revisions] == [
            (1, "id: f\nv: 1"),
            (2, "id: f\nv: 2"),
            (3, "id: f\nv: 1"),
        ]

    @pytest.mark.asyncio
    async def test_flow_get_latest_or_by_revision(self, backend: Backend) -> None:
        assert await backend.flows.get("ns", "f") is None
        first = await backend.flows.deploy("ns", "f", "one")
        second = await backend.flows.deploy("ns", "f", "two")
        assert await backend.flows.get("ns", "f") == second
        assert await backend.flows.get("ns", "f", revision=1) == first
        assert await backend.flows.get("ns", "f", revision=2) == second
        assert await backend.flows.get("ns", "f", revision=3) is None
        assert await backend.flows.get("other", "f") is None
        assert await backend.flows.revisions("ns", "missing") == []

    @pytest.mark.asyncio
    async def test_flow_list_latest_sorted(self, backend: Backend) -> None:
        await backend.flows.deploy("b", "f1", "b-f1")
        await backend.flows.deploy("a", "f2", "a-f2")
        await backend.flows.deploy("a", "f1", "a-f1 v1")
        await backend.flows.deploy("a", "f1", "a-f1 v2")
        listed = await backend.flows.list()
        assert [(r.namespace, r.id, r.revision, r.source) for r in listed] == [
            ("a", "f1", 2, "a-f1 v2"),
            ("a", "f2", 1, "a-f2"),
            ("b", "f1", 1, "b-f1"),
        ]
        assert [r.id for r in await backend.flows.list("a")] == ["f1", "f2"]
        assert await backend.flows.list("nowhere") == []

    @pytest.mark.asyncio
    async def test_flow_delete_hides_but_keeps_revisions(self, backend: Backend) -> None:
        await backend.flows.deploy("ns", "f", "one")
        await backend.flows.deploy("ns", "f", "two")
        await backend.flows.deploy("ns", "kept", "kept")
        assert await backend.flows.delete("ns", "f") is True
        assert await backend.flows.get("ns", "f") is None
        assert [r.id for r in await backend.flows.list()] == ["kept"]
        # Executions of a deleted flow still find the revision they ran.
        old = await backend.flows.get("ns", "f", revision=1)
        assert old is not None
        assert old.source == "one"
        assert [r.source for r in await backend.flows.revisions("ns", "f")] == ["one", "two"]
        assert await backend.flows.delete("ns", "f") is False
        assert await backend.flows.delete("ns", "missing") is False

    @pytest.mark.asyncio
    async def test_flow_redeploy_after_delete(self, backend: Backend) -> None:
        await backend.flows.deploy("ns", "f", "same")
        await backend.flows.delete("ns", "f")
        again = await backend.flows.deploy("ns", "f", "same")
        assert (again.revision, again.source, again.deleted) == (2, "same", False)
        assert await backend.flows.get("ns", "f") == again
        assert [r.id for r in await backend.flows.list("ns")] == ["f"]


class LogConformance(ConformanceBase):
    """LogStore: numbering per execution, filters, paging."""

    @pytest.mark.asyncio
    async def test_logs_numbered_per_execution(self, backend: Backend, clock: ManualClock) -> None:
        a1 = make_log("e1", "a", clock(), task_run_id="tr-1")
        b1 = make_log("e2", "b", clock.after(1))
        c1 = make_log("e1", "c", clock.after(2), level="ERROR")
        d1 = make_log("e1", "d", clock.after(3))
        await backend.logs.append([a1, b1, c1])
        await backend.logs.append([d1])
        assert await backend.logs.query("e1") == [
            msgspec.structs.replace(entry, seq=n) for n, entry in enumerate([a1, c1, d1], 1)
        ]
        assert await backend.logs.query("e2") == [msgspec.structs.replace(b1, seq=1)]
        assert await backend.logs.query("nobody") == []

    @pytest.mark.asyncio
    async def test_logs_filter_by_task_run_and_level(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        levels = ["TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR"]
        await backend.logs.append(
            [
                make_log("e1", level, clock(), level=level, task_run_id=run)
                for level in levels
                for run in ("tr-1", None)
            ]
        )

        async def messages(
            task_run_id: str | None = None, min_level: str | None = None
        ) -> list[str]:
            found = await backend.logs.query("e1", task_run_id=task_run_id, min_level=min_level)
            return [f"{e.message}/{e.task_run_id}" for e in found]

        assert len(await messages()) == 12
        assert await messages(min_level="WARN") == [
            f"{level}/{run}" for level in ("WARN", "WARNING", "ERROR") for run in ("tr-1", None)
        ]
        assert await messages(min_level="WARNING") == await messages(min_level="WARN")
        assert len(await messages(min_level="INFO")) == 8
        assert len(await messages(min_level="DEBUG")) == 10
        assert len(await messages(min_level="TRACE")) == 12
        assert await messages(task_run_id="tr-1", min_level="ERROR") == ["ERROR/tr-1"]
        assert await messages(task_run_id="tr-1") == [f"{level}/tr-1" for level in levels]

    @pytest.mark.asyncio
    async def test_logs_after_seq_paging(self, backend: Backend, clock: ManualClock) -> None:
        await backend.logs.append(
            [
                make_log("e1", f"m{n}", clock(), level="DEBUG" if n % 2 else "INFO")
                for n in range(1, 8)
            ]
        )

        async def seqs(after: int, limit: int, min_level: str | None = None) -> list[int]:
            found = await backend.logs.query(
                "e1", after_seq=after, limit=limit, min_level=min_level
            )
            return [e.seq for e in found]

        assert await seqs(0, 3) == [1, 2, 3]
        assert await seqs(3, 3) == [4, 5, 6]
        assert await seqs(6, 3) == [7]
        assert await seqs(7, 3) == []
        # Paging over a filtered view follows seq, with its gaps.
        assert await seqs(0, 2, min_level="INFO") == [2, 4]
        assert await seqs(4, 2, min_level="INFO") == [6]
