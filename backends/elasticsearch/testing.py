"""noida-db with its Kafka and Elasticsearch APIs for the tests: both on free
127.0.0.1 ports, started once it answers both, stopped with SIGTERM (noida-db loses
its last second of writes to a SIGKILL)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backends.kafka.testing import NOIDA_DB, BrokerProcess, BrokerUnavailable, binary, free_port


def answers_elasticsearch(url: str, *, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class SearchServer(BrokerProcess):
    """noida-db serving Kafka on ``port`` and Elasticsearch on ``es_port``."""

    es_port: int = field(default_factory=free_port)

    @property
    def es_url(self) -> str:
        return f"http://{self.host}:{self.es_port}"

    def command(self) -> list[str]:
        return [
            str(binary(NOIDA_DB)),
            "start",
            "--data-dir",
            str(self.data_dir / "data"),
            "--host",
            self.host,
            "--only",
            "kafka,elasticsearch",
            "--kafka-port",
            str(self.port),
            "--elasticsearch-port",
            str(self.es_port),
        ]

    def _service(self, action: str) -> None:
        subprocess.run(
            [
                str(binary(NOIDA_DB)),
                action,
                "elasticsearch",
                "--data-dir",
                str(self.data_dir / "data"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stop_search(self) -> None:
        """Stop the Elasticsearch API alone (its data kept; Kafka keeps running)."""
        self._service("stop")

    def start_search(self) -> None:
        """Start the Elasticsearch API again, once it answers."""
        self._service("start")
        self._wait_search()

    def start(self) -> None:
        super().start()
        self._wait_search()

    def _wait_search(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not answers_elasticsearch(self.es_url):
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailable(
                    f"noida-db did not answer the Elasticsearch API on {self.es_url}:"
                    f" {self.log_tail()}"
                )
            time.sleep(0.05)


@contextlib.contextmanager
def running_search_server(*, data_dir: Path | None = None) -> Iterator[SearchServer]:
    """A fresh noida-db with Kafka and Elasticsearch, stopped (SIGTERM) on exit."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="noida-es-")))
        server = SearchServer(NOIDA_DB, data_dir)
        stack.callback(server.stop)
        server.start()
        yield server
