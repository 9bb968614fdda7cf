"""The indexer's throughput and lag (issue 14), against a raw bulk request to the
same Elasticsearch in the same run.

    python -m bench.indexer [--executions 3000] [--rate 200] [--seconds 20] [--rounds 5]

It starts its own noida-db (Kafka and Elasticsearch on free 127.0.0.1 ports, as the
tests do) and measures:

* **raw bulk**: the executions' documents sent straight to Elasticsearch in bulk
  requests of the indexer's batch size (refresh on, as the indexer does): the
  ceiling, in documents/s;
* **indexer backlog**: the same execution states written to the Kafka changelog
  first, then an indexer started: documents/s from its first bulk request to its
  last (start and group join left out), and its ratio to the raw bulk (medians
  of ``--rounds`` alternating rounds, each on indices and topics of
  its own);
* **lag at a rate**: executions created and ended at ``--rate`` per second (each
  one CREATED, then SUCCESS a tick later: two changelog records) while the indexer
  runs; for each tick, the time from the commit that ended its executions to the
  moment a search finds them all: p50, p95 and max.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

import msgspec

from backends.elasticsearch import documents, indices
from backends.elasticsearch.settings import SearchSettings
from backends.elasticsearch.store import SearchStore
from backends.elasticsearch.testing import running_search_server
from backends.elasticsearch.writer import Write
from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.protocols import ExecutionFilter
from runtime.actors import ActorSystem, ChildSpec
from runtime.config import IndexerConfig
from runtime.flow.execution import Execution, new_execution
from runtime.flow.states import StateType
from services.indexer import Indexer

SETTINGS = IndexerConfig(batch=500, fetch_wait_ms=20)
SUCCESS = ExecutionFilter(namespace="rate", states=(StateType.SUCCESS,))


def _execution(n: int, tag: str, ended: bool) -> Execution:
    at = datetime.now(UTC)
    e = new_execution(id=f"{tag}{n:07d}", namespace=tag, flow_id="f", flow_revision=1, at=at)
    if ended:
        state = e.state.to(StateType.RUNNING, at).to(StateType.SUCCESS, at)
        e = msgspec.structs.replace(e, state=state)
    return e


async def _count(store: SearchStore, where: ExecutionFilter) -> int:
    _, total = await store.executions.find(where, limit=0)
    return total


async def raw_bulk(store: SearchStore, n: int) -> float:
    """Documents/s of bulk requests straight to the store: the same writes as the
    indexer's backlog (each execution created, then ended), versioned as it does."""
    index = store.index(indices.EXECUTIONS)
    docs = [
        Write(index=index, id=e.id, version=version, source=documents.execution_doc(e))
        for version, ended in enumerate((False, True))
        for e in (_execution(i, "raw", ended) for i in range(n))
    ]
    # a first request to a fresh index is slower: not counted (the indexer's
    # measure comes after this one, on a warm index)
    warm = [_execution(i, "warm", True) for i in range(SETTINGS.batch)]
    await store.bulk(
        [Write(index=index, id=e.id, version=1, source=documents.execution_doc(e)) for e in warm]
    )
    started = time.perf_counter()
    for start in range(0, len(docs), SETTINGS.batch):
        await store.bulk(docs[start : start + SETTINGS.batch])
    return len(docs) / (time.perf_counter() - started)


async def _running(kafka: KafkaSettings, search: SearchSettings) -> tuple[ActorSystem, Indexer]:
    indexer = Indexer(kafka, search, SETTINGS)
    system = ActorSystem([ChildSpec(id="indexer", start=indexer.run, shutdown_timeout=10.0)])
    await system.start()
    return system, indexer


async def backlog(
    backend: KafkaBackend, store: SearchStore, kafka: KafkaSettings, search: SearchSettings, n: int
) -> float:
    """Documents/s of an indexer working through ``n`` executions' two states: from
    its first bulk to its last (its start and group join left out, as the raw bulk
    has none)."""
    # two transactions: one unit of work writes an execution once (its last state)
    for ended in (False, True):
        async with backend.transaction() as tx:
            for i in range(n):
                await tx.executions.save(_execution(i, "backlog", ended))
    system, indexer = await _running(kafka, search)
    ready = time.perf_counter()
    try:
        # the indexer's own count of documents written (its bulks refresh: they are
        # searchable when counted); polling the store would compete with it
        first, started = 0, 0.0
        while True:
            if indexer.written and not first:
                first, started = indexer.written, time.perf_counter()
            if indexer.written >= 2 * n:
                if first >= 2 * n:  # one bulk did it all: timed from the start then
                    return 2 * n / (time.perf_counter() - ready)
                return (2 * n - first) / (time.perf_counter() - started)
            await asyncio.sleep(0.005)
    finally:
        await system.stop()


async def lag_at_rate(
    backend: KafkaBackend,
    store: SearchStore,
    kafka: KafkaSettings,
    search: SearchSettings,
    rate: int,
    seconds: float,
    already: int,
) -> list[float]:
    """Seconds from each tick's commit to its executions being found ended."""
    tick = 0.1
    per_tick = max(int(rate * tick), 1)
    system, _ = await _running(kafka, search)
    ended_at: list[tuple[int, float]] = []
    lags: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set() or ended_at:
            found = await _count(store, SUCCESS) - already
            now = time.perf_counter()
            while ended_at and ended_at[0][0] <= found:
                lags.append(now - ended_at.pop(0)[1])
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch(), name="bench.indexer.watch")
    try:
        previous: list[int] = []
        ended = 0
        next_tick = time.perf_counter()
        for k in range(int(seconds / tick)):
            fresh = list(range(k * per_tick, (k + 1) * per_tick))
            async with backend.transaction() as tx:
                for i in fresh:
                    await tx.executions.save(_execution(i, "rate", False))
                for i in previous:
                    await tx.executions.save(_execution(i, "rate", True))
            ended += len(previous)
            if previous:
                ended_at.append((ended, time.perf_counter()))
            previous = fresh
            next_tick += tick
            await asyncio.sleep(max(next_tick - time.perf_counter(), 0))
        stop.set()
        await asyncio.wait_for(watcher, 120)
    finally:
        stop.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await system.stop()
    return lags


async def main(executions: int, rate: int, seconds: float, rounds: int) -> dict[str, float]:
    raws: list[float] = []
    indexed: list[float] = []
    with running_search_server() as server:
        # Rounds alternate the raw bulk and the indexer, each on indices (and topics)
        # of its own: this machine is shared, and a single pair of figures moves by
        # a factor of two from one run to the next.
        for n in range(rounds + 1):
            kafka = KafkaSettings(
                bootstrap_servers=server.bootstrap_servers,
                topic_prefix=f"bench{n}.",
                partitions=4,
            )
            search = SearchSettings(hosts=(server.es_url,), index_prefix=f"bench{n}_")
            store = SearchStore(search)
            backend = KafkaBackend(kafka)
            await backend.start()
            try:
                await store.migrate()
                if n < rounds:
                    raws.append(await raw_bulk(store, executions))
                    indexed.append(await backlog(backend, store, kafka, search, executions))
                else:
                    lags = await lag_at_rate(backend, store, kafka, search, rate, seconds, 0)
            finally:
                await backend.stop()
                await store.close()
    lags.sort()
    raw, index = statistics.median(raws), statistics.median(indexed)
    return {
        "raw_bulk_docs_per_s": raw,
        "indexer_docs_per_s": index,
        "indexer_vs_raw": index / raw,
        "indexer_vs_raw_min": min(i / r for i, r in zip(indexed, raws, strict=True)),
        "indexer_vs_raw_max": max(i / r for i, r in zip(indexed, raws, strict=True)),
        "rate_executions_per_s": rate,
        "lag_p50_s": statistics.median(lags),
        "lag_p95_s": lags[int(0.95 * (len(lags) - 1))],
        "lag_max_s": lags[-1],
        "ticks": len(lags),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.indexer", description=__doc__.splitlines()[0])
    p.add_argument("--executions", type=int, default=3000)
    p.add_argument("--rate", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    figures = asyncio.run(main(args.executions, args.rate, args.seconds, args.rounds))
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:.3f}")
