"""What a test needs that the machine may lack: skipped on a developer's machine,
a failure in CI (CI=true), where `.ci/run` installs and starts everything."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)
