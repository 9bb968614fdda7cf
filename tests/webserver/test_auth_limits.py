"""Basic authentication (every endpoint but health refuses without credentials) and
the request size limits."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.config import WebserverConfig, WebserverUser
from services.webserver.openapi import openapi_document
from tests.webserver.helpers import NS, RETURN, YAML, api, flow

pytestmark = pytest.mark.asyncio

USERS = (WebserverUser(username="admin", password="pa:ss"),)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def _endpoints() -> list[tuple[str, str]]:
    out = []
    for path, operations in openapi_document()["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        out.extend((method.upper(), concrete) for method in operations)
    return out


async def test_every_endpoint_but_health_requires_credentials(tmp_path: Path) -> None:
    web = WebserverConfig(users=USERS)
    async with api(tmp_path, web=web, components=()) as a:
        endpoints = _endpoints()
        assert len(endpoints) >= 35
        for method, path in endpoints:
            response = await a.client.request(method, path)
            wrong = await a.client.request(method, path, headers=_basic("admin", "nope"))
            if path in ("/health", "/health/ready"):
                assert response.status_code == 200, path
                continue
            if path.startswith(("/api/v1/executions/webhook/", "/api/v1/x/executions/webhook/")):
                # the webhook's key is its credential (webhook_auth is off)
                assert response.status_code == 404, (method, path)
                continue
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Basic")
            assert response.json()["message"].startswith("authentication required")
            assert wrong.status_code == 401, (method, path)
        for header in ({"authorization": "Basic !!!"}, {"authorization": "Bearer abc"}):
            assert (await a.client.get("/api/v1/flows/search", headers=header)).status_code == 401


async def test_the_right_credentials_are_let_through(tmp_path: Path) -> None:
    web = WebserverConfig(users=USERS)
    async with api(tmp_path, web=web, components=()) as a:
        auth = _basic("admin", "pa:ss")
        created = await a.client.post(
            "/api/v1/flows", content=flow("hello", RETURN), headers={**YAML, **auth}
        )
        assert created.status_code == 200
        listed = await a.client.get(f"/api/v1/flows/{NS}", headers=auth)
        assert [f["id"] for f in listed.json()] == ["hello"]


async def test_a_body_past_the_limit_is_413(tmp_path: Path) -> None:
    web = WebserverConfig(max_body_bytes=1000)
    async with api(tmp_path, web=web, components=()) as a:
        big = flow("hello", RETURN) + "#" * 2000 + "\n"
        response = await a.client.post("/api/v1/flows", content=big, headers=YAML)
        assert response.status_code == 413
        assert "webserver.max_body_bytes" in response.json()["message"]

        async def chunks() -> AsyncIterator[bytes]:
            # no Content-Length: the limit applies while the body streams in
            for _ in range(5):
                yield b"#" * 500

        streamed = await a.client.post("/api/v1/flows", content=chunks(), headers=YAML)
        assert streamed.status_code == 413
        small = await a.client.post("/api/v1/flows", content=flow("hello", RETURN), headers=YAML)
        assert small.status_code == 200


async def test_an_upload_past_its_limit_is_413_and_stores_nothing(tmp_path: Path) -> None:
    web = WebserverConfig(max_body_bytes=2000, max_upload_bytes=5000)
    async with api(tmp_path, web=web) as a:
        await a.deploy(flow("file", RETURN, "inputs:\n  - id: data\n    type: FILE\n"))
        url = f"/api/v1/executions/{NS}/file"
        response = await a.client.post(url, files={"data": ("big.bin", b"x" * 10_000)})
        assert response.status_code == 413
        assert "webserver.max_upload_bytes" in response.json()["message"]
        assert await a.server.storage.list(NS) == []
        fits = await a.client.post(url, files={"data": ("small.bin", b"x" * 1000)})
        assert fits.status_code == 200


async def test_a_multipart_content_type_does_not_lift_the_body_limit(tmp_path: Path) -> None:
    """Only the routes that stream uploads to storage take bodies up to the upload
    limit; the others read theirs into memory, so a client that calls its body
    multipart must not get a gigabyte past webserver.max_body_bytes."""
    web = WebserverConfig(max_body_bytes=1000, max_upload_bytes=100_000)
    async with api(tmp_path, web=web, components=()) as a:
        await a.deploy(
            flow(
                "file",
                RETURN,
                "inputs:\n  - id: data\n    type: FILE\n"
                "triggers:\n  - id: hook\n    type: io.kestra.plugin.core.trigger.Webhook\n"
                "    key: k\n",
            )
        )
        multipart = {"content-type": "multipart/form-data; boundary=x"}
        body = b"--x\r\n" + b"y" * 5000 + b"\r\n--x--\r\n"

        async def streamed() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 500):
                yield body[start : start + 500]

        for method, path in [
            ("POST", "/api/v1/flows"),
            ("POST", f"/api/v1/executions/webhook/{NS}/file/k"),
            ("PUT", f"/api/v1/namespaces/{NS}/kv/key"),
            ("POST", "/api/v1/flows/validate"),
        ]:
            for content in (body, streamed()):
                response = await a.client.request(method, path, content=content, headers=multipart)
                assert response.status_code == 413, (path, response.text[:200])
                assert "webserver.max_body_bytes" in response.json()["message"], path
        # the upload route still takes a file past the body limit
        uploaded = await a.client.post(
            f"/api/v1/executions/{NS}/file", files={"data": ("f.bin", b"z" * 50_000)}
        )
        assert uploaded.status_code == 200, uploaded.text[:200]
        # and refuses at once, by its Content-Length, what no route would take
        huge = await a.client.post(
            f"/api/v1/executions/{NS}/file", files={"data": ("f.bin", b"z" * 200_000)}
        )
        assert huge.status_code == 413
        assert "webserver.max_upload_bytes" in huge.json()["message"]


async def test_a_form_text_value_past_one_mib_is_413(tmp_path: Path) -> None:
    web = WebserverConfig(max_body_bytes=4 * 1024 * 1024, max_upload_bytes=8 * 1024 * 1024)
    async with api(tmp_path, web=web) as a:
        await a.deploy(flow("text", RETURN, "inputs:\n  - id: note\n    type: STRING\n"))
        url = f"/api/v1/executions/{NS}/text"
        big = "x" * (1024 * 1024 + 1)
        for sent in (
            {"files": {"note": (None, big)}},  # a multipart text part
            {"data": {"note": big}},  # url-encoded
        ):
            response = await a.client.post(url, **sent)  # type: ignore[arg-type]
            assert response.status_code == 413, response.text[:200]
            assert "1 MiB" in response.json()["message"]
        fits = await a.client.post(url, data={"note": "x" * 1000})
        assert fits.status_code == 200


async def test_a_webhook_needs_only_its_key_unless_webhook_auth_is_set(tmp_path: Path) -> None:
    hook = (
        "triggers:\n  - id: hook\n    type: io.kestra.plugin.core.trigger.Webhook\n    key: k3y\n"
    )
    url = f"/api/v1/executions/webhook/{NS}/hooked/k3y"
    auth = _basic("admin", "pa:ss")
    for webhook_auth, anonymous in ((False, 200), (True, 401)):
        web = WebserverConfig(users=USERS, webhook_auth=webhook_auth)
        folder = tmp_path / str(webhook_auth)
        folder.mkdir()
        async with api(folder, web=web) as a:
            deployed = await a.client.post(
                "/api/v1/flows", content=flow("hooked", RETURN, hook), headers={**YAML, **auth}
            )
            assert deployed.status_code == 200
            response = await a.client.post(url, json={"a": 1})
            assert response.status_code == anonymous, response.text[:200]
            assert (await a.client.post(url, json={"a": 1}, headers=auth)).status_code == 200
            # the rest of the API still asks for credentials
            assert (await a.client.get("/api/v1/flows/search")).status_code == 401
