"""The fault tests stop and restart the database servers under the suite. Whatever
happened in a test (a failure or a timeout half-way through a restart), the next test,
in this folder or after it, must find both servers answering: each test here ends by
waiting for them, starting a stopped one the way CI does (``.ci/services``), and each
begins by doing the same (a timeout that ended the previous one cut its teardown too)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
#: a server shutting down (InnoDB flushing) or recovering may take this long
WITHIN_SECONDS = 120.0


def _quiet(*argv: str) -> int:
    return subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False
    ).returncode


class ServerStates(NamedTuple):
    mariadb_answers: bool
    mariadb_process_alive: bool
    #: pg_isready's code: 0 accepting, 1 starting or stopping, 2 no server
    postgres: int


def server_states() -> ServerStates:
    mariadb = shutil.which("mariadb-admin") or shutil.which("mysqladmin")
    if mariadb is None:
        answers, alive = True, True
    else:
        answers = _quiet(mariadb, "-h", "127.0.0.1", "-u", "root", "ping") == 0
        alive = answers or _quiet("pidof", "mariadbd", "mysqld") == 0
    pg_isready = shutil.which("pg_isready")
    postgres = 0 if pg_isready is None else _quiet(pg_isready, "-q", "-h", "127.0.0.1")
    return ServerStates(answers, alive, postgres)


def start_services() -> None:
    subprocess.run(
        ["bash", str(REPO / ".ci" / "services")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def wait_for_servers(
    *,
    mariadb: bool = True,
    postgres: bool = True,
    within: float = WITHIN_SECONDS,
    states: Callable[[], ServerStates] = server_states,
    start: Callable[[], None] = start_services,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the servers asked for (``mariadb``, ``postgres``) answer. A server
    with no process left is started (``.ci/services``); one still starting or still
    shutting down is waited for (``.ci/services`` starts nothing while a mariadbd is
    still exiting)."""
    deadline = time.monotonic() + within
    while True:
        now = states()
        if (now.mariadb_answers or not mariadb) and (now.postgres == 0 or not postgres):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the database servers did not come back within {within:g} s ({now});"
                " the tests after this one need them: run bash .ci/services"
            )
        if (mariadb and not now.mariadb_process_alive) or (postgres and now.postgres == 2):
            start()
        sleep(0.5)


@pytest.fixture(scope="session")
def servers_at_start() -> ServerStates:
    """The servers that answered when the first fault test began (a developer may run
    without a local MariaDB)."""
    return server_states()


@pytest.fixture(autouse=True)
def servers_answer_around_the_test(servers_at_start: ServerStates) -> Iterator[None]:
    mariadb, postgres = servers_at_start.mariadb_answers, servers_at_start.postgres == 0
    # before as well: the timeout of a test ending mid-restart also cuts its teardown
    wait_for_servers(mariadb=mariadb, postgres=postgres)
    yield
    wait_for_servers(mariadb=mariadb, postgres=postgres)
