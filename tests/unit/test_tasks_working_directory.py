"""WorkingDirectory: runnable children in one shared folder, outputs passed along."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.flow.model import Parallel
from runtime.tasks.context import TaskFailure
from runtime.tasks.core import Log, WorkingDirectory
from tests.unit.task_context import TaskContext, load_task

pytestmark = pytest.mark.slow


def wdir(body: str) -> Any:
    return load_task(
        "- id: wdir\n  type: io.kestra.plugin.core.flow.WorkingDirectory\n"
        + "\n".join("  " + line for line in body.strip("\n").splitlines())
    )


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(tmp_path, task_id="wdir", variables={"inputs": {"n": 3}})


@pytest.mark.asyncio
async def test_children_share_the_folder_and_see_earlier_outputs(ctx: TaskContext) -> None:
    task = wdir(
        """
inputFiles:
  seed.txt: "{{ inputs.n }}"
outputFiles: ["result.txt"]
tasks:
  - id: write
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - echo $(( $(cat seed.txt) * 2 )) > doubled.txt
      - echo '::{"outputs":{"written":"doubled.txt"}}::'
  - id: read
    type: io.kestra.plugin.scripts.python.Script
    script: |
      from kestra import Kestra
      value = int(open("{{ outputs.write.vars.written }}").read())
      open("result.txt", "w").write(str(value + 1))
      Kestra.outputs({"value": value})
  - id: skipped
    type: io.kestra.plugin.core.log.Log
    message: never
    runIf: "{{ inputs.n > 10 }}"
  - id: off
    type: io.kestra.plugin.core.log.Log
    message: never
    disabled: true
  - id: summary
    type: io.kestra.plugin.core.debug.Return
    format: "{{ task.id }}: {{ outputs.read.vars.value }}"
"""
    )
    out = await task.run(ctx)
    assert out["outputs"]["write"]["vars"] == {"written": "doubled.txt"}
    assert out["outputs"]["read"]["vars"] == {"value": 6}
    assert out["outputs"]["summary"] == {"value": "summary: 6"}
    assert "skipped" not in out["outputs"]
    assert await ctx.storage.get(out["outputFiles"]["result.txt"]) == b"7"
    assert "never" not in ctx.log.messages()


@pytest.mark.asyncio
async def test_a_failing_child_fails_it(ctx: TaskContext) -> None:
    task = wdir(
        """
tasks:
  - id: bad
    type: io.kestra.plugin.scripts.shell.Commands
    commands: ["echo broken >&2", "exit 4"]
  - id: after
    type: io.kestra.plugin.core.log.Log
    message: not reached
"""
    )
    with pytest.raises(
        TaskFailure, match="child task 'bad' failed: Command failed with exit code 4"
    ):
        await task.run(ctx)
    assert "not reached" not in ctx.log.messages()


@pytest.mark.asyncio
async def test_allow_failure_child_warns_and_continues(ctx: TaskContext) -> None:
    task = wdir(
        """
tasks:
  - id: bad
    type: io.kestra.plugin.core.execution.Fail
    allowFailure: true
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: reached
"""
    )
    out = await task.run(ctx)
    assert out == {
        "outputs": {"after": {"value": "reached"}},
        "children": [
            {"taskId": "bad", "state": "WARNING"},
            {"taskId": "after", "state": "SUCCESS", "outputs": {"value": "reached"}},
        ],
    }
    assert ctx.warnings == ["child task 'bad' failed and allowFailure is true"]


@pytest.mark.asyncio
async def test_child_timeout(ctx: TaskContext) -> None:
    task = wdir(
        """
tasks:
  - id: slow
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT10S
    timeout: PT0.1S
"""
    )
    with pytest.raises(TaskFailure, match="child task 'slow' failed: timed out after"):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_flowable_children_are_refused(ctx: TaskContext) -> None:
    # The loader refuses them already; a task built another way still fails clearly.
    log = Log(id="a", type=Log.canonical_type, message="a")
    parallel = Parallel(id="par", type=Parallel.canonical_type, tasks=(log,))
    task = WorkingDirectory(id="wdir", type=WorkingDirectory.canonical_type, tasks=(parallel,))
    with pytest.raises(TaskFailure, match=r"'par' .*is not a runnable task"):
        await task.run(ctx)
