"""Conformance of the log store's search and deletion over every execution."""

from __future__ import annotations

from datetime import datetime

import msgspec
import pytest

from backends.protocols import Backend, LogFilter
from backends.testing.base import ConformanceBase, make_log
from backends.testing.clock import ManualClock
from runtime.messages import LogEntry


def _log(
    execution_id: str,
    message: str,
    at: datetime,
    *,
    namespace: str = "company.team",
    flow_id: str = "etl",
    level: str = "INFO",
    task_run_id: str | None = None,
) -> LogEntry:
    entry = make_log(execution_id, message, at, level=level, task_run_id=task_run_id)
    return msgspec.structs.replace(entry, namespace=namespace, flow_id=flow_id)


class LogSearchConformance(ConformanceBase):
    """LogStore.find and LogStore.delete: filters, order, paging, totals."""

    async def _corpus(self, backend: Backend, clock: ManualClock) -> None:
        """Nine entries over four executions, three flows and three namespaces, one a
        second apart (m1 oldest); e1's m1 and m2 share a timestamp with e2's m3."""
        t = clock()
        await backend.logs.append(
            [
                _log("e1", "m1 Starting", t, level="DEBUG", task_run_id="tr-a"),
                _log("e1", "m2 100% done_ok", t, level="INFO", task_run_id="tr-a"),
                _log("e2", "m3 starting again", t, level="WARNING"),
                _log("e2", "m4 disk full", clock.after(1), level="ERROR", task_run_id="tr-b"),
                _log("e3", "m5 other flow", clock.after(2), flow_id="load"),
                _log("e4", "m6 below", clock.after(3), namespace="company.team.sub"),
                _log("e5", "m7 beside", clock.after(4), namespace="company.teamwork"),
                _log("e5", "m8 trace", clock.after(5), namespace="company.teamwork", level="TRACE"),
                _log("e1", "m9 end", clock.after(6), level="INFO", task_run_id="tr-a"),
            ]
        )

    async def _messages(
        self, backend: Backend, where: LogFilter, limit: int = 50, offset: int = 0
    ) -> tuple[list[str], int]:
        found, total = await backend.logs.find(where, limit=limit, offset=offset)
        return [e.message.split()[0] for e in found], total

    @pytest.mark.asyncio
    async def test_log_search_newest_first_over_executions_with_total(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await self._corpus(backend, clock)
        everything = ["m9", "m8", "m7", "m6", "m5", "m4", "m3", "m2", "m1"]
        # same timestamp: execution id, then seq, descending (e2 before e1, m2 before m1)
        assert await self._messages(backend, LogFilter()) == (everything, 9)
        assert await self._messages(backend, LogFilter(), limit=4) == (everything[:4], 9)
        assert await self._messages(backend, LogFilter(), limit=4, offset=4) == (everything[4:8], 9)
        assert await self._messages(backend, LogFilter(), limit=4, offset=8) == (["m1"], 9)
        assert await self._messages(backend, LogFilter(), limit=4, offset=9) == ([], 9)
        assert await self._messages(backend, LogFilter(), limit=0) == ([], 9)
        found, _ = await backend.logs.find(LogFilter(execution_id="e1"), limit=1)
        # the entries come back whole, with their place in their execution's log
        assert found == [
            msgspec.structs.replace(
                _log("e1", "m9 end", clock.after(6), level="INFO", task_run_id="tr-a"), seq=3
            )
        ]

    @pytest.mark.asyncio
    async def test_log_search_filters(self, backend: Backend, clock: ManualClock) -> None:
        await self._corpus(backend, clock)
        t = clock()

        async def only(**kwargs: object) -> list[str]:
            found, total = await self._messages(backend, LogFilter(**kwargs))  # type: ignore[arg-type]
            assert total == len(found)
            return found

        # a namespace and those below it, not one that merely starts with its name
        assert await only(namespace="company.team") == ["m9", "m6", "m5", "m4", "m3", "m2", "m1"]
        assert await only(namespace="company") == await only()
        assert await only(namespace="company.team.sub") == ["m6"]
        assert await only(namespace="company.te") == []
        assert await only(namespace="company.team", below=False) == [
            "m9",
            "m5",
            "m4",
            "m3",
            "m2",
            "m1",
        ]
        assert await only(namespace="company.team", flow_id="load") == ["m5"]
        assert await only(flow_id="etl", namespace="company.teamwork") == ["m8", "m7"]
        assert await only(execution_id="e2") == ["m4", "m3"]
        assert await only(task_id="task-of-tr-a") == ["m9", "m2", "m1"]
        assert await only(task_run_id="tr-b") == ["m4"]
        assert await only(attempt=1) == ["m9", "m4", "m2", "m1"]
        assert await only(attempt=2) == []
        # levels: this one and above; WARNING is WARN
        assert await only(min_level="WARN") == ["m4", "m3"]
        assert await only(min_level="warning") == ["m4", "m3"]
        assert await only(min_level="ERROR") == ["m4"]
        assert await only(min_level="DEBUG") == ["m9", "m7", "m6", "m5", "m4", "m3", "m2", "m1"]
        assert len(await only(min_level="TRACE")) == 9
        # dates: at or after, strictly before
        assert await only(after=clock.after(5)) == ["m9", "m8"]
        assert await only(before=clock.after(1)) == ["m3", "m2", "m1"]
        assert await only(after=clock.after(1), before=clock.after(3)) == ["m5", "m4"]
        assert await only(after=t, before=t) == []
        # text: case-insensitive, and % and _ are themselves
        assert await only(query="START") == ["m3", "m1"]
        assert await only(query="100%") == ["m2"]
        assert await only(query="done_ok") == ["m2"]
        assert await only(query="o_e") == []  # "_" as a wildcard would find "done"
        assert await only(query="%") == ["m2"]
        # every condition together
        assert await only(
            namespace="company.team",
            flow_id="etl",
            execution_id="e1",
            task_id="task-of-tr-a",
            min_level="INFO",
            after=t,
            before=clock.after(10),
            query="END",
        ) == ["m9"]

    @pytest.mark.asyncio
    async def test_log_search_unknown_level_is_refused(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
            await backend.logs.find(LogFilter(min_level="LOUD"))
        with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
            await backend.logs.delete(LogFilter(min_level="LOUD"))

    @pytest.mark.asyncio
    async def test_log_delete_by_execution_and_by_query(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        await self._corpus(backend, clock)
        assert await backend.logs.delete(LogFilter(execution_id="nobody")) == 0
        # e1's first two entries go; its last keeps its number, and the next is 4
        assert await backend.logs.delete(LogFilter(execution_id="e1", before=clock.after(1))) == 2
        assert [e.seq for e in await backend.logs.query("e1")] == [3]
        await backend.logs.append([_log("e1", "m10 more", clock.after(7))])
        assert [(e.seq, e.message) for e in await backend.logs.query("e1")] == [
            (3, "m9 end"),
            (4, "m10 more"),
        ]
        # by query: a flow of a namespace, and nothing outside it
        assert await backend.logs.delete(LogFilter(namespace="company.teamwork")) == 2
        assert await self._messages(backend, LogFilter()) == (
            ["m10", "m9", "m6", "m5", "m4", "m3"],
            6,
        )
        assert await backend.logs.delete(LogFilter(namespace="company", min_level="WARN")) == 2
        assert await backend.logs.delete(LogFilter(flow_id="load")) == 1
        assert await self._messages(backend, LogFilter()) == (["m10", "m9", "m6"], 3)
        assert await backend.logs.query("e2") == []

    @pytest.mark.asyncio
    async def test_log_levels_exactly(self, backend: Backend, clock: ManualClock) -> None:
        # Kestra's PurgeLogs `logLevels`: these levels and no other; WARN is WARNING
        await self._corpus(backend, clock)
        assert await self._messages(backend, LogFilter(levels=("WARN", "TRACE"))) == (
            ["m8", "m3"],
            2,
        )
        assert await self._messages(backend, LogFilter(levels=("info",), execution_id="e1")) == (
            ["m9", "m2"],
            2,
        )
        assert await self._messages(backend, LogFilter(levels=())) == ([], 0)
        with pytest.raises(ValueError, match="LOUD"):
            await backend.logs.find(LogFilter(levels=("LOUD",)), limit=1)
        assert await backend.logs.delete(LogFilter(levels=("DEBUG", "ERROR"))) == 2
        assert (await self._messages(backend, LogFilter()))[1] == 7
