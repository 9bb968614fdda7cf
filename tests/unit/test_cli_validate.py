"""`runtime flow validate`: one `file:line:col: message` line per problem, exit 0/1/2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import cli

ROOT = Path(__file__).parent.parent.parent
FLOWS = ROOT / "tests" / "flows"
DURATION_HINT = (
    "'10s' is not an ISO-8601 duration: write e.g. PT30S (30 seconds), PT5M (5 minutes), "
    "PT1H30M, P1D (1 day) or PT0.5S"
)


def expected_lines(prefix: str) -> list[str]:
    broken, typos = f"{prefix}/broken.yaml", f"{prefix}/typos.yml"
    return [
        f"{broken}:6:12: invalid YAML: did not find expected ',' or ']' (while parsing a flow "
        "sequence at line 5); close the `[` opened on line 5, or quote a value that starts "
        "with it",
        f"{typos}:4:5: missing required field `message` for io.kestra.plugin.core.log.Log "
        "(at tasks[0]); add `message: ...`",
        f"{typos}:6:5: unknown field `mesage` for io.kestra.plugin.core.log.Log "
        "(at tasks[0].mesage); did you mean `message`?",
        f"{typos}:9:15: `duration` is not a valid duration: '10s' (at tasks[1].duration); "
        + DURATION_HINT,
    ]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["flow", "validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_valid_flows_print_nothing_and_exit_0() -> None:
    code, out, err = run(str(FLOWS / "valid"))
    assert (code, out) == (0, "")
    assert err == "2 flow file(s) checked\n"


def test_invalid_flows_print_one_line_per_problem_and_exit_1() -> None:
    code, out, err = run(str(FLOWS / "invalid"))
    assert code == 1
    assert out.splitlines() == expected_lines(str(FLOWS / "invalid"))
    assert err == "2 flow file(s) checked, 2 with problems (4 problem(s))\n"


def test_files_and_folders_mix() -> None:
    code, out, _ = run(str(FLOWS / "valid"), str(FLOWS / "invalid" / "typos.yml"))
    assert code == 1
    assert out.splitlines() == expected_lines(str(FLOWS / "invalid"))[1:]


def test_missing_path_is_a_usage_error() -> None:
    code, out, err = run(str(FLOWS / "valid"), str(FLOWS / "nowhere.yml"))
    assert code == 2
    assert out == ""
    assert f"no such file or folder: {FLOWS / 'nowhere.yml'}" in err


def test_no_path_is_a_usage_error() -> None:
    code, _, err = run()
    assert code == 2
    assert "Missing argument" in err


def test_unreadable_and_undecodable_files_are_problem_lines(tmp_path: Path) -> None:
    (tmp_path / "latin1.yml").write_bytes(b"id: caf\xe9\n")
    (tmp_path / "folder.yml").mkdir()  # a folder named like a flow is skipped
    (tmp_path / ".venv").mkdir()  # and so are hidden folders
    (tmp_path / ".venv" / "settings.yaml").write_text("not: [a flow\n")
    code, out, _ = run(str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f"{tmp_path}/latin1.yml:1:8: the file is not UTF-8 text: invalid continuation byte"
    ]


@pytest.mark.slow
def test_the_real_command_in_a_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "flow", "validate", "tests/flows"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == expected_lines("tests/flows/invalid")
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("4 flow file(s) checked, 2 with problems (4 problem(s))")
    valid = subprocess.run(
        [sys.executable, "-m", "services.cli", "flow", "validate", "tests/flows/valid"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (valid.returncode, valid.stdout) == (0, "")
