"""``io.kestra.plugin.core.flow.LoopUntil``: Kestra's newer name for WaitFor (the
engine runs it as a WaitFor). Its ``checkFrequency`` defaults are Kestra's since
0.23: one iteration a minute, no limit on iterations or duration (a limit this far
off stands for none)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from runtime.flow.model import CheckFrequency, WaitFor

_NEVER = timedelta(days=36_500)


class LoopUntilCheckFrequency(CheckFrequency, kw_only=True, frozen=True):
    max_iterations: int = 2**31 - 1
    max_duration: timedelta = _NEVER
    interval: timedelta = timedelta(minutes=1)


class LoopUntil(WaitFor, kw_only=True, frozen=True):
    check_frequency: LoopUntilCheckFrequency = LoopUntilCheckFrequency()

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.LoopUntil"
    aliases: ClassVar[tuple[str, ...]] = ()
