"""Test-wide settings: asyncio debug mode for every event loop the tests create, and
the hypothesis profile (``RUNTIME_HYPOTHESIS_PROFILE``: ``ci`` by default, ``mutation``
for ``make mutation``, ``dev`` for a random search while working)."""

import os

import pytest
import structlog
from hypothesis import settings

# Read by asyncio each time a loop is created: slow callbacks and never-awaited
# coroutines are reported, and un-retrieved task exceptions are logged.
os.environ["PYTHONASYNCIODEBUG"] = "1"

# CI: the same examples on every run (derandomize, no example database), so a red
# build is reproducible and a green one is not luck. Each property test sets its own
# number of examples, scaled by ``max_examples / 100`` (see ``examples`` there).
settings.register_profile("ci", derandomize=True, database=None, max_examples=100)
# Mutation testing: still fixed, so a mutant's verdict does not change between runs,
# and twice the examples, because a survivor is read as "no test can see this".
settings.register_profile("mutation", derandomize=True, database=None, max_examples=200)
# Working on the engine: a fresh random search each run, failures remembered locally.
settings.register_profile("dev", max_examples=100)
settings.load_profile(os.environ.get("RUNTIME_HYPOTHESIS_PROFILE", "ci"))


if settings.default.max_examples == settings.get_profile("mutation").max_examples:
    # Mutation testing runs the same tests once per mutant: a log line with a
    # traceback (the executor logs one for each event it fails on) is rendered plainly
    # rather than by rich, which costs a good part of a second each.
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``make mutation``, cheap tests first: mutmut stops a mutant's run at the
    first failure, and it hands over the tests in no particular order."""
    if settings.default.max_examples != settings.get_profile("mutation").max_examples:
        return
    items.sort(key=_cost)


def _cost(item: pytest.Item) -> int:
    path = item.nodeid
    cost = 0 if path.startswith("tests/unit/") else 1
    if "test_engine_properties" in path:
        cost = 3
    if item.get_closest_marker("slow") is not None:
        cost += 2
    return cost
