"""The storage benchmark runs (at a tiny size) and reports both sides and the ratios."""

from __future__ import annotations

import pytest

from bench import storage as bench_storage


@pytest.mark.slow
@pytest.mark.asyncio
async def test_storage_bench_reports_ratios_and_peaks() -> None:
    report = await bench_storage.run("seaweedfs", 2, 1)
    assert report["size_bytes"] == 2 * 1024 * 1024
    assert set(report["seconds"]) == {"raw_put", "raw_get", "put", "get"}
    assert all(v > 0 for v in report["seconds"].values())
    assert report["ratio"]["put"] > 0
    assert report["ratio"]["get"] > 0
    # The raw client holds the 2 MiB file; the protocol's read holds one chunk.
    assert report["peak_mib"]["raw_get"] >= 2
    table = bench_storage.markdown("seaweedfs", report)
    assert "| put |" in table
    assert "| get |" in table
