"""The poison execution of issue 13, end to end: a job that takes its server down
(kill -9 while it runs) twice is failed at the next start instead of running a
third time, and the restarted server goes on serving."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from runtime.config import load_config
from runtime.flow.states import StateType
from services.client import LocalClient
from services.flows import deploy_file
from tests.faults.test_crash_safety import log_tail, server_process, until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

NAMESPACE = "hostile"


def flows(folder: Path, marks: Path) -> None:
    folder.mkdir()
    (folder / "deadly.yml").write_text(
        f"""id: deadly
namespace: {NAMESPACE}
tasks:
  - id: hang
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - echo "$PPID" >> {marks}
      - sleep 20
"""
    )
    (folder / "innocent.yml").write_text(
        f"""id: innocent
namespace: {NAMESPACE}
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ execution.id }}}}"
"""
    )


def marks_in(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


async def test_a_job_that_kills_its_server_twice_is_failed_not_requeued(tmp_path: Path) -> None:
    data, folder, marks = tmp_path / "data", tmp_path / "flows", tmp_path / "marks.txt"
    flows(folder, marks)
    log_path = tmp_path / "server.log"
    config = load_config(None, {"RUNTIME_DATA_DIR": str(data)})
    async with asyncio.timeout(100):
        with log_path.open("wb") as log:
            async with LocalClient(config) as client:
                await deploy_file(client.backend.flows, folder / "deadly.yml")
                await deploy_file(client.backend.flows, folder / "innocent.yml")
                deadly = (await client.execute(NAMESPACE, "deadly", {})).id
                for round_ in (1, 2):

                    async def ran(count: int = round_) -> bool:
                        return marks_in(marks) >= count

                    with server_process(folder, data, log) as server:
                        await until(ran, 30, f"the job's run number {round_}", log_path)
                        server.send_signal(signal.SIGKILL)
                        await asyncio.to_thread(server.wait, 10)

                async def ended() -> bool:
                    return (await client.get(deadly)).state.terminated

                with server_process(folder, data, log) as server:
                    await until(ended, 30, "the poison execution ended", log_path)
                    done = await client.get(deadly)
                    innocent = (await client.execute(NAMESPACE, "innocent", {})).id

                    async def served() -> bool:
                        return (await client.get(innocent)).state.terminated

                    await until(served, 30, "an execution after the poison one", log_path)
                    assert server.poll() is None, log_tail(log_path)
                    after = await client.get(innocent)
                    logs = await client.backend.logs.query(deadly)
    assert done.state.current is StateType.FAILED, log_tail(log_path)
    assert marks_in(marks) == 2, "the job ran a third time"
    assert any("handed back 2 times" in entry.message for entry in logs), logs
    assert after.state.current is StateType.SUCCESS
