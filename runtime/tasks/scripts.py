"""Shell and Python script tasks, run as local subprocesses.

``io.kestra.plugin.scripts.shell.Commands`` / ``.Script`` and
``io.kestra.plugin.scripts.python.Commands`` / ``.Script`` (and the old
``io.kestra.core.tasks.scripts.Bash`` / ``Python``) run in the attempt's working
folder (``ctx.workdir``), in a process group of their own:

1. ``inputFiles`` are written (text, or copied from a ``kestra://`` URI);
2. one interpreter call (``interpreter``, default ``/bin/sh -c``, as in Kestra)
   gets ``set -e`` (with ``failFast`` and a POSIX shell), then ``beforeCommands``,
   then the ``commands`` — or a command running ``script``, written to a hidden
   file of the folder;
3. stdout lines are logged at INFO and stderr lines at ERROR (as Kestra does since
   0.20); lines ``::{"outputs": {...}}::`` become the ``vars`` output (read as
   ``outputs.<task>.vars.<name>``), ``::{"logs": [{"level", "message"}]}::`` are
   logged at their level and ``::{"metrics": [...]}::`` become the task run's
   metrics (counters and timers), none of them as plain text;
4. a non-zero exit fails the task with the exit code and the last stderr lines;
   with ``warningOnStdErr: true`` any stderr output ends it in WARNING (unset, it
   does not: Kestra dropped that behaviour in 0.23);
5. files matching ``outputFiles`` globs and files written to ``{{ outputDir }}`` go
   to internal storage. Outputs: ``exitCode``, ``vars``, ``outputFiles`` (name -> URI).

Templates also see ``workingDir`` and ``outputDir`` (and ``outputFiles.<name>``, the
local path of each literal output file name, for the old Bash task).

The environment is not the worker's: only a few variables pass (PATH, HOME,
locale, TZ, proxies, CA bundles), then ``env``. Processes left running when the
interpreter exits are killed, so nothing outlives its task; a kill or a timeout
sends SIGTERM to the whole group and SIGKILL after ``KILL_GRACE_SECONDS``.

Python tasks run the worker's own interpreter (``sys.executable``): ``python``,
``python3``, ``pip`` and ``pip3`` on PATH lead to it. There is no per-task virtual
environment; ``dependencies`` and any ``pip install`` are installed into a
``.deps`` folder of the working folder (``PIP_TARGET``) that is on PYTHONPATH, so
they never change the worker's environment. When the ``kestra`` library is not
installed, a small stand-in (``Kestra.outputs``, ``counter``, ``timer``,
``logger``) is on PYTHONPATH.

``containerImage``, ``taskRunner``, ``docker`` and ``runner`` are accepted and
ignored: scripts always run as local processes. ``namespaceFiles`` (``enabled``,
``include``, ``exclude`` globs) copies the flow's namespace files into the working
folder before ``inputFiles`` are written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib.util
import json
import os
import re
import shlex
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread

from runtime.tasks import files
from runtime.tasks.context import RunContext, TaskFailure
from runtime.tasks.namespace_files import copy_into
from runtime.tasks.support import LEVELS, log_at

if TYPE_CHECKING:
    from runtime.tasks.core import (
        PythonCommands,
        PythonScript,
        ShellCommands,
        ShellScript,
        _Script,
    )

#: seconds between SIGTERM and SIGKILL when a script is killed
KILL_GRACE_SECONDS: float = 5.0
#: stderr lines quoted when a script fails
STDERR_TAIL: Final = 20
#: longer lines are cut in pieces (an outputs line this long would be unreasonable)
MAX_LINE: Final = 8 << 20
OUTPUT_DIR: Final = ".outputs"

_INHERITED_ENV: Final = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
_POSIX_SHELLS: Final = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
_SPECIAL_LINE: Final = re.compile(r"^::(\{.*\})::$")
_GLOB_CHARS: Final = frozenset("*?[")
_KESTRA_SHIM: Final = Path(__file__).with_name("kestra_lib")


async def run_commands(
    task: ShellCommands | PythonCommands, ctx: RunContext, language: str
) -> dict[str, Any]:
    """Run ``commands`` one after the other in one interpreter call."""
    return await _run(task, ctx, language, commands=list(task.commands), script=None)


async def run_script(
    task: ShellScript | PythonScript, ctx: RunContext, language: str
) -> dict[str, Any]:
    """Run the inline ``script``."""
    return await _run(task, ctx, language, commands=None, script=task.script)


async def _run(
    task: _Script,
    ctx: RunContext,
    language: str,
    *,
    commands: list[str] | None,
    script: str | None,
) -> dict[str, Any]:
    where = f"task {task.id!r}"
    workdir = ctx.workdir
    # One per task: the children of a WorkingDirectory share the working folder.
    output_dir = workdir / f"{OUTPUT_DIR}-{task.id}"
    await anyio.to_thread.run_sync(lambda: output_dir.mkdir(parents=True, exist_ok=True))
    extra: dict[str, Any] = {"workingDir": str(workdir), "outputDir": str(output_dir)}
    literal = [name for name in task.output_files if not _GLOB_CHARS & set(name)]
    if literal:
        extra["outputFiles"] = {name: str(workdir / name) for name in literal}
    if task.namespace_files:
        # first, so that inputFiles of the same name win, as in Kestra
        await copy_into(ctx, task.namespace_files, workdir, where)
    await files.write_input_files(ctx, task.input_files, workdir, where=where, extra=extra)
    user_env = await ctx.render(dict(task.env), extra)
    lines: list[str] = [str(line) for line in await ctx.render(list(task.before_commands), extra)]
    interpreter = list(task.interpreter or ["/bin/sh", "-c"])
    if not interpreter:
        raise TaskFailure(f"{where}: interpreter must name at least one program")
    env = _environment({str(k): str(v) for k, v in user_env.items()})
    if language == "python":
        lines[:0] = await _prepare_python(task, workdir, env)
    if commands is not None:
        lines += [str(line) for line in await ctx.render(commands, extra)]
    else:
        body = str(await ctx.render(script, extra))
        suffix = ".py" if language == "python" else ".sh"
        path = await anyio.to_thread.run_sync(_write_script, workdir, body, suffix)
        runner = sys.executable if language == "python" else interpreter[0]
        lines.append(f"{shlex.quote(runner)} {shlex.quote(path.name)}")
    if task.fail_fast and Path(interpreter[0]).name in _POSIX_SHELLS:
        lines.insert(0, "set -e")

    state = _Output(ctx)
    code = await _execute([*interpreter, "\n".join(lines)], workdir, env, state, ctx, where)
    if code != 0:
        raise TaskFailure(_failure(code, state.stderr_tail))
    if task.warning_on_std_err and state.wrote_stderr:
        ctx.warn(f"{where} wrote to stderr and warningOnStdErr is true")
    stored = await files.upload_output_files(ctx, list(task.output_files), workdir, where=where)
    from_dir = await anyio.to_thread.run_sync(files.match_output_files, output_dir, ["**/*"])
    stored.update(await files.upload_files(ctx, from_dir, where=where))
    return {"exitCode": code, "vars": state.vars, "outputFiles": stored}


def _environment(user_env: dict[str, str]) -> dict[str, str]:
    env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(user_env)
    return env


async def _prepare_python(task: _Script, workdir: Path, env: dict[str, str]) -> list[str]:
    """Point ``python``/``pip`` at the worker's interpreter and pip at ``.deps``;
    return the commands installing ``dependencies``."""
    shims = workdir / ".runtime-bin"
    deps = workdir / ".deps"
    await anyio.to_thread.run_sync(_write_shims, shims)
    env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"
    paths = [str(deps)] + ([str(_KESTRA_SHIM)] if not _has_kestra_library() else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PIP_TARGET"] = str(deps)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    dependencies = list(getattr(task, "dependencies", []))
    if not dependencies:
        return []
    quoted = " ".join(shlex.quote(str(d)) for d in dependencies)
    return [f"{shlex.quote(sys.executable)} -m pip install --quiet {quoted}"]


@functools.cache
def _has_kestra_library() -> bool:
    return importlib.util.find_spec("kestra") is not None


def _write_shims(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    for name, target in (
        ("python", python),
        ("python3", python),
        ("pip", f"{python} -m pip"),
        ("pip3", f"{python} -m pip"),
    ):
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        shim.chmod(0o755)


def _write_script(workdir: Path, body: str, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=workdir, prefix=".script-", suffix=suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body if body.endswith("\n") else body + "\n")
    return Path(name)


async def _execute(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    state: _Output,
    ctx: RunContext,
    where: str,
) -> int:
    """Run ``argv`` in a new process group; stream its output to ``state``; return
    the exit code. Whatever happens, the group is dead and reaped on return."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            functools.partial(_Protocol, loop),
            *argv,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise TaskFailure(f"{where}: cannot start {argv[0]!r}: {exc}") from None
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    ctx.on_kill(functools.partial(_signal_group, proc, signal.SIGTERM))
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_pump(proc.stdout, state.stdout_line), name=f"{where}.stdout")
            group.create_task(_pump(proc.stderr, state.stderr_line), name=f"{where}.stderr")
            await protocol.exited.wait()
            # Background processes the script left behind would hold the pipes open
            # (and Process.wait() waits for the pipes too).
            _kill_group(proc.pid, signal.SIGKILL)
            code = await proc.wait()
    except BaseException:
        await _terminate(proc, protocol, where)
        raise
    return code


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the process group, unless its leader is already reaped (its pid may be reused)."""
    if proc.returncode is None:
        _kill_group(proc.pid, sig)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate(proc: asyncio.subprocess.Process, protocol: _Protocol, where: str) -> None:
    """Stop the group (SIGTERM, then SIGKILL) and reap it, even if cancelled again."""
    stopping = asyncio.get_running_loop().create_task(
        _stop(proc, protocol), name=f"{where}.terminate"
    )
    while not stopping.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(stopping)
    stopping.result()


async def _stop(proc: asyncio.subprocess.Process, protocol: _Protocol) -> None:
    _signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE_SECONDS):
            await protocol.exited.wait()
    # Also when the leader is gone: its children may ignore SIGTERM.
    _kill_group(proc.pid, signal.SIGKILL)
    # Read what is left, so the pipes reach EOF and the transport closes.
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(1.0):
                    while await stream.read(1 << 16):
                        pass
    await proc.wait()


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Tells when the process itself exits (Process.wait() also waits for its pipes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=1 << 16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def _pump(stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
    """Feed ``sink`` each line of ``stream`` (without its line ending)."""
    buffer = bytearray()
    while chunk := await stream.read(1 << 16):
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            sink(_decode(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_LINE:
            sink(_decode(buffer))
            buffer.clear()
    if buffer:
        sink(_decode(buffer))


def _decode(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r")


class _Output:
    """What a script printed: ``vars`` from its outputs lines, the stderr tail."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.vars: dict[str, Any] = {}
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.wrote_stderr = False

    def stdout_line(self, line: str) -> None:
        if not self._special(line):
            self.ctx.log.info(line)

    def stderr_line(self, line: str) -> None:
        if self._special(line):
            return
        self.wrote_stderr = True
        self.stderr_tail.append(line)
        self.ctx.log.error(line)

    def _metric(self, entry: dict[str, Any]) -> None:
        metric = _metric_of(entry)
        if isinstance(metric, str):
            self.ctx.log.warning(f"{metric} (ignored; see Kestra's script metrics)")
            return
        self.ctx.metric(*metric)

    def _special(self, line: str) -> bool:
        """Handle a ``::{...}::`` line; False when ``line`` is plain text."""
        match = _SPECIAL_LINE.match(line.strip())
        if match is None:
            return False
        try:
            message = json.loads(match.group(1))
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        outputs = message.get("outputs")
        if isinstance(outputs, dict):
            self.vars.update(outputs)
        for entry in _items(message.get("logs")):
            level = str(entry.get("level", "INFO")).upper()
            level = {"WARNING": "WARN"}.get(level, level)
            log_at(self.ctx, level if level in LEVELS else "INFO", str(entry.get("message", "")))
        for entry in _items(message.get("metrics")):
            self._metric(entry)
        return True


def _metric_of(entry: dict[str, Any]) -> tuple[str, str, float, dict[str, str]] | str:
    """A script's metric line as (name, type, value, tags), or what is wrong with it."""
    name, kind, value = entry.get("name"), str(entry.get("type", "")).lower(), entry.get("value")
    if not isinstance(name, str) or not name:
        return f"a metric without a name: {entry!r}"
    if kind not in ("counter", "timer"):
        return f"metric {name!r}: type {entry.get('type')!r} is neither counter nor timer"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"metric {name!r}: value {value!r} is no number"
    tags = entry.get("tags")
    tags = {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
    return name, kind, float(value), tags


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        value = [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _failure(code: int, tail: collections.deque[str]) -> str:
    if code < 0:
        try:
            reason = f"Command was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            reason = f"Command was killed by signal {-code}"
    else:
        reason = f"Command failed with exit code {code}"
    if not tail:
        return reason
    return f"{reason}; last lines of stderr:\n" + "\n".join(tail)
