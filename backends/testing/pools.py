"""Claims from several processes at once, for the server databases' own tests: each
backend of ``pair`` stands for a process (its own pool and wake-ups)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from backends.protocols import Backend


def each_once_and_in_key_order(
    published: Sequence[tuple[str | None, bytes]], handled: Sequence[bytes]
) -> None:
    """Every published message handled once, each key's in publication order."""
    assert len(handled) == len(set(handled)), "a message was handled twice"
    assert sorted(handled) == sorted(p for _, p in published)
    for key in {k for k, _ in published if k is not None}:
        in_order = [p for k, p in published if k == key]
        assert [p for p in handled if p in in_order] == in_order, f"key {key} out of order"


async def two_pools_share_no_message_nor_key(
    pair: Sequence[Backend], queue: str, *, messages: int
) -> None:
    """Consumers on each backend, half claiming inside a transaction (the executor: its
    leases stay invisible until commit), half in autocommit, over a few hot keys: no
    key held by two at once, every message once, each key in order."""
    published = [(f"k{i % 4}" if i % 5 else None, f"{i:04}".encode()) for i in range(messages)]
    await pair[0].queues.publish(queue, published)
    holding: dict[str, str] = {}
    seen: list[bytes] = []
    problems: list[str] = []

    def take(consumer: str, batch: list[Any]) -> None:
        seen.extend(m.payload for m in batch)
        for key in {m.key for m in batch if m.key is not None}:
            if key in holding:
                problems.append(f"{consumer} got key {key} held by {holding[key]}")
            holding[key] = consumer

    def give_back(consumer: str, batch: list[Any]) -> None:
        # before the ack commits: from then on another consumer may claim the key
        for key in {m.key for m in batch if m.key is not None}:
            if holding.get(key) == consumer:
                del holding[key]

    async def in_transaction(backend: Backend, consumer: str) -> None:
        while await backend.queues.depth(queue):
            async with backend.transaction() as tx:
                batch = await tx.queues.claim(queue, consumer, limit=3, lease_seconds=60)
                take(consumer, batch)
                await asyncio.sleep(0.002)
                give_back(consumer, batch)
                await tx.queues.ack(queue, [m.id for m in batch])
            if not batch:
                await backend.queues.wait(queue, at_most=0.01)

    async def autocommit(backend: Backend, consumer: str) -> None:
        while await backend.queues.depth(queue):
            batch = await backend.queues.claim(queue, consumer, limit=3, lease_seconds=60)
            take(consumer, batch)
            await asyncio.sleep(0.002)
            give_back(consumer, batch)
            await backend.queues.ack(queue, [m.id for m in batch])
            if not batch:
                await backend.queues.wait(queue, at_most=0.01)

    async with asyncio.TaskGroup() as group:
        for n, backend in enumerate(pair):
            for c in range(2):
                group.create_task(in_transaction(backend, f"tx-{n}-{c}"))
                group.create_task(autocommit(backend, f"auto-{n}-{c}"))

    assert problems == []
    each_once_and_in_key_order(published, seen)
