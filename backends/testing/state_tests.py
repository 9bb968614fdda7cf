"""Conformance of the small stores: triggers, KV, kills, services, leader lock."""

from __future__ import annotations

import pytest

from backends.protocols import Backend, ServiceInstance, TriggerState
from backends.testing.base import ConformanceBase
from backends.testing.clock import ManualClock


def _instance(clock: ManualClock, instance_id: str, kind: str, state: str) -> ServiceInstance:
    return ServiceInstance(
        id=instance_id,
        kind=kind,
        state=state,
        host="host-1",
        pid=4242,
        started=clock(),
        heartbeat=clock(),
        info={"concurrency": 8, "queues": ["worker"]},
    )


class TriggerConformance(ConformanceBase):
    """TriggerStore."""

    @pytest.mark.asyncio
    async def test_trigger_save_get_replace_delete(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        assert await backend.triggers.get("ns", "f", "t") is None
        state = TriggerState(
            namespace="ns",
            flow_id="f",
            trigger_id="t",
            next_date=clock.after(60),
            last_date=clock(),
            flow_revision=2,
            data={"backfill": {"start": "2030-01-01T00:00:00Z", "done": 3}, "ids": [1, 2]},
        )
        await backend.triggers.save(state)
        assert await backend.triggers.get("ns", "f", "t") == state
        replaced = TriggerState(namespace="ns", flow_id="f", trigger_id="t", disabled=True)
        await backend.triggers.save(replaced)
        assert await backend.triggers.get("ns", "f", "t") == replaced
        assert await backend.triggers.delete("ns", "f", "t") is True
        assert await backend.triggers.get("ns", "f", "t") is None
        assert await backend.triggers.delete("ns", "f", "t") is False

    @pytest.mark.asyncio
    async def test_trigger_list_by_namespace(self, backend: Backend) -> None:
        keys = [("a", "f", "t2"), ("a", "f", "t1"), ("a", "g", "t1"), ("b", "f", "t1")]
        for namespace, flow_id, trigger_id in keys:
            await backend.triggers.save(
                TriggerState(namespace=namespace, flow_id=flow_id, trigger_id=trigger_id)
            )

        def ids(states: list[TriggerState]) -> list[tuple[str, str, str]]:
            return sorted((s.namespace, s.flow_id, s.trigger_id) for s in states)

        assert ids(await backend.triggers.list()) == sorted(keys)
        assert ids(await backend.triggers.list("a")) == sorted(k for k in keys if k[0] == "a")
        assert await backend.triggers.list("nowhere") == []


class KVConformance(ConformanceBase):
    """KVStore: JSON values, TTLs on the backend's clock."""

    @pytest.mark.asyncio
    async def test_kv_set_get_overwrite_delete(self, backend: Backend, clock: ManualClock) -> None:
        value = {"list": [1, 2.5, "x", True, None], "nested": {"a": "b"}}
        entry = await backend.kv.set("ns", "k", value)
        assert (entry.namespace, entry.key, entry.value) == ("ns", "k", value)
        assert (entry.updated, entry.expires_at) == (clock(), None)
        assert await backend.kv.get("ns", "k") == entry
        assert await backend.kv.get("other", "k") is None
        clock.advance(5)
        replaced = await backend.kv.set("ns", "k", "text")
        assert (replaced.value, replaced.updated) == ("text", clock())
        assert await backend.kv.get("ns", "k") == replaced
        assert await backend.kv.delete("ns", "k") is True
        assert await backend.kv.get("ns", "k") is None
        assert await backend.kv.delete("ns", "k") is False

    @pytest.mark.asyncio
    async def test_kv_value_types_round_trip(self, backend: Backend) -> None:
        for key, value in [("int", 42), ("float", 0.5), ("bool", False), ("none", None)]:
            await backend.kv.set("ns", key, value)
            entry = await backend.kv.get("ns", key)
            assert entry is not None, key
            assert entry.value == value
            assert type(entry.value) is type(value)

    @pytest.mark.asyncio
    async def test_kv_ttl_expires_on_the_clock(self, backend: Backend, clock: ManualClock) -> None:
        entry = await backend.kv.set("ns", "short", 1, ttl_seconds=10)
        await backend.kv.set("ns", "forever", 2)
        assert entry.expires_at == clock.after(10)
        clock.advance(9)
        assert await backend.kv.get("ns", "short") == entry
        assert [e.key for e in await backend.kv.list("ns")] == ["forever", "short"]
        clock.advance(2)
        assert await backend.kv.get("ns", "short") is None
        assert [e.key for e in await backend.kv.list("ns")] == ["forever"]
        renewed = await backend.kv.set("ns", "short", 3, ttl_seconds=10)
        assert await backend.kv.get("ns", "short") == renewed

    @pytest.mark.asyncio
    async def test_kv_list_sorted_by_key_per_namespace(self, backend: Backend) -> None:
        for key in ("b", "c", "a"):
            await backend.kv.set("ns", key, key.upper())
        await backend.kv.set("other", "z", "Z")
        assert [(e.key, e.value) for e in await backend.kv.list("ns")] == [
            ("a", "A"),
            ("b", "B"),
            ("c", "C"),
        ]
        assert await backend.kv.list("empty") == []


class KillConformance(ConformanceBase):
    """KillStore."""

    @pytest.mark.asyncio
    async def test_kills_request_requested_clear(self, backend: Backend) -> None:
        assert await backend.kills.requested(["tr-1", "tr-2"]) == set()
        await backend.kills.request(["tr-1", "tr-2"])
        await backend.kills.request(["tr-1"])  # twice is once
        assert await backend.kills.requested(["tr-1", "tr-3"]) == {"tr-1"}
        await backend.kills.clear(["tr-1", "tr-9"])
        assert await backend.kills.requested(["tr-1", "tr-2", "tr-3"]) == {"tr-2"}
        assert await backend.kills.requested([]) == set()


class ServiceConformance(ConformanceBase):
    """ServiceRegistry."""

    @pytest.mark.asyncio
    async def test_services_heartbeat_list_remove(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        assert await backend.services.list() == []
        worker = _instance(clock, "w-1", "worker", "RUNNING")
        executor = _instance(clock, "x-1", "executor", "CREATED")
        await backend.services.heartbeat(worker)
        await backend.services.heartbeat(executor)
        clock.advance(10)
        refreshed = _instance(clock, "x-1", "executor", "RUNNING")
        await backend.services.heartbeat(refreshed)
        listed = {s.id: s for s in await backend.services.list()}
        assert listed == {"w-1": worker, "x-1": refreshed}
        await backend.services.remove("w-1")
        await backend.services.remove("never-there")
        assert await backend.services.list() == [refreshed]


class LeaderConformance(ConformanceBase):
    """LeaderLock: one holder per name, with a lease on the backend's clock."""

    @pytest.mark.asyncio
    async def test_leader_lock_is_exclusive_and_renewable(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        assert await backend.leader.acquire("scheduler", "a", ttl_seconds=10) is True
        assert await backend.leader.acquire("scheduler", "b", ttl_seconds=10) is False
        assert await backend.leader.acquire("other-lock", "b", ttl_seconds=10) is True
        clock.advance(5)
        assert await backend.leader.acquire("scheduler", "a", ttl_seconds=10) is True  # renew
        clock.advance(8)  # past the first lease, within the renewed one
        assert await backend.leader.acquire("scheduler", "b", ttl_seconds=10) is False

    @pytest.mark.asyncio
    async def test_leader_lock_taken_over_after_expiry(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        assert await backend.leader.acquire("scheduler", "a", ttl_seconds=10) is True
        clock.advance(11)
        assert await backend.leader.acquire("scheduler", "b", ttl_seconds=10) is True
        assert await backend.leader.acquire("scheduler", "a", ttl_seconds=10) is False

    @pytest.mark.asyncio
    async def test_leader_release_by_holder_only(self, backend: Backend) -> None:
        assert await backend.leader.acquire("scheduler", "a", ttl_seconds=60) is True
        await backend.leader.release("scheduler", "b")
        assert await backend.leader.acquire("scheduler", "b", ttl_seconds=60) is False
        await backend.leader.release("scheduler", "a")
        assert await backend.leader.acquire("scheduler", "b", ttl_seconds=60) is True
