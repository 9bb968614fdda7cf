"""The whole conformance suite as one class to subclass per backend."""

from __future__ import annotations

from backends.testing.inbox_tests import InboxConformance
from backends.testing.log_search_tests import LogSearchConformance
from backends.testing.queue_tests import QueueConformance
from backends.testing.state_tests import (
    KillConformance,
    KVConformance,
    LeaderConformance,
    ServiceConformance,
    TriggerConformance,
)
from backends.testing.store_tests import ExecutionConformance, FlowConformance, LogConformance
from backends.testing.transaction_tests import TransactionConformance


class BackendConformance(
    QueueConformance,
    InboxConformance,
    TransactionConformance,
    ExecutionConformance,
    FlowConformance,
    LogConformance,
    LogSearchConformance,
    TriggerConformance,
    KVConformance,
    KillConformance,
    ServiceConformance,
    LeaderConformance,
):
    """Every conformance test. A backend's test module subclasses it (the class name
    must start with ``Test``) and overrides ``make_backend``::

        class TestSqlite(BackendConformance):
            async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
                return SqliteBackend(tmp_path / "runtime.db", clock=clock)

    The suite starts the backend before each test and stops it after. A backend
    that cannot pass a test yet lists it in ``known_gaps`` (name -> reason) and the
    test runs as ``xfail(strict=True)``. To skip a backend whose server is not
    configured, call ``pytest.skip`` in ``make_backend``.
    """
