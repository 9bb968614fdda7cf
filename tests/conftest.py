"""Test-wide settings: asyncio debug mode for every event loop the tests create."""

import os

# Read by asyncio each time a loop is created: slow callbacks and never-awaited
# coroutines are reported, and un-retrieved task exceptions are logged.
os.environ["PYTHONASYNCIODEBUG"] = "1"
