"""Validation never evaluates: `runtime flow validate` and the API's validate answer
at once on flows whose expressions would never end (issue 13)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import cli
from tests.webserver.helpers import NS, YAML, api

HOSTILE = f"""id: hostile
namespace: {NS}
tasks:
  - id: endless
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ '{{}}' | jq('def f: f; f') }}}}"
  - id: huge
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ '{{}}' | jq('[range(100000000)]') }}}}"
  - id: backtracking
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ '{"a" * 40}!' | replace({{'^(a|aa)+$': 'x'}}, regexp=true) }}}}"
"""


def test_the_cli_validates_a_hostile_flow_at_once(tmp_path: Path) -> None:
    file = tmp_path / "hostile.yml"
    file.write_text(HOSTILE)
    began = time.perf_counter()
    result = CliRunner().invoke(cli, ["flow", "validate", str(file)])
    assert time.perf_counter() - began < 2.0
    assert result.exit_code == 0, result.output


@pytest.mark.asyncio
async def test_the_api_validates_a_hostile_flow_at_once(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        began = time.perf_counter()
        response = await a.client.post("/api/v1/flows/validate", content=HOSTILE, headers=YAML)
        assert time.perf_counter() - began < 2.0
        assert response.status_code == 200, response.text
        assert all(not item.get("constraints") for item in response.json()), response.text
