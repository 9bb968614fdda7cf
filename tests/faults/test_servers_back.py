"""The fault tests' guard: after each of them both database servers answer again,
whatever state a failed restart left them in (see ``conftest.py``)."""

from __future__ import annotations

import pytest

from tests.faults.conftest import ServerStates, server_states, wait_for_servers


def wait_through(*states: ServerStates, within: float = 60.0, mariadb: bool = True) -> list[str]:
    """Run wait_for_servers on servers that go through ``states``; what it did."""
    calls: list[str] = []
    left = list(states)

    def probe() -> ServerStates:
        now = left.pop(0) if len(left) > 1 else left[0]
        calls.append(f"probe {tuple(now)}")
        return now

    def start() -> None:
        calls.append("start")

    wait_for_servers(
        mariadb=mariadb, within=within, states=probe, start=start, sleep=lambda _: None
    )
    return calls


UP = ServerStates(True, True, 0)


def test_servers_that_answer_are_left_alone() -> None:
    calls = wait_through(UP)
    assert "start" not in calls


def test_a_mariadb_still_shutting_down_is_waited_for_then_started() -> None:
    stopping = ServerStates(False, True, 0)
    gone = ServerStates(False, False, 0)
    calls = wait_through(stopping, stopping, gone, UP)
    # starting while the old mariadbd still exits would start nothing (--oknodo)
    assert calls.index("start") == 3, calls
    assert calls.count("start") == 1


def test_a_stopped_postgres_is_started_and_one_starting_up_is_waited_for() -> None:
    calls = wait_through(ServerStates(True, True, 2), ServerStates(True, True, 1), UP)
    assert calls.count("start") == 1


def test_servers_that_do_not_come_back_fail_the_test_naming_the_fix() -> None:
    with pytest.raises(RuntimeError, match=r"did not come back.*bash \.ci/services"):
        wait_through(ServerStates(False, False, 2), within=0.0)


def test_a_server_that_was_not_running_before_is_not_waited_for() -> None:
    calls = wait_through(ServerStates(False, False, 0), within=0.0, mariadb=False)
    assert "start" not in calls


def test_the_probes_see_the_servers_of_this_machine() -> None:
    wait_for_servers()
    assert server_states() == UP
