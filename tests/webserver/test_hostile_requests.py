"""Requests a client can send that must be refused with a 4xx naming the problem,
never answered by a 500: JSON nested deeper than the decoders recurse, malformed
``Last-Event-ID`` headers, inputs that expand without bound, NUL characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.webserver.helpers import NS, RETURN, Api, api, flow

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


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdef", "bcdefg", strict=True)
)  # 9**7 strings once expanded (add levels for gigabytes): past the bound of a million
TYPED = flow(
    "typed",
    RETURN,
    "inputs:\n  - id: doc\n    type: YAML\n    required: false\n"
    "  - id: data\n    type: JSON\n    required: false\n"
    "  - id: items\n    type: ARRAY\n    itemType: INT\n    required: false\n",
)


async def test_json_and_yaml_inputs_that_expand_without_bound_are_a_422(tmp_path: Path) -> None:
    """A 250-byte YAML input of aliases is millions of values once stored, a recursive
    alias has no end, and deep JSON exhausts the parser's recursion: each is refused
    naming the input, before anything is stored."""
    async with api(tmp_path) as a:
        await a.deploy(TYPED)
        url = f"/api/v1/executions/{NS}/typed"
        deep = "[" * 100_000 + "]" * 100_000
        for name, value in [
            ("doc", BOMB),
            ("doc", "&r [*r]"),
            ("doc", "[" * 5000 + "]" * 5000),
            ("data", deep),
            ("data", "[" * 500 + "]" * 500),  # parsed, but past the depth bound
            ("items", deep),
        ]:
            response = await a.client.post(url, data={name: value})
            assert response.status_code == 422, (name, value[:20], response.text[:200])
            error = response.json()["errors"][0]
            assert error["input"] == name
            assert "nests too deeply or expands too many aliases" in error["message"]
        found = await a.client.get("/api/v1/executions/search", params={"flowId": "typed"})
        assert found.json()["total"] == 0
        fine = await a.execute(
            "typed", data={"doc": "a: &a [1, 2]\nb: *a\n", "data": '{"k": [1]}', "items": "[1]"}
        )
        expected = {"doc": {"a": [1, 2], "b": [1, 2]}, "data": {"k": [1]}, "items": [1]}
        assert fine["inputs"] == expected


async def nul_refusals(a: Api) -> None:
    """Every place a NUL can come in is a 400 (PostgreSQL cannot hold one in text)."""
    ex = await a.execute("hook", params={"wait": "true"})
    for method, path, body in [
        ("GET", "/api/v1/executions/search?q=%00", None),
        ("GET", "/api/v1/executions/search?labels=a%00:b", None),
        ("GET", "/api/v1/executions/%00", None),
        ("GET", "/api/v1/flows/%00/x", None),
        ("GET", f"/api/v1/logs/{ex['id']}?taskRunId=%00", None),
        ("PUT", f"/api/v1/namespaces/{NS}/kv/a%00b", b"1"),
        ("POST", f"/api/v1/executions/webhook/{NS}/hook/k?x=%00", None),
        ("POST", f"/api/v1/executions/{ex['id']}/labels", b'[{"key": "a\\u0000", "value": "b"}]'),
        ("PUT", "/api/v1/triggers", b'{"namespace": "\\u0000", "flowId": "f", "triggerId": "t"}'),
        ("POST", "/api/v1/stats/executions/daily", b'{"namespace": "\\u0000"}'),
    ]:
        response = await a.client.request(method, path, content=body)
        assert response.status_code == 400, (path, response.text[:200])
        assert "NUL character" in response.json()["message"], path
    # %2500 is the text "%00", not a NUL
    kept = await a.client.get("/api/v1/executions/search", params={"q": "%00"})
    assert kept.status_code == 200


async def test_a_nul_character_in_the_url_or_a_json_body_is_a_400(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(HOOK)
        await nul_refusals(a)
