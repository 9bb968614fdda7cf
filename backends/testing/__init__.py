"""The conformance suite every backend must pass (DESIGN §6, §9).

Usage, in ``tests/conformance/test_<backend>.py``::

    from backends.testing import BackendConformance

    class TestMine(BackendConformance):
        async def make_backend(self, clock, tmp_path):
            return MyBackend(..., clock=clock)
"""

import pytest

# The suite's modules are not test files: ask pytest to rewrite their asserts too,
# before they are imported, so failures show the values compared.
pytest.register_assert_rewrite(
    "backends.testing.base",
    "backends.testing.queue_tests",
    "backends.testing.transaction_tests",
    "backends.testing.store_tests",
    "backends.testing.state_tests",
    "backends.testing.pools",
    "backends.testing.storage_tests",
)

from backends.testing.base import ConformanceBase  # noqa: E402
from backends.testing.clock import ManualClock  # noqa: E402
from backends.testing.conformance import BackendConformance  # noqa: E402
from backends.testing.storage_tests import StorageConformance  # noqa: E402

__all__ = ["BackendConformance", "ConformanceBase", "ManualClock", "StorageConformance"]
