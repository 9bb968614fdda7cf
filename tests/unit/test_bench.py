"""The kernel benchmark runs at tiny sizes and reports figures against its baseline."""

from __future__ import annotations

import json

import pytest

from bench import actors
from bench.__main__ import main


@pytest.mark.asyncio
async def test_actor_benchmark_reports_figures_and_ratios() -> None:
    result = await actors.run(messages=2_000, rounds=200, mailbox=64)
    tell, ask = result["tell"], result["ask"]
    assert tell["messages_per_s"] > 0
    assert tell["ratio_to_baseline"] == pytest.approx(
        tell["messages_per_s"] / tell["baseline_queue_messages_per_s"]
    )
    assert ask["median_us"] > 0
    assert ask["ratio_to_baseline"] == pytest.approx(
        ask["median_us"] / ask["baseline_queue_future_median_us"]
    )
    assert "| tell through one actor |" in actors.table(result)


def test_bench_command_writes_json(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(actors, "run", _tiny(actors.run))
    assert main(["actors", "--quick", "--results", str(tmp_path)]) == 0
    [path] = tmp_path.glob("actors-*.json")
    document = json.loads(path.read_text())
    assert document["machine"]["cpus"] >= 1
    assert document["result"]["tell"]["messages_per_s"] > 0
    assert "ask round trip" in capsys.readouterr().out


def _tiny(run):  # type: ignore[no-untyped-def]
    async def tiny(**_: object):  # type: ignore[no-untyped-def]
        return await run(messages=1_000, rounds=100, mailbox=32)

    return tiny
