"""Test-wide settings: asyncio debug mode for every event loop the tests create, and
the hypothesis profile (``RUNTIME_HYPOTHESIS_PROFILE``: ``ci`` by default, ``mutation``
for ``make mutation``, ``dev`` for a random search while working)."""

import os

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
