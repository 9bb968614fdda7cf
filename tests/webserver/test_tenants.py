"""Tenant paths (``/api/v1/{tenant}/...``), the OpenAPI document of both forms, and
the all-or-nothing rule of the bulk actions, through httpx on the real app."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from starlette.routing import Route

from services.webserver import ui as web_ui
from services.webserver.openapi import openapi_document
from tests.webserver.helpers import NS, RETURN, YAML, api, flow

pytestmark = pytest.mark.asyncio

FAIL = flow(
    "fail",
    "  - id: boom\n    type: io.kestra.plugin.core.execution.Fail\n    errorMessage: no\n",
)


async def test_every_route_and_the_document_agree_in_both_forms(tmp_path: Path) -> None:
    # The UI's pages are served beside the API, not part of it.
    pages = {route.path for route in web_ui.routes if isinstance(route, Route)}
    async with api(tmp_path, components=()) as a:
        routes = {
            (method.lower(), route.path)
            for route in a.app.routes
            if isinstance(route, Route) and route.path not in pages
            for method in route.methods or ()
            if method != "HEAD"
        }
    documented = {
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert documented == routes
    tenanted = {p for _, p in routes if p.startswith("/api/v1/{tenant}/")}
    untenanted = {
        p for _, p in routes if p.startswith("/api/v1/") and not p.startswith("/api/v1/{tenant}/")
    }
    assert {p.replace("{tenant}/", "", 1) for p in tenanted} == untenanted - {
        "/api/v1/openapi.json"
    }


async def test_a_tenant_path_serves_what_the_old_one_does(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        created = await a.client.post("/api/v1/main/flows", content=RETURN_FLOW, headers=YAML)
        assert created.status_code == 200, created.text
        assert created.json()["tenantId"] == "main"
        old = (await a.client.get(f"/api/v1/flows/{NS}/hello")).json()
        new = (await a.client.get(f"/api/v1/main/flows/{NS}/hello")).json()
        assert old == new
        started = await a.client.post(f"/api/v1/main/executions/{NS}/hello", params={"wait": True})
        assert started.status_code == 200
        execution = started.json()
        assert execution["state"]["current"] == "SUCCESS"
        assert execution["state"]["duration"].startswith("PT")
        assert execution["state"]["endDate"] == execution["state"]["histories"][-1]["date"]
        same = (await a.client.get(f"/api/v1/executions/{execution['id']}")).json()
        assert {k: v for k, v in same.items() if k != "state"} == {
            k: v for k, v in execution.items() if k != "state"
        }


RETURN_FLOW = flow("hello", RETURN)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/acme/flows/search"),
        ("POST", f"/api/v1/acme/executions/{NS}/hello"),
        ("GET", "/api/v1/acme/executions/some-id"),
        ("PUT", f"/api/v1/acme/namespaces/{NS}/kv/k"),
        ("GET", f"/api/v1/acme/executions/webhook/{NS}/hello/key"),
    ],
)
async def test_an_unknown_tenant_is_a_404_naming_it_and_changes_nothing(
    tmp_path: Path, method: str, path: str
) -> None:
    async with api(tmp_path, components=()) as a:
        response = await a.client.request(method, path, content="1")
        assert response.status_code == 404
        message = response.json()["message"]
        assert message.startswith("tenant 'acme' not found")
        assert "main" in message
        assert await a.backend.kv.list(NS) == []


async def test_a_bulk_action_by_ids_is_all_or_nothing(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        await a.deploy(FAIL)
        await a.deploy(RETURN_FLOW)
        failed = await a.execute("fail", params={"wait": True})
        fine = await a.execute("hello", params={"wait": True})
        response = await a.client.post(
            "/api/v1/main/executions/restart/by-ids", json=[failed["id"], fine["id"]]
        )
        assert response.status_code == 400
        body = response.json()
        assert "nothing was done" in body["message"]
        assert body["errors"] == [
            {
                "execution": fine["id"],
                "message": f"execution {fine['id']} has no failed task run to restart",
            }
        ]
        again = (await a.client.get(f"/api/v1/executions/{failed['id']}")).json()
        assert again["metadata"]["attemptNumber"] == 1
        assert again["state"] == failed["state"]
        done = await a.client.post("/api/v1/main/executions/restart/by-ids", json=[failed["id"]])
        assert done.json() == {"count": 1}
        bad_filter = await a.client.delete(
            "/api/v1/main/executions/kill/by-query", params={"filters[color][EQUALS]": "red"}
        )
        assert bad_filter.status_code == 400
        assert "no filter on `color`" in bad_filter.json()["message"]


async def test_an_import_refuses_what_is_no_archive_of_flows(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        url = "/api/v1/main/flows/import"
        not_zip = await a.client.post(url, files={"fileUpload": ("f.zip", b"not a zip")})
        assert not_zip.status_code == 422
        assert "not a zip archive" in not_zip.json()["message"]
        other = await a.client.post(url, files={"fileUpload": ("f.txt", b"x")})
        assert other.status_code == 422
        missing = await a.client.post(url, files={"other": ("f.yml", b"x")})
        assert missing.status_code == 400
        assert "fileUpload" in missing.json()["message"]
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("a.yml", RETURN_FLOW)
            zipped.writestr("notes.txt", "ignored")
        imported = await a.client.post(url, files={"fileUpload": ("f.zip", archive.getvalue())})
        assert imported.json() == []
        assert (await a.client.get(f"/api/v1/flows/{NS}/hello")).status_code == 200


async def test_the_document_describes_the_tenant_parameter() -> None:
    paths = openapi_document()["paths"]
    operation = paths["/api/v1/{tenant}/flows/search"]["get"]
    tenant = operation["parameters"][0]
    assert (tenant["name"], tenant["in"], tenant["required"]) == ("tenant", "path", True)
    assert "404" in operation["responses"]
    assert all(re.match(r"^(/health|/metrics$|/api/v1/)", p) for p in paths)
