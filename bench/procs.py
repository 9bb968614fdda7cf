"""Server processes started by the harness: the command, start and stop, their CPU."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def runtime_command() -> list[str]:
    """How to call this tree's ``runtime`` command."""
    script = Path(sys.executable).with_name("runtime")
    if script.exists():
        return [str(script)]
    found = shutil.which("runtime")
    if found:
        return [found]
    return [sys.executable, "-c", "from services.cli import main; main()"]


@contextmanager
def spawned(
    commands: list[list[str]], folder: Path, environ: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start each command, its output to ``folder/<i>-<name>.log``; SIGTERM, then kill.

    ``environ`` replaces this process's ``RUNTIME_*`` variables (a setting of the
    harness's own environment must not leak into a server it configures).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_")}
    env.update(environ)
    env.setdefault("RUNTIME_LOG_LEVEL", "WARNING")
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for i, command in enumerate(commands):
            name = next((part for part in command[command.index("run") + 1 :]), "run")
            log_file = open(folder / f"{i}-{name.lstrip('-')}.log", "wb")  # noqa: SIM115
            logs.append(log_file)
            procs.append(
                subprocess.Popen(
                    command,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20.0
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log_file in logs:
            log_file.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_ports_to(pids: list[int], remote_port: int) -> set[int]:
    """The local ports of the TCP connections the processes ``pids`` hold to
    ``remote_port`` (Linux /proc; empty elsewhere): a database server's view of who
    its clients are (PostgreSQL's ``pg_stat_activity.client_port``)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
