"""The budget benchmark runs, and its two renderers agree on every property."""

from __future__ import annotations

from bench import budget as bench_budget


def test_the_budget_benchmark_compares_like_with_like() -> None:
    result = bench_budget.run(rounds=3, repeat=2)
    assert set(result) == {"sequential_40", "webhook_pair", "filtered"}
    assert result["sequential_40"]["properties"] == 40
    assert result["webhook_pair"]["properties"] == 3  # values, message, level
    for figures in result.values():
        assert figures["us_per_property_bare"] > 0
        assert figures["ratio"] > 0
    assert "| webhook_pair | 3 |" in bench_budget.table(result)
