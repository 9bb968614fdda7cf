"""Shell and Python script tasks as real subprocesses: outputs, files, env, failures,
kills and timeouts of the whole process group."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.tasks import scripts
from runtime.tasks.context import TaskFailure
from tests.requirements import missing
from tests.unit.task_context import TaskContext, load_task

pytestmark = pytest.mark.slow


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(tmp_path, variables={"inputs": {"name": "World"}})


def shell(props: str, kind: str = "io.kestra.plugin.scripts.shell.Commands") -> Any:
    return load_task(f"- id: sh\n  type: {kind}\n" + _indent(props))


def python(props: str, kind: str = "io.kestra.plugin.scripts.python.Script") -> Any:
    return load_task(f"- id: py\n  type: {kind}\n" + _indent(props))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.strip("\n").splitlines())


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_if_written(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path, within: float = 5.0) -> str:
    deadline = time.monotonic() + within
    while not (text := _read_if_written(path)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written within {within}s")
        await asyncio.sleep(0.01)
    return text


async def wait_dead(pids: list[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"still alive: {[p for p in pids if alive(p)]}")
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_commands_log_output_and_parse_outputs_lines(ctx: TaskContext) -> None:
    task = shell(
        """
commands:
  - echo "Hello {{ inputs.name }}"
  - echo oops >&2
  - echo '::{"outputs":{"test":"value","int":2,"bool":true,"float":3.65}}::'
  - echo '::{"outputs":{"more":[1,2]}}::'
  - echo '::{"logs":[{"level":"WARNING","message":"from logs"}]}::'
  - echo '::{"metrics":[{"name":"rows","type":"counter","value":5}]}::'
"""
    )
    out = await task.run(ctx)
    assert out["exitCode"] == 0
    assert out["vars"] == {"test": "value", "int": 2, "bool": True, "float": 3.65, "more": [1, 2]}
    assert out["outputFiles"] == {}
    assert ("INFO", "Hello World") in ctx.log.lines
    assert ("ERROR", "oops") in ctx.log.lines
    assert ("WARN", "from logs") in ctx.log.lines
    assert not [m for m in ctx.log.messages() if m.startswith("::")]
    assert ctx.warnings == []  # stderr alone changes nothing (Kestra >= 0.23)
    assert ctx.metrics == [("rows", "counter", 5.0, {})]


@pytest.mark.asyncio
async def test_metrics_lines_are_reported_and_bad_ones_named(ctx: TaskContext) -> None:
    task = python(
        """
script: |
  import json
  good = [{"name": "took", "type": "TIMER", "value": 1.5, "tags": {"step": 2}}]
  bad = [{"name": "n", "type": "gauge", "value": 1}, {"name": "m", "type": "counter",
          "value": "three"}, {"type": "counter", "value": 1}]
  print("::" + json.dumps({"metrics": good + bad}) + "::")
"""
    )
    await task.run(ctx)
    assert ctx.metrics == [("took", "timer", 1.5, {"step": "2"})]
    warned = [m for level, m in ctx.log.lines if level == "WARN"]
    assert any("'n'" in m and "gauge" in m for m in warned), warned
    assert any("'m'" in m and "three" in m for m in warned), warned
    assert any("without a name" in m for m in warned), warned


@pytest.mark.asyncio
async def test_warning_on_std_err(ctx: TaskContext) -> None:
    task = shell("warningOnStdErr: true\ncommands: ['echo careful >&2']")
    await task.run(ctx)
    assert ctx.warnings == ["task 'sh' wrote to stderr and warningOnStdErr is true"]
    quiet = shell("warningOnStdErr: true\ncommands: ['echo fine']")
    ctx.warnings.clear()
    await quiet.run(ctx)
    assert ctx.warnings == []


@pytest.mark.asyncio
async def test_env_input_files_and_working_dir(ctx: TaskContext, monkeypatch: Any) -> None:
    monkeypatch.setenv("WORKER_SECRET_DSN", "postgres://secret")
    uri = await ctx.storage.put(ctx.namespace, "data/in.csv", b"a,b\n1,2\n")
    ctx.variables["inputs"]["file"] = uri
    task = shell(
        """
env:
  GREETING: "hi {{ inputs.name }}"
inputFiles:
  conf/settings.txt: "name={{ inputs.name }}"
  data.csv: "{{ inputs.file }}"
commands:
  - echo "$GREETING"
  - cat conf/settings.txt && echo
  - cat data.csv
  - echo "dsn=${WORKER_SECRET_DSN:-unset}"
  - test "$(pwd)" = "{{ workingDir }}" && echo in-workdir
"""
    )
    await task.run(ctx)
    assert ctx.log.messages("INFO") == [
        "hi World",
        "name=World",
        "a,b",
        "1,2",
        "dsn=unset",  # the worker's environment does not leak in
        "in-workdir",
    ]


@pytest.mark.asyncio
async def test_input_file_names_cannot_escape(ctx: TaskContext) -> None:
    task = shell("inputFiles: {'../evil.sh': x}\ncommands: ['true']")
    with pytest.raises(TaskFailure, match="must stay inside the working folder"):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_output_files_and_output_dir_are_stored(ctx: TaskContext) -> None:
    task = shell(
        """
outputFiles: ["*.txt", "reports/**/*.csv"]
commands:
  - echo one > first.txt
  - mkdir -p reports/2024 && echo 'x,y' > reports/2024/r.csv
  - echo skipped > other.log
  - echo from-dir > "{{ outputDir }}/dir.json"
"""
    )
    out = await task.run(ctx)
    files = out["outputFiles"]
    assert sorted(files) == ["dir.json", "first.txt", "reports/2024/r.csv"]
    assert await ctx.storage.get(files["first.txt"]) == b"one\n"
    assert await ctx.storage.get(files["reports/2024/r.csv"]) == b"x,y\n"
    assert await ctx.storage.get(files["dir.json"]) == b"from-dir\n"
    assert files["first.txt"] == (
        f"kestra:///company.team/flow/executions/exec1/tasks/{ctx.task_id}/run1/first.txt"
    )


@pytest.mark.asyncio
async def test_old_bash_output_files_paths(ctx: TaskContext) -> None:
    task = shell(
        "outputFiles: [first]\ncommands: ['echo 1 >> {{ outputFiles.first }}']",
        kind="io.kestra.core.tasks.scripts.Bash",
    )
    out = await task.run(ctx)
    assert await ctx.storage.get(out["outputFiles"]["first"]) == b"1\n"


@pytest.mark.asyncio
async def test_non_zero_exit_fails_with_code_and_stderr_tail(ctx: TaskContext) -> None:
    task = shell("commands:\n  - 'for i in $(seq 1 30); do echo line$i >&2; done'\n  - exit 3")
    with pytest.raises(TaskFailure) as failure:
        await task.run(ctx)
    message = str(failure.value)
    assert message.startswith("Command failed with exit code 3; last lines of stderr:\nline11\n")
    assert message.endswith("line30")
    assert "line10\n" not in message


@pytest.mark.asyncio
async def test_fail_fast(ctx: TaskContext) -> None:
    failing = shell("commands: ['false', 'echo after']")
    with pytest.raises(TaskFailure, match="exit code 1"):
        await failing.run(ctx)
    assert "after" not in ctx.log.messages()
    lenient = shell("failFast: false\ncommands: ['false', 'echo after']")
    assert (await lenient.run(ctx))["exitCode"] == 0
    assert "after" in ctx.log.messages()


@pytest.mark.asyncio
async def test_shell_script_with_before_commands_and_interpreter(ctx: TaskContext) -> None:
    task = shell(
        """
interpreter: ["/bin/bash", "-c"]
beforeCommands: ["export FROM_BEFORE=yes"]
script: |
  arr=(a b c)
  echo "bash array ${#arr[@]} before=$FROM_BEFORE"
""",
        kind="io.kestra.plugin.scripts.shell.Script",
    )
    await task.run(ctx)
    assert ctx.log.messages() == ["bash array 3 before=yes"]


@pytest.mark.asyncio
async def test_missing_interpreter_fails_clearly(ctx: TaskContext) -> None:
    task = shell("interpreter: [/no/such/shell, -c]\ncommands: ['true']")
    with pytest.raises(TaskFailure, match="cannot start '/no/such/shell'"):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_background_processes_do_not_outlive_the_task(ctx: TaskContext) -> None:
    task = shell("commands: ['sleep 60 & echo $! > bg.pid', 'echo done']")
    started = time.monotonic()
    await task.run(ctx)
    assert time.monotonic() - started < 5
    await wait_dead([int((ctx.workdir / "bg.pid").read_text())])


@pytest.mark.asyncio
async def test_kill_stops_the_whole_process_group(ctx: TaskContext) -> None:
    task = shell("commands: ['sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait']")
    runner = asyncio.create_task(task.run(ctx))
    shell_pid = int(await wait_for_file(ctx.workdir / "shell.pid"))
    child_pid = int(await wait_for_file(ctx.workdir / "child.pid"))
    assert alive(shell_pid)
    assert alive(child_pid)
    ctx.kill()  # the worker calls the kill callbacks, then cancels
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    # The shell was our child and is reaped; its orphan is reaped by init, soon.
    assert not alive(shell_pid)
    await wait_dead([child_pid], within=2.0)


@pytest.mark.asyncio
async def test_timeout_kills_the_group_and_escalates_to_sigkill(
    ctx: TaskContext, monkeypatch: Any
) -> None:
    monkeypatch.setattr(scripts, "KILL_GRACE_SECONDS", 0.3)
    task = shell(
        "commands: [\"trap '' TERM; sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait\"]"
    )

    async def with_timeout() -> None:
        async with asyncio.timeout(1.0):
            await task.run(ctx)

    runner = asyncio.create_task(with_timeout())
    shell_pid = int(await wait_for_file(ctx.workdir / "shell.pid"))
    child_pid = int(await wait_for_file(ctx.workdir / "child.pid"))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await runner
    # Both ignore SIGTERM: only the SIGKILL after the grace period stops them.
    assert time.monotonic() - started >= 0.25
    assert not alive(shell_pid)
    await wait_dead([child_pid], within=2.0)


@pytest.mark.asyncio
async def test_python_script_outputs_through_the_kestra_library(
    ctx: TaskContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in library, as a worker without the ``kestra`` package has it."""
    monkeypatch.setattr(scripts, "_has_kestra_library", lambda: False)
    task = python(
        """
inputFiles:
  data.txt: "3"
script: |
  import sys
  from kestra import Kestra
  n = int(open("data.txt").read())
  print("python", sys.version_info[0])
  Kestra.outputs({"square": n * n, "name": "{{ inputs.name }}"})
  Kestra.logger().warning("careful")
  Kestra.counter("rows", n)
"""
    )
    out = await task.run(ctx)
    assert out["vars"] == {"square": 9, "name": "World"}
    assert ("INFO", "python 3") in ctx.log.lines
    assert ("WARN", "careful") in ctx.log.lines


@pytest.mark.asyncio
async def test_python_commands_use_the_worker_interpreter(ctx: TaskContext) -> None:
    task = python(
        """
inputFiles:
  main.py: |
    import json, sys
    print("::" + json.dumps({"outputs": {"exe": sys.executable}}) + "::")
    raise SystemExit(0)
commands:
  - python main.py
  - python3 -c 'print("three")'
""",
        kind="io.kestra.plugin.scripts.python.Commands",
    )
    out = await task.run(ctx)
    import sys

    assert out["vars"]["exe"] == sys.executable
    assert "three" in ctx.log.messages("INFO")


@pytest.mark.asyncio
async def test_python_exception_fails_with_the_traceback_tail(ctx: TaskContext) -> None:
    task = python("script: |\n  raise ValueError('bad data')")
    with pytest.raises(
        TaskFailure, match=r"(?s)exit code 1; last lines of stderr:\n.*ValueError: bad data$"
    ):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_kestras_own_python_library_reports_outputs_metrics_and_logs(
    ctx: TaskContext,
) -> None:
    """The ``kestra`` package from PyPI (not the stand-in): what it prints is read."""
    import importlib.util

    if importlib.util.find_spec("kestra") is None:
        missing("the kestra library (PyPI `kestra`, in the test extra) is not installed")
    task = python(
        """
script: |
  import kestra
  from kestra import Kestra
  print("library", "stand-in" if "kestra_lib" in kestra.__file__ else "pypi")
  Kestra.outputs({"rows": 3, "nested": {"a": [1, 2]}, "ok": True})
  Kestra.outputs({"later": "merged"})
  Kestra.counter("processed", 3, {"source": "csv"})
  Kestra.timer("load", 1.5)
  Kestra.logger().info("loaded")
  Kestra.logger().warning("slow source")
  Kestra.logger().error("one bad row")
"""
    )
    out = await task.run(ctx)
    assert ("INFO", "library pypi") in ctx.log.lines
    assert out["vars"] == {"rows": 3, "nested": {"a": [1, 2]}, "ok": True, "later": "merged"}
    assert ctx.metrics == [
        ("processed", "counter", 3.0, {"source": "csv"}),
        ("load", "timer", 1.5, {}),
    ]
    # the library prefixes its log lines with their UTC time
    logged = [(level, text.split(" - ", 1)[1]) for level, text in ctx.log.lines if " - " in text]
    assert logged == [("INFO", "loaded"), ("WARN", "slow source"), ("ERROR", "one bad row")]
    assert not [m for m in ctx.log.messages() if m.startswith("::")]


@pytest.mark.asyncio
async def test_namespace_files_are_copied_in_before_input_files(ctx: TaskContext) -> None:
    for path, text in {
        "_files/scripts/run.sh": "echo from-namespace",
        "_files/scripts/skip.tmp": "no",
        "_files/conf/app.ini": "level=1",
        "_files/readme.md": "top",
    }.items():
        await ctx.storage.put("company.team", path, text.encode())
    await ctx.storage.put("other.team", "_files/scripts/run.sh", b"echo elsewhere")
    task = shell(
        """
namespaceFiles:
  enabled: true
  include: ["scripts/**", "conf/*"]
  exclude: ["**/*.tmp"]
inputFiles:
  conf/app.ini: level=2
commands:
  - sh scripts/run.sh
  - cat conf/app.ini; echo
  - ls -R . | grep -c -e skip.tmp -e readme.md || true
"""
    )
    out = await task.run(ctx)
    assert out["exitCode"] == 0
    assert ctx.log.messages("INFO") == ["from-namespace", "level=2", "0"]


@pytest.mark.asyncio
async def test_namespace_files_turned_off_copy_nothing(ctx: TaskContext) -> None:
    await ctx.storage.put("company.team", "_files/a.txt", b"a")
    task = shell("namespaceFiles:\n  enabled: false\ncommands:\n  - ls")
    await task.run(ctx)
    assert "a.txt" not in ctx.log.messages("INFO")
    assert [text for level, text in ctx.log.lines if level == "WARN"] == []
