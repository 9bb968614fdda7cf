"""The indexer on noida-db: topics to indices, versioned, offsets after the bulk."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backends.elasticsearch.testing import SearchServer
from backends.protocols import ExecutionFilter
from runtime.flow.states import StateType
from tests.search.helpers import deployment, execution, indexer, until

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


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
