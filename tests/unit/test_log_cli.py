"""Logging picks its format from the terminal; the CLI answers --help and --version."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from click.testing import CliRunner

from services.cli import cli

SNIPPET = (
    "from runtime.log import configure_logging, get_logger;"
    "configure_logging();"
    "get_logger('probe').info('hello', answer=42)"
)


def test_logs_are_json_lines_when_stderr_is_not_a_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True, timeout=30
    )
    record = json.loads(done.stderr.strip().splitlines()[-1])
    assert record["event"] == "hello"
    assert record["answer"] == 42
    assert record["level"] == "info"
    assert record["logger"] == "probe"
    assert "timestamp" in record


def test_logs_are_readable_lines_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", SNIPPET], stderr=follower, check=True, timeout=30)
        output = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "hello" in output
    assert "answer" in output
    assert not output.lstrip().startswith("{")


def test_cli_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "workflow orchestrator" in result.output
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "runtime, version 0.1.0" in result.output


def _log_of_a_request(level: str) -> str:
    snippet = (
        "import httpx;"
        "from runtime.log import configure_logging;"
        f"configure_logging({level!r});"
        "t = httpx.MockTransport(lambda request: httpx.Response(200));"
        "httpx.Client(transport=t).get('http://127.0.0.1:9/api?token=s3cret')"
    )
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stderr


def test_an_http_request_url_is_not_logged_at_info() -> None:
    # An HTTP task's uri may carry a token in its query string.
    assert "s3cret" not in _log_of_a_request("INFO")


def test_an_http_request_url_is_logged_when_debugging() -> None:
    assert "s3cret" in _log_of_a_request("DEBUG")
