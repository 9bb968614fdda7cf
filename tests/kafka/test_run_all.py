"""`runtime run --all` on Kafka, in its own process: started before its broker, it
says so and retries; once the broker is up the API runs a flow to SUCCESS, and
again after a graceful restart of the broker under it (noida-db, which keeps its
data over a SIGTERM restart; Tansu has no transactions)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from backends.kafka.testing import NOIDA_DB, BrokerProcess, free_port

pytestmark = pytest.mark.slow

FLOW = """
id: hello
namespace: kafka.run
tasks:
  - id: say
    type: io.kestra.plugin.core.log.Log
    message: hello from Kafka
  - id: give
    type: io.kestra.plugin.core.debug.Return
    format: "{{ 20 + 22 }}"
"""


def _until(check: Callable[[], bool], within: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


@pytest.fixture
def stopped_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(NOIDA_DB, data_dir=tmp_path / "noida-db")
    broker.data_dir.mkdir()
    try:
        yield broker
    finally:
        broker.stop()


def test_run_all_waits_for_the_broker_runs_flows_and_survives_its_restart(
    tmp_path: Path, stopped_broker: BrokerProcess
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.yml").write_text(FLOW)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env.update(
        RUNTIME_BACKEND_TYPE="kafka",
        RUNTIME_BACKEND_BOOTSTRAP_SERVERS=stopped_broker.bootstrap_servers,
        RUNTIME_BACKEND_PARTITIONS="2",
        RUNTIME_DATA_DIR=str(tmp_path / "data"),
        RUNTIME_WEBSERVER_PORT=str(port),
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "--all", "--flows", str(flows)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=60)
    try:
        _until(lambda: b"backend.unreachable" in log.read_bytes(), 30, "the wait is said", log)
        assert b"no broker answers" in log.read_bytes()
        stopped_broker.start()

        def runs_to_success() -> None:
            created = api.post("/executions/kafka.run/hello")
            assert created.status_code == 200, created.text
            execution_id = created.json()["id"]

            def ended() -> bool:
                got = api.get(f"/executions/{execution_id}")
                return got.status_code == 200 and got.json()["state"]["current"] == "SUCCESS"

            try:
                _until(ended, 60, f"execution {execution_id} ends SUCCESS", log)
            except AssertionError as exc:
                got = api.get(f"/executions/{execution_id}").text
                raise AssertionError(f"{got[:1500]}\n{exc}") from None
            lines = api.get(f"/logs/{execution_id}").json()
            assert "hello from Kafka" in [line["message"] for line in lines]

        def health() -> bool:
            try:
                return api.get("/../../health").status_code == 200
            except httpx.TransportError:
                return False

        _until(health, 60, "the server is up once the broker is", log)
        runs_to_success()
        stopped_broker.restart()
        runs_to_success()
        assert server.poll() is None, log.read_text()[-4000:]
        # the reconnect errors of the outage do not flood the log
        assert log.read_text().count("Unable connect to") < 200
    finally:
        api.close()
        server.terminate()
        try:
            assert server.wait(timeout=30) == 0, log.read_text()[-4000:]
        finally:
            if server.poll() is None:
                server.kill()
