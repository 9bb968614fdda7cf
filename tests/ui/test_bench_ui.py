"""The UI benchmark (python -m bench.ui) runs end to end at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ui
from tests.requirements import missing
from tests.ui.conftest import CHROMIUM

pytestmark = pytest.mark.slow


def test_the_ui_benchmark_measures_both_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path(CHROMIUM).exists():
        missing(f"no Chromium at {CHROMIUM}: run .ci/services.d/chromium.sh")
    out = tmp_path / "figures.json"
    shots = tmp_path / "shots"
    argv = ["--executions", "60", "--task-runs", "200", "--repeat", "1"]
    assert ui.main([*argv, "--json", str(out), "--screenshots", str(shots)]) == 0
    figures = json.loads(out.read_text())
    # 60 small executions and the big one
    assert figures["stored"] == 61
    for page in ("executions list", "execution page"):
        assert 0 < figures["pages"][page]["median_s"] < 60
    assert "| executions list |" in capsys.readouterr().out
    assert {p.name for p in shots.iterdir()} == {
        "large-dashboard.png",
        "large-executions.png",
        "large-execution-gantt.png",
    }
