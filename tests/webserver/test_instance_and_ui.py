"""GET /api/v1/instance (the instance page's endpoint) and the UI's static files."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from runtime.messages import WORKER_QUEUE
from services.webserver.ui import STATIC
from tests.webserver.helpers import NS, api

SLOW = f"""id: slow
namespace: {NS}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT30S
"""


@pytest.mark.asyncio
async def test_instance_lists_live_components_and_queue_depths(tmp_path: Path) -> None:
    async with api(tmp_path, components=("worker", "scheduler")) as a:
        # each component heartbeats once started: the first beat may take a moment
        for _ in range(100):
            body = (await a.client.get("/api/v1/instance")).json()
            kinds = {s["kind"] for s in body["services"]}
            if {"worker", "scheduler"} <= kinds:
                break
            await asyncio.sleep(0.05)
        assert {"worker", "scheduler", "webserver"} <= kinds
        worker = next(s for s in body["services"] if s["kind"] == "worker")
        assert worker["state"] == "RUNNING"
        assert worker["secondsSinceHeartbeat"] >= 0
        assert {q["name"]: q["depth"] for q in body["queues"]} == {"executor": 0, "worker": 0}
        # with no executor running, a started execution waits in the executor's queue
        await a.deploy(SLOW)
        await a.execute("slow")
        body = (await a.client.get("/api/v1/instance")).json()
        depths = {q["name"]: q["depth"] for q in body["queues"]}
        assert depths["executor"] == 1
        assert depths[WORKER_QUEUE] == 0


@pytest.mark.asyncio
async def test_instance_lists_executors(tmp_path: Path) -> None:
    async with api(tmp_path) as a:
        for _ in range(60):
            body = (await a.client.get("/api/v1/instance")).json()
            if "executor" in {s["kind"] for s in body["services"]}:
                break
            await asyncio.sleep(0.05)
        assert "executor" in {s["kind"] for s in body["services"]}


@pytest.mark.asyncio
async def test_ui_is_served_with_pages_falling_back_to_the_app(tmp_path: Path) -> None:
    async with api(tmp_path, components=()) as a:
        home = await a.client.get("/")
        assert home.status_code == 302
        assert home.headers["location"].endswith("/ui/")
        index = await a.client.get("/ui/")
        assert index.status_code == 200
        assert "importmap" in index.text
        # a page of the app, dots in its path included, is the app itself
        page = await a.client.get("/ui/namespaces/company.team")
        assert page.status_code == 200
        assert page.text == index.text
        module = await a.client.get("/ui/js/app.js")
        assert module.headers["content-type"].startswith("text/javascript")
        assert (await a.client.get("/ui/js/missing.js")).status_code == 404
        # nothing outside the static folder is served
        escaped = await a.client.get("/ui/%2e%2e/__init__.py")
        assert escaped.status_code == 404
        assert "__future__" not in escaped.text


def test_every_vendored_library_has_its_licence() -> None:
    vendor = STATIC / "vendor"
    scripts = [p for p in vendor.rglob("*.js") if p.is_file()]
    assert scripts
    for script in scripts:
        folder = script.parent
        assert any(folder.glob("LICENSE*")), f"{folder} has no licence file"


def test_import_map_names_every_bare_import() -> None:
    """A module importing a package the import map does not name fails in the browser
    only; this finds it without one."""
    index = (STATIC / "index.html").read_text()
    mapping = json.loads(re.search(r'<script type="importmap">(.*?)</script>', index, re.S)[1])
    imports = mapping["imports"]
    for target in imports.values():
        assert (STATIC / target.removeprefix("/ui/")).is_file(), target
    bare = re.compile(
        r"""^\s*(?:import|export)\b[^'"]*?from\s*['"]([^'"./][^'"]*)['"]"""
        r"""|import\(\s*['"]([^'"./][^'"]*)['"]\s*\)""",
        re.M,
    )
    for script in (p for p in STATIC.rglob("*.js") if p.is_file()):
        if script.name.endswith(".min.js"):
            continue
        for static, dynamic in bare.findall(script.read_text()):
            name = static or dynamic
            assert name in imports, f"{script.relative_to(STATIC)} imports {name!r}, not in the map"
