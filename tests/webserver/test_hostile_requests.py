"""Requests a client can send that must be refused with a 4xx naming the problem,
never answered by a 500: JSON nested deeper than the decoders recurse, malformed
``Last-Event-ID`` headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, RETURN, api, flow

pytestmark = pytest.mark.asyncio

HOOK = flow(
    "hook",
    RETURN,
    "triggers:\n  - id: hook\n    type: io.kestra.plugin.core.trigger.Webhook\n    key: k\n",
)
DEEP = b"[" * 100_000 + b"]" * 100_000


async def test_json_nested_too_deeply_is_a_400_on_every_json_body(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK)
        for method, path, body in [
            ("POST", f"/api/v1/executions/webhook/{NS}/hook/k", DEEP),
            ("PUT", f"/api/v1/namespaces/{NS}/kv/deep", DEEP),
            # msgspec recurses even to skip a field the type does not have
            ("PUT", "/api/v1/triggers", b'{"skipped": ' + DEEP + b"}"),
            ("POST", "/api/v1/stats/executions/daily", b'{"skipped": ' + DEEP + b"}"),
            ("POST", "/api/v1/flows/enable/by-ids", b'[{"namespace": "a", "x": ' + DEEP + b"}]"),
        ]:
            response = await a.client.request(method, path, content=body)
            assert response.status_code == 400, (path, response.text[:200])
            assert "nested too deeply" in response.json()["message"], path
        # what stays within the decoders' depth still works
        nested = b"[" * 50 + b"1" + b"]" * 50
        started = await a.client.post(f"/api/v1/executions/webhook/{NS}/hook/k", content=nested)
        assert started.status_code == 200, started.text
        kept = await a.client.put(f"/api/v1/namespaces/{NS}/kv/nested", content=nested)
        assert kept.status_code == 204
        value = (await a.client.get(f"/api/v1/namespaces/{NS}/kv/nested")).json()["value"]
        for _ in range(50):
            value = value[0]
        assert value == 1


async def test_a_malformed_last_event_id_is_a_400(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK)
        ex = await a.execute("hook", params={"wait": "true"})
        url = f"/api/v1/logs/{ex['id']}/follow"
        # past int's 4300-digit limit; past a 64-bit column; a digit int() refuses
        # (the latin-1 byte 0xB2 a client can send raw)
        for header in (b"9" * 5000, b"9" * 30, str(2**63).encode(), b"\xb2", b"-1", b"abc"):
            response = await a.client.get(url, headers={"last-event-id": header})
            assert response.status_code == 400, (header[:10], response.text[:200])
            assert "Last-Event-ID" in response.json()["message"]
        for header in (b"", b" 0 ", str(2**63 - 1).encode()):
            assert (await a.client.get(url, headers={"last-event-id": header})).status_code == 200
