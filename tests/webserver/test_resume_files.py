"""A Pause's onResume FILE inputs: uploaded with the resume request, as in Kestra."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, api

pytestmark = pytest.mark.asyncio

ASKING = f"""id: asking
namespace: {NS}
tasks:
  - id: gate
    type: io.kestra.plugin.core.flow.Pause
    onResume:
      - id: note
        type: STRING
      - id: attachment
        type: FILE
        required: false
  - id: after
    type: io.kestra.plugin.core.output.OutputValues
    values:
      note: "{{{{ outputs.gate.onResume.note }}}}"
      uri: "{{{{ outputs.gate.onResume.attachment }}}}"
      content: "{{{{ read(outputs.gate.onResume.attachment) }}}}"
"""


async def test_a_file_answers_an_on_resume_file_input(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(ASKING)
        ex = await a.execute("asking")
        await a.in_state(ex["id"], "PAUSED")
        url = f"/api/v1/executions/{ex['id']}/resume"
        wrong = await a.client.post(url, data={"note": "hi"}, files={"note": ("n.txt", b"x")})
        assert wrong.status_code == 422, wrong.text
        assert "not FILE inputs" in wrong.json()["message"]
        response = await a.client.post(
            url, data={"note": "hi"}, files={"attachment": ("report.txt", b"the report")}
        )
        assert response.status_code == 204, response.text
        done = await a.ended(ex["id"])
        assert done["state"]["current"] == "SUCCESS"
        values = done["taskRunList"][-1]["outputs"]["values"]
        assert values["note"] == "hi"
        assert values["uri"].startswith(f"kestra:///{NS}/asking/executions/{ex['id']}/resume/")
        assert values["content"] == "the report"
