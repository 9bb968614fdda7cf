"""The webhook trigger end to end: an HTTP request starts an execution whose
``trigger`` variable carries the request's body, headers and parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, YAML, api

pytestmark = pytest.mark.asyncio

HOOK = f"""id: hook
namespace: {NS}
inputs:
  - id: who
    type: STRING
    defaults: nobody
tasks:
  - id: echo
    type: io.kestra.plugin.core.debug.Return
    format: >-
      {{{{ trigger.body.name ?? trigger.body }}}}|{{{{ trigger.headers['x-team'][0] }}}}|{{{{
      trigger.parameters.page[0] }}}}|{{{{ inputs.who }}}}
triggers:
  - id: incoming
    type: io.kestra.plugin.core.trigger.Webhook
    key: s3cret
    inputs:
      who: "{{{{ trigger.parameters.page[0] }}}}"
"""


async def test_a_webhook_starts_an_execution_with_the_request_as_trigger(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK)
        url = f"/api/v1/executions/webhook/{NS}/hook/s3cret"
        response = await a.client.post(
            url, params={"page": "7"}, json={"name": "Ada"}, headers={"x-team": "data"}
        )
        assert response.status_code == 200, response.text
        created = response.json()
        assert created["trigger"]["id"] == "incoming"
        assert created["trigger"]["body"] == {"name": "Ada"}
        assert created["inputs"] == {"who": "7"}
        done = await a.ended(created["id"])
        assert done["state"]["current"] == "SUCCESS"
        assert done["taskRunList"][0]["outputs"] == {"value": "Ada|data|7|7"}


async def test_get_and_put_and_a_text_body(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK)
        url = f"/api/v1/executions/webhook/{NS}/hook/s3cret?page=1"
        got = await a.client.get(url, headers={"x-team": "ops"})
        assert got.status_code == 200
        assert got.json()["trigger"]["body"] is None
        put = await a.client.put(url, content=b"plain words", headers={"x-team": "ops"})
        assert put.status_code == 200
        done = await a.ended(put.json()["id"])
        assert done["taskRunList"][0]["outputs"] == {"value": "plain words|ops|1|1"}


async def test_wrong_key_unknown_or_disabled_flow_are_404(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK)
        wrong = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/guess")
        assert wrong.status_code == 404
        unknown = await a.client.post(f"/api/v1/executions/webhook/{NS}/nope/s3cret")
        assert unknown.status_code == 404
        await a.client.put(
            f"/api/v1/flows/{NS}/hook", content=HOOK + "disabled: true\n", headers=YAML
        )
        disabled = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/s3cret")
        assert disabled.status_code == 404
        await a.client.put(f"/api/v1/flows/{NS}/hook", content=HOOK, headers=YAML)
        trigger = {"namespace": NS, "flowId": "hook", "triggerId": "incoming", "disabled": True}
        assert (await a.client.put("/api/v1/triggers", json=trigger)).status_code == 200
        off = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/s3cret")
        assert off.status_code == 404
        trigger["disabled"] = False
        await a.client.put("/api/v1/triggers", json=trigger)
        on = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/s3cret?page=2")
        assert on.status_code == 200


async def test_inputs_the_trigger_cannot_satisfy_are_422(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK.replace("type: STRING", "type: INT").replace("nobody", "0"))
        response = await a.client.post(
            f"/api/v1/executions/webhook/{NS}/hook/s3cret", params={"page": "first"}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["input"] == "who"


async def test_a_webhook_trigger_without_a_key_is_an_invalid_flow(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        keyless = HOOK.replace("    key: s3cret\n", "")
        response = await a.client.post("/api/v1/flows", content=keyless, headers=YAML)
        assert response.status_code == 422
        problem = response.json()["errors"][0]
        assert problem["message"] == "a Webhook trigger needs a `key`"
        assert (problem["line"], problem["path"]) == (14, "triggers[0]")


async def test_a_templated_key_is_rendered_with_the_flow(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        source = HOOK.replace("key: s3cret", 'key: "{{ vars.secret }}-{{ flow.id }}"')
        await a.deploy(source + "variables:\n  secret: abc\n")
        ok = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/abc-hook?page=1")
        assert ok.status_code == 200
        literal = "{{ vars.secret }}-{{ flow.id }}"
        raw = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/{literal}")
        assert raw.status_code == 404


async def test_a_condition_that_does_not_hold_creates_no_execution(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        condition = (
            "    conditions:\n"
            "      - type: io.kestra.plugin.core.condition.Expression\n"
            '        expression: "{{ trigger.body.ok }}"\n'
        )
        await a.deploy(HOOK.replace("    key: s3cret\n", "    key: s3cret\n" + condition))
        url = f"/api/v1/executions/webhook/{NS}/hook/s3cret?page=1"
        refused = await a.client.post(url, json={"ok": False})
        assert refused.status_code == 204
        found = await a.client.get("/api/v1/executions/search", params={"flowId": "hook"})
        assert found.json()["total"] == 0
        accepted = await a.client.post(url, json={"ok": True}, headers={"x-team": "t"})
        assert accepted.status_code == 200
        assert (await a.ended(accepted.json()["id"]))["state"]["current"] == "SUCCESS"
        broken = await a.client.post(url, content=b"not json")
        assert broken.status_code == 422
        assert "trigger.body.ok" in broken.json()["message"]


async def test_the_server_credentials_are_not_stored_with_the_execution(tmp_path: Path) -> None:
    """With basic authentication on, a webhook's Authorization header holds the API's
    password: stored in ``trigger.headers`` it would be shown to every reader of the
    execution (and kept in the database)."""
    import base64

    from runtime.config import WebserverConfig, WebserverUser

    web = WebserverConfig(
        users=(WebserverUser(username="admin", password="hunter2"),), poll_seconds=0.02
    )
    token = base64.b64encode(b"admin:hunter2").decode()
    auth = {"authorization": f"Basic {token}"}
    async with api(tmp_path, web=web) as a:
        deployed = await a.client.post("/api/v1/flows", content=HOOK, headers={**YAML, **auth})
        assert deployed.status_code == 200
        response = await a.client.post(
            f"/api/v1/executions/webhook/{NS}/hook/s3cret?page=1",
            json={"name": "Ada"},
            headers={**auth, "x-team": "data"},
        )
        assert response.status_code == 200, response.text
        headers = response.json()["trigger"]["headers"]
        assert headers["x-team"] == ["data"]
        assert "authorization" not in headers
        stored = await a.backend.executions.get(response.json()["id"])
        assert stored is not None
        assert token not in str(stored)
    # without authentication the header is the caller's, for the flow: kept
    (tmp_path / "open").mkdir()
    async with api(tmp_path / "open") as a:
        await a.deploy(HOOK)
        response = await a.client.post(
            f"/api/v1/executions/webhook/{NS}/hook/s3cret?page=1",
            headers={"authorization": "Bearer for-the-flow"},
        )
        assert response.json()["trigger"]["headers"]["authorization"] == ["Bearer for-the-flow"]
