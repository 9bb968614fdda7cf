"""The backend conformance suite on the in-memory reference backend, plus what is
specific to it (misuse it reports instead of deadlocking, JSON-only KV values)."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends.memory import MemoryBackend
from backends.protocols import Backend, Clock
from backends.testing import BackendConformance, ManualClock
from backends.testing.base import make_execution


class TestMemory(BackendConformance):
    async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
        return MemoryBackend(clock=clock)


class TestMemorySpecifics:
    @pytest.mark.asyncio
    async def test_writes_that_would_deadlock_are_refused(self) -> None:
        clock = ManualClock()
        backend = MemoryBackend(clock=clock)
        execution = make_execution("e1", clock())
        async with backend.transaction() as tx:
            await tx.executions.save(execution)
            with pytest.raises(RuntimeError, match=r"autocommit write .* would deadlock"):
                await backend.executions.save(execution)
            nested = backend.transaction()
            with pytest.raises(RuntimeError, match="nested transaction"):
                await nested.__aenter__()
            # Reads take no lock: they see committed data only.
            assert await backend.executions.get("e1") is None
        assert await backend.executions.get("e1") == execution

    @pytest.mark.asyncio
    async def test_stores_of_an_ended_transaction_are_refused(self) -> None:
        backend = MemoryBackend()
        async with backend.transaction() as tx:
            pass
        with pytest.raises(RuntimeError, match="transaction that has ended"):
            await tx.kv.get("ns", "k")

    @pytest.mark.asyncio
    async def test_naive_available_at_is_refused(self) -> None:
        backend = MemoryBackend()
        with pytest.raises(ValueError, match="available_at must be timezone-aware"):
            await backend.queues.publish("q", [(None, b"x")], available_at=datetime(2030, 1, 1))
        assert await backend.queues.depth("q") == 0

    @pytest.mark.asyncio
    async def test_unknown_log_level_is_refused(self) -> None:
        backend = MemoryBackend()
        with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
            await backend.logs.query("e1", min_level="LOUD")

    @pytest.mark.asyncio
    async def test_kv_values_are_json_and_detached(self) -> None:
        backend = MemoryBackend()
        with pytest.raises(TypeError, match="ns/k is not JSON-serialisable"):
            await backend.kv.set("ns", "k", object())
        value = {"items": [1]}
        await backend.kv.set("ns", "k", value)
        value["items"].append(2)
        entry = await backend.kv.get("ns", "k")
        assert entry is not None
        assert entry.value == {"items": [1]}

    @pytest.mark.asyncio
    async def test_default_clock_is_aware_utc(self) -> None:
        assert MemoryBackend().clock().tzinfo is UTC
