"""GET /metrics: every family documented in the README present and moving after a run,
under basic authentication when users are configured, and the metrics listener of a
process without a webserver."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.protocols import ServiceInstance
from backends.sqlite import SqliteBackend
from backends.storage_local import LocalStorage
from runtime.config import MetricsConfig, WebserverConfig, WebserverUser
from services.standalone import Server
from tests.services.server_helpers import settings
from tests.webserver.helpers import NS, api, flow, until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TWO_TASKS = flow(
    "two",
    "  - id: hello\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n"
    "  - id: answer\n    type: io.kestra.plugin.core.debug.Return\n    format: '42'\n",
)
TICKING = flow(
    "ticking",
    "  - id: hello\n    type: io.kestra.plugin.core.log.Log\n    message: tick\n",
    "triggers:\n  - id: every\n    type: io.kestra.plugin.core.trigger.Schedule\n"
    "    cron: '* * * * * *'\n    withSeconds: true\n",
)
USERS = (WebserverUser(username="admin", password="s3cret"),)


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient, **kwargs: object) -> Samples:
    response = await client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_every_family_moves_after_a_run(tmp_path: Path) -> None:
    async with api(tmp_path, components=("executor", "worker", "scheduler")) as a:
        before = await scrape(a.client)
        await a.deploy(TWO_TASKS)
        done = await a.ended((await a.execute("two"))["id"])
        assert done["state"]["current"] == "SUCCESS"
        # a schedule due every second fires (scheduler lag)
        await a.deploy(TICKING)

        async def ticked() -> bool:
            now = await scrape(a.client)
            return value(now, "runtime_scheduler_lag_seconds_count") > value(
                before, "runtime_scheduler_lag_seconds_count"
            )

        await until(ticked, 10.0, "a scheduled execution")
        # a worker that stopped heartbeating long ago is declared dead by liveness
        old = a.backend.clock() - timedelta(hours=1)
        await a.backend.services.heartbeat(
            ServiceInstance(
                id="worker-gone",
                kind="worker",
                state="RUNNING",
                host="elsewhere",
                pid=1,
                started=old,
                heartbeat=old,
                info={},
            )
        )

        async def declared_dead() -> bool:
            now = await scrape(a.client)
            return value(now, "runtime_liveness_events_total", event="instance_dead") > value(
                before, "runtime_liveness_events_total", event="instance_dead"
            )

        await until(declared_dead, 10.0, "liveness declaring the silent worker dead")
        assert (await a.client.get("/no/such/thing-42")).status_code == 404
        templates = {getattr(route, "path", "") for route in a.app.routes}
        after = await scrape(a.client)

    flow_labels = {"namespace": NS, "flow": "two"}
    moved = {
        "created": ("runtime_executions_created_total", flow_labels),
        "ended": ("runtime_executions_ended_total", {**flow_labels, "state": "SUCCESS"}),
        "log task": (
            "runtime_task_run_duration_seconds_count",
            {"task_type": "io.kestra.plugin.core.log.Log", "state": "SUCCESS"},
        ),
        "return task": (
            "runtime_task_run_duration_seconds_count",
            {"task_type": "io.kestra.plugin.core.debug.Return", "state": "SUCCESS"},
        ),
        "batch size": ("runtime_executor_batch_size_count", {}),
        "pass latency": ("runtime_executor_pass_seconds_count", {}),
        "http": (
            "runtime_http_request_duration_seconds_count",
            {"method": "GET", "route": "/api/v1/executions/{executionId}", "status": "200"},
        ),
    }
    for what, (name, labels) in moved.items():
        assert value(after, name, **labels) > value(before, name, **labels), what
    # no raw path, no id, is ever a label
    routes = {dict(ls).get("route") for (n, ls) in after if n.startswith("runtime_http")}
    assert routes <= templates | {"unmatched"}, routes - templates
    assert "unmatched" in routes
    assert not any(done["id"] in str(key) for key in after)
    # the gauges read on scrape: every queue and both slot states present
    for queue in ("executor", "worker"):
        assert ("runtime_queue_depth", frozenset({("queue", queue)})) in after
        assert ("runtime_queue_oldest_message_age_seconds", frozenset({("queue", queue)})) in after
    assert value(after, "runtime_worker_slots", state="busy") >= 0
    assert value(after, "runtime_worker_slots", state="free") >= 1
    assert value(after, "runtime_liveness_events_total", event="jobs_requeued") >= 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.asyncio
async def test_queue_gauges_show_a_waiting_message(tmp_path: Path, kind: str) -> None:
    # no executor: the execution's first event waits in its queue, and ages
    async with api(tmp_path, kind=kind, components=()) as a:
        await a.deploy(TWO_TASKS)
        await a.execute("two")
        first = await scrape(a.client)
        assert value(first, "runtime_queue_depth", queue="executor") == 1
        assert value(first, "runtime_queue_depth", queue="worker") == 0
        assert value(first, "runtime_queue_oldest_message_age_seconds", queue="worker") == 0
        await asyncio.sleep(0.3)
        later = await scrape(a.client)
        age = value(later, "runtime_queue_oldest_message_age_seconds", queue="executor")
        assert age >= 0.3
        assert age > value(first, "runtime_queue_oldest_message_age_seconds", queue="executor")


@pytest.mark.asyncio
async def test_metrics_require_credentials_when_users_are_configured(tmp_path: Path) -> None:
    web = WebserverConfig(users=USERS, poll_seconds=0.02)
    async with api(tmp_path, web=web, components=()) as a:
        refused = await a.client.get("/metrics")
        assert refused.status_code == 401
        assert "www-authenticate" in refused.headers
        allowed = await a.client.get("/metrics", auth=("admin", "s3cret"))
        assert allowed.status_code == 200
        # a family with labels and no series yet has no sample, but is declared
        assert "# TYPE runtime_executions_created_total counter" in allowed.text
        assert "# TYPE runtime_task_run_duration_seconds histogram" in allowed.text
        wrong = await a.client.get("/metrics", auth=("admin", "nope"))
        assert wrong.status_code == 401


@pytest.mark.asyncio
async def test_the_metrics_listener_serves_a_process_without_webserver(tmp_path: Path) -> None:
    config = msgspec.structs.replace(
        settings(),
        metrics=MetricsConfig(port=0),
        webserver=WebserverConfig(users=USERS),
    )
    server = Server(
        config,
        components=("worker",),
        backend=SqliteBackend(tmp_path / "runtime.db", synchronous="NORMAL"),
        storage=LocalStorage(tmp_path / "storage"),
        watch=False,
    )
    async with server:
        listener = server.metrics_listener
        assert listener is not None
        assert listener.port
        url = f"http://127.0.0.1:{listener.port}"
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/metrics")).status_code == 401
            found = await scrape(client, auth=("admin", "s3cret"))
            # this process's worker: its 8 slots free
            assert value(found, "runtime_worker_slots", state="free") >= 8
            assert ("runtime_queue_depth", frozenset({("queue", "worker")})) in found
            assert (await client.get("/api/v1/flows/search")).status_code in (401, 404)
            authed = await client.get("/api/v1/flows/search", auth=("admin", "s3cret"))
            assert authed.status_code == 404  # metrics only, no API here
            # the probes of a pod without a webserver, public as the webserver's
            assert (await client.get("/health")).json() == {"status": "UP"}
            assert (await client.get("/health/ready")).json() == {"status": "UP"}
            await server.backend.stop()
            down = await client.get("/health/ready")
            assert down.status_code == 503
            assert down.json()["status"] == "DOWN"


def test_the_grafana_dashboard_reads_only_families_that_exist() -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    import services.metrics  # noqa: F401  (registers the families)

    dashboard = json.loads(
        (Path(__file__).parents[2] / "config" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:runtime|process)_[a-z_]+)", e)}
    known = {sample.name for family in REGISTRY.collect() for sample in family.samples} | {
        name for family in REGISTRY.collect() for name in (family.name, f"{family.name}_total")
    }
    # histograms' series exist once observed: their declared suffixes count too
    known |= {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        if family.type == "histogram"
        for suffix in ("_bucket", "_count", "_sum")
    }
    assert used, "the dashboard queries nothing"
    assert used <= known, used - known
    documented = (Path(__file__).parents[2] / "README.md").read_text()
    for name in used - {"process_cpu_seconds_total"}:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{base}`" in documented, f"{base} is not in the README's metrics table"
