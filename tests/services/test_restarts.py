"""Supervised restarts, as a user of `runtime run --all` meets them: a component whose
side task dies is restarted as a fresh instance while the process's other components
go on serving API calls and executions; past the restart intensity the process exits
non-zero with one clear log line.

Faults are injected by making one call of a component's side task raise (the way a
bug or an unexpected driver error would); everything else is the real server on the
memory backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.memory import MemoryBackend
from backends.storage_local import LocalStorage
from runtime.config import Config, WebserverConfig
from services.executor import Executor
from services.flows import deploy_source
from services.liveness import Liveness
from services.scheduler import Scheduler
from services.standalone import ALL_COMPONENTS, Server
from services.webserver import server as webserver_module
from services.worker import Worker
from services.worker import worker as worker_module
from tests.services.server_helpers import NS, S, ended, returns, settings, shell, start, until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

PYTHON_CALL = f"""
id: square
namespace: {NS}
tasks:
  - id: fn
    type: io.kestra.plugin.runtime.PythonFunction
    function: tests.unit.task_functions:square
    args: [12]
"""


class Fault:
    """Makes the next call of ``cls.name`` (a class's method or a module's function)
    raise, once, after :meth:`arm`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: Any, name: str) -> None:
        self.armed = False
        self.fired = 0
        original: Callable[..., Awaitable[Any]] = getattr(cls, name)
        fault = self

        async def failing(*args: Any, **kwargs: Any) -> Any:
            if fault.armed:
                fault.armed = False
                fault.fired += 1
                raise RuntimeError(f"injected fault in {cls.__name__}.{name}")
            return await original(*args, **kwargs)

        monkeypatch.setattr(cls, name, failing)

    def arm(self) -> None:
        self.armed = True


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[Server, httpx.AsyncClient]]:
    base = settings()
    config = Config(
        executor=base.executor,
        worker=base.worker,
        scheduler=base.scheduler,
        liveness=base.liveness,
        webserver=WebserverConfig(port=0, poll_seconds=0.05, shutdown_seconds=1.0),
    )
    backend = MemoryBackend()
    server = Server(
        config,
        components=ALL_COMPONENTS,
        backend=backend,
        storage=LocalStorage(tmp_path / "storage"),
        watch=False,
    )
    for source in (returns("quick"), shell("slow", ["sleep 1", "echo done"]), PYTHON_CALL):
        await deploy_source(backend.flows, source)
    async with server:
        assert server.webserver is not None
        url = f"http://127.0.0.1:{server.webserver.port}"
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield server, client


def restarts(server: Server) -> int:
    assert server.system is not None
    return server.system.supervisor.restarts


def children(server: Server) -> dict[str, str]:
    assert server.system is not None
    return {name: state.value for name, state in server.system.supervisor.children()}


async def api_serves(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/flows/{NS}/quick")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "quick"


CASES = [
    # (component, the server attribute holding its instance, class, method to fail)
    ("worker", "worker", Worker, "_heartbeat"),
    ("worker", "worker", Worker, "_kill_requested"),
    ("worker", "worker", Worker, "_final_flush"),
    ("worker", "worker", worker_module, "write_reports"),
    ("executor", "executor", Executor, "step"),
    ("scheduler", "scheduler", Scheduler, "_heartbeat"),
    ("liveness", "liveness", Liveness, "check"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("component", "attribute", "cls", "method"),
    CASES,
    ids=[f"{c}.{m}" for c, _, _, m in CASES],
)
async def test_a_dying_side_task_restarts_a_fresh_component_while_the_rest_serves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    component: str,
    attribute: str,
    cls: Any,
    method: str,
) -> None:
    fault = Fault(monkeypatch, cls, method)
    async with serving(tmp_path) as (server, client):
        backend = server.backend
        before = getattr(server, attribute)
        assert before is not None
        in_flight = await start(backend, "slow")
        # the slow task is on a worker when the fault strikes
        await until(
            lambda: _task_started(server, in_flight), 5, f"{in_flight}'s shell task started"
        )
        fault.arm()
        if method == "write_reports":
            await start(backend, "quick")  # something to report
        await until(lambda: _async(fault.fired == 1), 5, f"{cls.__name__}.{method} failed")
        await until(lambda: _async(restarts(server) >= 1), 5, f"{component} restarted")

        # the others went on: API calls and a new execution while it came back
        await api_serves(client)
        quick = await start(backend, "quick")
        assert (await ended(backend, quick)).state.current is S.SUCCESS

        after = getattr(server, attribute)
        assert after is not None
        assert after is not before, "a restart builds a fresh instance"
        assert children(server)[component] == "running"
        assert restarts(server) == 1, "only the failed component was restarted"
        if component == "scheduler":
            # the same replica: it keeps the leader lease rather than wait out its TTL
            assert after.id == before.id
            await until(lambda: _leads(server), 5, "the restarted scheduler leads")
        if component == "worker":
            assert after.pool is not before.pool
            assert after.id != before.id
            # the fresh pool runs (a spent one would refuse: "a pool runs once")
            square = await start(backend, "square")
            done = await ended(backend, square, within=30.0)
            assert done.state.current is S.SUCCESS, done.state.current
            assert done.runs_of("fn")[0].outputs == {"value": 144}

        # the execution in flight when the fault struck still ends, and correctly
        finished = await ended(backend, in_flight, within=15.0)
        assert finished.state.current is S.SUCCESS
        logs = [entry.message for entry in await backend.logs.query(in_flight, limit=100)]
        assert "done" in logs


@pytest.mark.asyncio
async def test_a_failed_webserver_is_restarted_on_its_port_while_executions_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn's serving loop fails as soon as the first instance listens
    fault = Fault(monkeypatch, webserver_module._Uvicorn, "main_loop")
    fault.arm()
    async with serving(tmp_path) as (server, client):
        backend = server.backend
        in_flight = await start(backend, "slow")
        await until(lambda: _async(fault.fired == 1), 5, "the webserver's loop failed")
        await until(lambda: _async(restarts(server) >= 1), 5, "webserver restarted")
        quick = await start(backend, "quick")
        assert (await ended(backend, quick)).state.current is S.SUCCESS
        await until(lambda: _serves(client), 5, "the API served again on the same port")
        assert restarts(server) == 1
        assert children(server)["webserver"] == "running"
        response = await client.get(f"/api/v1/executions/{quick}")
        assert response.json()["state"]["current"] == "SUCCESS"
        assert (await ended(backend, in_flight, within=15.0)).state.current is S.SUCCESS


@pytest.mark.asyncio
async def test_a_failed_flow_deployer_is_restarted_and_redeploys_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployer's watch dies on an error it does not expect; its restart deploys
    the folder again, the file that failed included, while executions go on."""
    from services import standalone

    fault = Fault(monkeypatch, standalone, "deploy_file")
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "quick.yml").write_text(returns("quick"))
    backend = MemoryBackend()
    server = Server(
        settings(),
        components=("executor", "worker"),
        flows_dir=folder,
        backend=backend,
        storage=LocalStorage(tmp_path / "storage"),
        watch=True,
    )
    async with server:
        assert await backend.flows.get(NS, "quick") is not None
        fault.arm()
        (folder / "later.yml").write_text(returns("later"))
        await until(lambda: _async(fault.fired == 1), 10, "deploying later.yml failed")
        await until(lambda: _async(restarts(server) >= 1), 5, "the deployer restarted")
        quick = await start(backend, "quick")  # the others went on meanwhile
        assert (await ended(backend, quick)).state.current is S.SUCCESS
        await until(lambda: _deployed(backend, "later"), 10, "the restart deployed later.yml")
        assert restarts(server) == 1
        assert children(server)["deployer"] == "running"


async def _deployed(backend: MemoryBackend, flow_id: str) -> bool:
    return await backend.flows.get(NS, flow_id) is not None


async def _serves(client: httpx.AsyncClient) -> bool:
    try:
        await api_serves(client)
    except (httpx.TransportError, AssertionError):
        return False
    return True


async def _task_started(server: Server, execution_id: str) -> bool:
    worker = server.worker
    return worker is not None and bool(worker.running)


async def _leads(server: Server) -> bool:
    scheduler = server.scheduler
    assert scheduler is not None
    return await server.backend.leader.acquire("scheduler", scheduler.id, 10.0)


async def _async(value: bool) -> bool:
    return value


ESCALATING = """
import sys
from services import cli
from services.worker import Worker

original = Worker._heartbeat
seen = set()

async def heartbeat(self, state):
    # the first heartbeat of each instance passes (so it starts), the next ones fail
    if self.id in seen:
        raise RuntimeError("injected: the heartbeat of " + self.id + " always fails")
    seen.add(self.id)
    await original(self, state)

Worker._heartbeat = heartbeat
cli.cli(["run", "executor", "worker", "--config", sys.argv[1]])
"""


def test_past_the_restart_intensity_the_process_exits_non_zero_with_one_clear_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "runtime.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            backend: {{type: memory}}
            storage: {{path: {tmp_path / "storage"}}}
            worker: {{heartbeat_seconds: 0.05}}
            """
        )
    )
    script = tmp_path / "escalating.py"
    script.write_text(ESCALATING)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    escalations = [line for line in output.splitlines() if "supervisor.escalating" in line]
    assert len(escalations) == 1, output
    line = json.loads(escalations[0])
    assert line["child"] == "worker", line
    assert line["level"] == "error", line
    assert "always fails" in line["error"], line
    assert "system.failed" not in output
    assert "Traceback" not in output.split("supervisor.escalating")[-1]


def test_executor_listeners_survive_its_restart(tmp_path: Path) -> None:
    """`flow test` observes executions through the server: a restarted executor keeps
    telling it."""
    server = Server(settings(), backend=MemoryBackend(), storage=LocalStorage(tmp_path))
    seen: list[str] = []
    server.listeners.append(lambda execution: seen.append(execution.id))
    first, second = server._new_executor(), server._new_executor()
    assert first is not second
    assert first.listeners is second.listeners is server.listeners


def test_liveness_reads_the_server_s_own_ids_as_they_change(tmp_path: Path) -> None:
    server = Server(settings(), backend=MemoryBackend(), storage=LocalStorage(tmp_path))
    liveness = server._new_liveness()
    worker = server._new_worker()
    assert worker.id in liveness.own_ids
