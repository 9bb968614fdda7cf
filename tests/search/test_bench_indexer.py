"""bench/indexer.py runs (its smallest size): the figures are there and sane. The
figures themselves are the bench's business, not a test's."""

from __future__ import annotations

import pytest

from backends.kafka.testing import BrokerUnavailable
from bench.indexer import main
from tests.requirements import missing

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_the_indexer_bench_runs() -> None:
    try:
        figures = await main(executions=1000, rate=50, seconds=1.0, rounds=1)
    except BrokerUnavailable as exc:
        missing(str(exc))
    assert figures["raw_bulk_docs_per_s"] > 0
    assert figures["indexer_docs_per_s"] > 0
    assert figures["ticks"] >= 5
    assert 0 <= figures["lag_p50_s"] <= figures["lag_max_s"]
