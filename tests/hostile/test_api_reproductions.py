"""Issue 13's reproductions through the API, on SQLite and PostgreSQL.

Each hostile flow is deployed and run through the real app, executor and worker
in one process (one event loop, as ``runtime run --all``). Meanwhile a prober
asks ``/health`` every 20 ms and an innocent flow runs: the hostile request or
execution answers within its budget plus a margin, ``/health`` never takes 100 ms,
the innocent executions all end SUCCESS, and the process's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from backends.storage_local import LocalStorage
from runtime.config import TemplateConfig, WebserverConfig
from runtime.flow import budget
from services.standalone import Server
from services.webserver import create_app
from tests.hostile.conftest import heap_frozen
from tests.services.server_helpers import settings
from tests.webserver.helpers import NS, TERMINAL, YAML, make_backend, until

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

BUDGET_S = 0.5
MEMORY = 32 * 1024 * 1024
#: a budget, a jq child's start and a shared 2-core machine
MARGIN_S = 3.0
HEALTH_BOUND_S = 0.1
#: growth of the test process's peak resident memory over a whole test
MEMORY_BOUND_KB = 400 * 1024

ENDLESS_JQ = "{{ '{}' | jq('def f: f; f') }}"
CATASTROPHIC = "{{ inputs.s | replace({'^(a|aa)+$': 'x'}, regexp=true) }}"
RANGES = "{% set a = range(1, 900000) %}{% set b = range(1, 900000) %}{{ a | length }}"

INNOCENT = f"""id: innocent
namespace: {NS}
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ 'hello ' ~ execution.id | upper }}}}"
"""


def log_flow(flow_id: str, message: str, extra: str = "", task_extra: str = "") -> str:
    return (
        f"id: {flow_id}\nnamespace: {NS}\n{extra}tasks:\n"
        f"  - id: say\n    type: io.kestra.plugin.core.log.Log\n"
        f"    message: {msgspec.json.encode(message).decode()}\n{task_extra}"
    )


@dataclass
class Hostile:
    client: httpx.AsyncClient
    health_worst: float = 0.0
    health_calls: int = 0
    innocent_ids: list[str] = field(default_factory=list)

    async def deploy(self, source: str) -> httpx.Response:
        return await self.client.post("/api/v1/flows", content=source, headers=YAML)

    async def execute(self, flow_id: str, **kwargs: Any) -> str:
        response = await self.client.post(f"/api/v1/executions/{NS}/{flow_id}", **kwargs)
        assert response.status_code == 200, response.text
        execution_id: str = response.json()["id"]
        return execution_id

    async def ended(self, execution_id: str, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            body: dict[str, Any] = (
                await self.client.get(f"/api/v1/executions/{execution_id}")
            ).json()
            if body["state"]["current"] in TERMINAL:
                return body
            assert time.monotonic() < deadline, f"{execution_id} still {body['state']}"
            await asyncio.sleep(0.02)

    async def logs(self, execution_id: str) -> str:
        entries = (await self.client.get(f"/api/v1/logs/{execution_id}")).json()
        return "\n".join(entry["message"] for entry in entries)

    async def probe_health(self) -> None:
        while True:
            began = time.perf_counter()
            response = await self.client.get("/health")
            took = time.perf_counter() - began
            assert response.status_code == 200
            self.health_worst = max(self.health_worst, took)
            self.health_calls += 1
            await asyncio.sleep(0.02)

    async def run_innocents(self) -> None:
        while True:
            self.innocent_ids.append(await self.execute("innocent"))
            await asyncio.sleep(0.1)


def _peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@asynccontextmanager
async def hostile_server(tmp_path: Path, kind: str) -> AsyncIterator[Hostile]:
    before_limits = budget.limits()
    peak_before = _peak_rss_kb()
    config = msgspec.structs.replace(
        settings(), template=TemplateConfig(cpu_seconds=BUDGET_S, memory_bytes=MEMORY)
    )
    async with AsyncExitStack() as stack:
        stack.callback(budget.configure, before_limits)
        stack.enter_context(heap_frozen())
        schema = None
        if kind == "postgres":
            from backends.postgres.testing import fresh_schema

            schema = await stack.enter_async_context(fresh_schema("runtime_hostile"))
        server = Server(
            config,
            components=("executor", "worker"),
            backend=make_backend(kind, tmp_path, schema),
            storage=LocalStorage(tmp_path / "storage"),
            watch=False,
        )
        await stack.enter_async_context(server)
        app = create_app(
            server.backend, server.storage, WebserverConfig(poll_seconds=0.02), flows=server.flows
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        hostile = Hostile(client)
        assert (await hostile.deploy(INNOCENT)).status_code == 200
        # a first jq call starts a child: not what is measured here
        await budget.evaluate(lambda: None)
        probes = [
            asyncio.create_task(hostile.probe_health(), name="probe-health"),
            asyncio.create_task(hostile.run_innocents(), name="innocents"),
        ]
        try:
            yield hostile

            # the innocents keep coming for a moment after the hostile part
            async def enough() -> bool:
                return len(hostile.innocent_ids) >= 3

            await until(enough, 5.0, "three innocent executions started")
        finally:
            for probe in probes:
                probe.cancel()
            for probe in probes:
                with suppress(asyncio.CancelledError):
                    await probe
        # the prober's assertions raise in its task: a failed probe fails the test here
        assert hostile.health_calls > 0
        assert hostile.health_worst < HEALTH_BOUND_S, f"/health took {hostile.health_worst:.3f}s"
        for execution_id in hostile.innocent_ids[:-1]:  # the last may still be starting
            done = await hostile.ended(execution_id, 10.0)
            assert done["state"]["current"] == "SUCCESS", done
        assert len(hostile.innocent_ids) >= 3
    assert _peak_rss_kb() - peak_before < MEMORY_BOUND_KB


async def expect_failed(hostile: Hostile, execution_id: str, *phrases: str) -> str:
    began = time.monotonic()
    done = await hostile.ended(execution_id, BUDGET_S + MARGIN_S + 5.0)
    took = time.monotonic() - began
    assert done["state"]["current"] == "FAILED", done
    logs = await hostile.logs(execution_id)
    for phrase in phrases:
        assert phrase in logs, logs
    assert took < BUDGET_S + MARGIN_S, f"ended after {took:.2f}s"
    return logs


KINDS = ["sqlite", "postgres"]


@pytest.mark.parametrize("kind", KINDS)
async def test_an_endless_jq_in_a_posted_flow(tmp_path: Path, kind: str) -> None:
    async with hostile_server(tmp_path, kind) as hostile:
        began = time.monotonic()
        response = await hostile.deploy(log_flow("endless", ENDLESS_JQ))
        # validation does not evaluate the constant expression: it answers at once
        assert time.monotonic() - began < 1.0
        assert response.status_code == 200, response.text
        execution_id = await hostile.execute("endless")
        logs = await expect_failed(hostile, execution_id, "Over budget", "CPU-time budget")
        assert "task 'say', property 'message'" in logs


@pytest.mark.parametrize("kind", KINDS)
async def test_an_endless_jq_program_given_as_an_input(tmp_path: Path, kind: str) -> None:
    source = log_flow(
        "prog",
        "{{ inputs.data | jq(inputs.prog) }}",
        "inputs:\n  - id: data\n    type: STRING\n  - id: prog\n    type: STRING\n",
        "    timeout: PT5S\n",
    )
    async with hostile_server(tmp_path, kind) as hostile:
        assert (await hostile.deploy(source)).status_code == 200
        execution_id = await hostile.execute("prog", data={"data": "{}", "prog": "def f: f; f"})
        await expect_failed(hostile, execution_id, "CPU-time budget of 0.5 s")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_catastrophic_regex(tmp_path: Path, kind: str) -> None:
    source = log_flow("regex", CATASTROPHIC, "inputs:\n  - id: s\n    type: STRING\n")
    async with hostile_server(tmp_path, kind) as hostile:
        assert (await hostile.deploy(source)).status_code == 200
        execution_id = await hostile.execute("regex", data={"s": "a" * 40 + "!"})
        await expect_failed(hostile, execution_id, "CPU-time budget")


@pytest.mark.parametrize("kind", KINDS)
async def test_ranges_that_add_up(tmp_path: Path, kind: str) -> None:
    async with hostile_server(tmp_path, kind) as hostile:
        assert (await hostile.deploy(log_flow("ranges", RANGES))).status_code == 200
        execution_id = await hostile.execute("ranges")
        await expect_failed(hostile, execution_id, "memory budget of 32 MiB")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_endless_jq_in_the_executor(tmp_path: Path, kind: str) -> None:
    """Flowable properties and runIf are evaluated by the executor: the task run and
    the execution fail, and the executor goes on with the others."""
    for_each = (
        f"id: each\nnamespace: {NS}\ntasks:\n"
        "  - id: loop\n    type: io.kestra.plugin.core.flow.ForEach\n"
        f"    values: {msgspec.json.encode(ENDLESS_JQ).decode()}\n"
        "    tasks:\n      - id: inner\n        type: io.kestra.plugin.core.debug.Return\n"
        "        format: x\n"
    )
    run_if = (
        f"id: guarded\nnamespace: {NS}\ntasks:\n"
        "  - id: maybe\n    type: io.kestra.plugin.core.debug.Return\n    format: x\n"
        f"    runIf: {msgspec.json.encode(ENDLESS_JQ).decode()}\n"
    )
    async with hostile_server(tmp_path, kind) as hostile:
        assert (await hostile.deploy(for_each)).status_code == 200
        assert (await hostile.deploy(run_if)).status_code == 200
        first = await hostile.execute("each")
        second = await hostile.execute("guarded")
        await expect_failed(hostile, first, "task 'loop'", "CPU-time budget")
        await expect_failed(hostile, second, "runIf of task 'maybe'", "CPU-time budget")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_endless_jq_in_a_webhook_condition(tmp_path: Path, kind: str) -> None:
    source = (
        f"id: hooked\nnamespace: {NS}\ntriggers:\n"
        "  - id: in\n    type: io.kestra.plugin.core.trigger.Webhook\n    key: k3y\n"
        "    conditions:\n      - type: io.kestra.plugin.core.condition.Expression\n"
        f"        expression: {msgspec.json.encode(ENDLESS_JQ).decode()}\n"
        "tasks:\n  - id: t\n    type: io.kestra.plugin.core.debug.Return\n    format: x\n"
    )
    async with hostile_server(tmp_path, kind) as hostile:
        assert (await hostile.deploy(source)).status_code == 200
        began = time.monotonic()
        response = await hostile.client.post(f"/api/v1/executions/webhook/{NS}/hooked/k3y")
        assert time.monotonic() - began < BUDGET_S + MARGIN_S
        assert response.status_code == 422
        assert "CPU-time budget" in response.json()["message"]


async def test_a_task_timeout_covers_the_rendering_of_its_properties(tmp_path: Path) -> None:
    source = log_flow(
        "impatient",
        "{{ inputs.data | jq(inputs.prog) }}",
        "inputs:\n  - id: data\n    type: STRING\n  - id: prog\n    type: STRING\n",
        "    timeout: PT0.2S\n",
    )
    async with hostile_server(tmp_path, "sqlite") as hostile:
        assert (await hostile.deploy(source)).status_code == 200
        execution_id = await hostile.execute(
            "impatient", data={"data": "{}", "prog": "def f: f; f"}
        )
        # the timeout (0.2 s) comes before the budget (0.5 s)
        await expect_failed(hostile, execution_id, "task 'say' timed out after")
