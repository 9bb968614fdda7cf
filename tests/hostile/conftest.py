"""Budgets small enough that an over-budget expression fails quickly in tests."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import pytest

from runtime.flow import budget

#: what the tests give an evaluation; the defaults (1 s, 64 MiB) work the same, slower
TEST_LIMITS = budget.Limits(cpu_seconds=0.3, memory_bytes=32 * 1024 * 1024)


@pytest.fixture
def small_budget() -> Iterator[budget.Limits]:
    before = budget.limits()
    budget.configure(TEST_LIMITS)
    try:
        yield TEST_LIMITS
    finally:
        budget.configure(before)


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """What the test session built so far left out of garbage collections: in a full
    run that heap is large, and a collection walking it stalls whatever loop the test
    times (0.3 s seen), which says nothing about the code under test."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
