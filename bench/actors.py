"""Kernel micro-benchmarks: messages/s through one actor (tell) and the ask round trip.

Each figure comes with a baseline measured in the same run on the same loop: a
bare asyncio.Queue consumer (for tell) and a bare queue + future round trip (for
ask). The ratio tells what the actor layer costs on top of asyncio itself, which
stays meaningful on a noisy, shared machine where absolute numbers drift.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.model import percentile
from runtime.actors import Actor, ActorSystem, actor_spec


class _Counter(Actor[Any]):
    batch_size = 256

    def __init__(self) -> None:
        self.count = 0
        self.done: asyncio.Future[None] | None = None
        self.target = 0

    async def receive(self, message: Any) -> Any:
        self.count += 1
        if self.count == self.target and self.done is not None:
            self.done.set_result(None)
        return message


async def _actor_tell(messages: int, mailbox: int) -> float:
    counter = _Counter()
    system = ActorSystem([actor_spec("counter", lambda: counter, mailbox_size=mailbox)])
    async with system:
        ref = system.ref("counter")
        counter.target = messages
        counter.done = asyncio.get_running_loop().create_future()
        began = time.perf_counter()
        tell = ref.tell
        for i in range(messages):
            await tell(i)
        await counter.done
        return messages / (time.perf_counter() - began)


async def _queue_tell(messages: int, mailbox: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue(mailbox)
    done = asyncio.get_running_loop().create_future()

    async def consume() -> None:
        for _ in range(messages):
            await queue.get()
        done.set_result(None)

    consumer = asyncio.create_task(consume(), name="baseline-consumer")
    began = time.perf_counter()
    for i in range(messages):
        await queue.put(i)
    await done
    await consumer
    return messages / (time.perf_counter() - began)


async def _actor_ask(rounds: int) -> list[float]:
    system = ActorSystem([actor_spec("echo", _Counter, mailbox_size=16)])
    samples = []
    async with system:
        ref = system.ref("echo")
        for i in range(rounds):
            began = time.perf_counter()
            await ref.ask(i, timeout=5.0)
            samples.append(time.perf_counter() - began)
    return samples


async def _queue_ask(rounds: int) -> list[float]:
    queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue(16)

    async def serve() -> None:
        while True:
            message, reply = await queue.get()
            reply.set_result(message)

    server = asyncio.create_task(serve(), name="baseline-server")
    loop = asyncio.get_running_loop()
    samples = []
    for i in range(rounds):
        began = time.perf_counter()
        reply: asyncio.Future[int] = loop.create_future()
        await queue.put((i, reply))
        await reply
        samples.append(time.perf_counter() - began)
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    return samples


async def run(
    *, messages: int = 200_000, rounds: int = 20_000, mailbox: int = 1024
) -> dict[str, Any]:
    """Run both measures and their baselines; return the figures."""
    # Warm up imports, allocators and caches once.
    await _actor_tell(min(messages, 5_000), mailbox)
    await _actor_ask(min(rounds, 500))

    baseline_tell = await _queue_tell(messages, mailbox)
    actor_tell = await _actor_tell(messages, mailbox)
    baseline_ask = statistics.median(await _queue_ask(rounds))
    ask_samples = sorted(await _actor_ask(rounds))
    ask_median = statistics.median(ask_samples)
    return {
        "tell": {
            "messages": messages,
            "mailbox": mailbox,
            "messages_per_s": actor_tell,
            "baseline_queue_messages_per_s": baseline_tell,
            "ratio_to_baseline": actor_tell / baseline_tell,
            "target_messages_per_s": 100_000,
            "meets_target": actor_tell >= 100_000,
        },
        "ask": {
            "rounds": rounds,
            "median_us": ask_median * 1e6,
            "p99_us": (percentile(ask_samples, 0.99) or 0.0) * 1e6,
            "baseline_queue_future_median_us": baseline_ask * 1e6,
            "ratio_to_baseline": ask_median / baseline_ask,
            "target_median_us": 50,
            "meets_target": ask_median * 1e6 <= 50,
        },
    }


def table(result: dict[str, Any]) -> str:
    tell, ask = result["tell"], result["ask"]
    return "\n".join(
        [
            "| measure | runtime | asyncio baseline | ratio | target | met |",
            "|---|---|---|---|---|---|",
            f"| tell through one actor | {tell['messages_per_s']:,.0f} msg/s "
            f"| {tell['baseline_queue_messages_per_s']:,.0f} msg/s "
            f"| {tell['ratio_to_baseline']:.2f}x | ≥ 100,000 msg/s "
            f"| {'yes' if tell['meets_target'] else 'no'} |",
            f"| ask round trip, median | {ask['median_us']:.1f} µs "
            f"(p99 {ask['p99_us']:.1f} µs) | {ask['baseline_queue_future_median_us']:.1f} µs "
            f"| {ask['ratio_to_baseline']:.2f}x | ≤ 50 µs "
            f"| {'yes' if ask['meets_target'] else 'no'} |",
        ]
    )
