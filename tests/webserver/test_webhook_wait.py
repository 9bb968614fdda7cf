"""Webhook triggers with `wait` and `returnOutputs`: the caller gets the ended
execution, or only its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, api

pytestmark = pytest.mark.asyncio

WAITED = f"""id: waited
namespace: {NS}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
  - id: answer
    type: io.kestra.plugin.core.debug.Return
    format: "hello {{{{ trigger.body.name }}}}"
outputs:
  - id: greeting
    type: STRING
    value: "{{{{ outputs.answer.value }}}}"
triggers:
  - id: plain_wait
    type: io.kestra.plugin.core.trigger.Webhook
    key: wait-key
    wait: true
  - id: outputs_only
    type: io.kestra.plugin.core.trigger.Webhook
    key: outputs-key
    wait: true
    returnOutputs: true
"""


async def test_wait_answers_with_the_ended_execution(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(WAITED)
        response = await a.client.post(
            f"/api/v1/executions/webhook/{NS}/waited/wait-key", json={"name": "Ada"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["state"]["current"] == "SUCCESS"
        assert body["outputs"] == {"greeting": "hello Ada"}
        assert [r["taskId"] for r in body["taskRunList"]] == ["nap", "answer"]


async def test_return_outputs_answers_with_the_outputs_only(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(WAITED)
        response = await a.client.post(
            f"/api/v1/executions/webhook/{NS}/waited/outputs-key", json={"name": "Bo"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"greeting": "hello Bo"}
