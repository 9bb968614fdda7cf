"""`runtime run indexer` in its own process, killed with SIGKILL in the middle of
its bulk requests: a second one picks up from the last committed offsets and the
index ends with every execution in its newest state.

noida-db never expires a killed member, and its group then never settles (the
next member's joins time out for ever; see docs/architecture.md, "Kafka: brokers
and libraries"); a graceful restart of the broker, which keeps the committed
offsets and forgets the members, stands in for the session expiry a real Kafka
does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.elasticsearch.testing import SearchServer
from backends.protocols import ExecutionFilter
from runtime.flow.states import StateType
from tests.search.helpers import Deployment, deployment, execution, until

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
N = 3000


def _env(d: Deployment, data: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RUNTIME_") and k != "PYTHONASYNCIODEBUG"
    }
    env.update(
        RUNTIME_BACKEND_TYPE="kafka",
        RUNTIME_BACKEND_BOOTSTRAP_SERVERS=d.kafka.bootstrap_servers,
        RUNTIME_BACKEND_TOPIC_PREFIX=d.kafka.topic_prefix,
        RUNTIME_BACKEND_PARTITIONS=str(d.kafka.partitions),
        RUNTIME_SEARCH_TYPE="elasticsearch",
        RUNTIME_SEARCH_HOSTS=d.search.hosts[0],
        RUNTIME_SEARCH_INDEX_PREFIX=d.search.index_prefix,
        RUNTIME_INDEXER_BATCH="100",
        RUNTIME_INDEXER_REBALANCE_TIMEOUT_SECONDS="10",
        RUNTIME_DATA_DIR=str(data),
    )
    return env


@contextmanager
def indexer_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "indexer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_an_indexer_killed_mid_bulk_loses_nothing(
    search_server: SearchServer, tmp_path: Path
) -> None:
    async with deployment(search_server) as d:
        async with d.backend.transaction() as tx:
            for n in range(N):
                await tx.executions.save(execution(f"e{n:05d}", "co", "f", T0))
        async with d.backend.transaction() as tx:
            for n in range(N):
                done = (StateType.RUNNING, StateType.SUCCESS)
                await tx.executions.save(execution(f"e{n:05d}", "co", "f", T0, done))
        env = _env(d, tmp_path / "data")
        log = tmp_path / "indexer.log"

        async def indexed() -> int:
            _, total = await d.store.executions.find(ExecutionFilter(), limit=0)
            return total

        async def some() -> bool:
            return await indexed() > 0

        with indexer_process(env, log) as first:
            try:
                await until(some, 60, "the first indexer indexes")
            except AssertionError:
                raise AssertionError(log.read_text()[-3000:]) from None
            first.kill()
            first.wait()
        partial = await indexed()
        assert partial < N, "the first indexer finished before it was killed: raise N"
        search_server.restart()  # forgets the dead member (module doc)

        async def everything() -> bool:
            _found, total = await d.store.executions.find(
                ExecutionFilter(states=(StateType.SUCCESS,)), limit=0
            )
            return total == N

        with indexer_process(env, log) as second:
            try:
                await until(everything, 120, "every execution indexed in its newest state")
            except AssertionError:
                raise AssertionError(log.read_text()[-3000:]) from None
            assert second.poll() is None
        assert await indexed() == N
