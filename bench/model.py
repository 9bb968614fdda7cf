"""The one shape every measure reports in, and the report that gathers them.

A :class:`Result` is one measure on one backend: the settings it ran with, its
figures, and its ratios to the database floor measured in the same run (so the
ratio is comparable between runs on a noisy machine where absolute numbers drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

#: the backend of a measure that uses none (the kernel and engine micro-benchmarks)
NO_BACKEND = "-"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1): the smallest sample with at least
    ``q`` of all samples at or below it (p99 of 50 samples is the largest). One
    definition for every measure; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered) - 1e-9))) - 1]


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A figure checked against a bound from DESIGN §8."""

    name: str
    figure: str
    value: float
    bound: float
    direction: Literal["at_most", "at_least"]
    unit: str = ""

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.bound if self.direction == "at_most" else self.value >= self.bound


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One offered rate of the throughput measure."""

    offered_per_s: float
    seconds: float
    sent: int
    accepted: int
    completed: int
    failed: int
    #: requests sent per second, as the generator managed (it shares the CPU)
    sent_per_s: float
    #: executions ended per second, from the first request to the last end
    achieved_per_s: float
    #: request sent -> execution ended; None when nothing completed
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    #: the rate is sustained: achieved >= keep-up share of offered, p99 within the bound
    sustained: bool
    #: cores busy (1.0 = one core) per server process over the step and its drain
    cpu_server: list[float] = []
    #: cores busy in the harness's process (the load generator and the reading)
    cpu_generator: float = 0.0
    #: cores busy in the database server's processes serving the server's connections
    #: (PostgreSQL: its backends; None where not measured)
    cpu_database: float | None = None
    #: requests that got no execution, by cause (``http 503``, ``connection reset``,
    #: ``timeout``, ``connect failed``, ``bad answer``)
    failures: dict[str, int] = {}
    #: requests sent again on a new connection after the server had closed the kept-alive
    #: one they were written on (not failures: a real client does the same)
    retried: int = 0


class Result(msgspec.Struct, kw_only=True):
    """One measure on one backend."""

    measure: str
    backend: str
    settings: dict[str, Any] = {}
    figures: dict[str, float] = {}
    #: figure name -> figure / the floor (or the measure's own baseline), same run
    ratios: dict[str, float] = {}
    #: the floor the ratios divide by, milliseconds (None: the measure's own baseline)
    floor_ms: float | None = None
    steps: list[Step] = []
    targets: list[Target] = []
    #: why the measure did not run on this backend (then nothing else is set)
    skipped: str | None = None
    notes: list[str] = []

    def add_ratios(self, floor_ms: float, names: list[str], suffix: str = "_floors") -> None:
        """Divide each named figure (milliseconds) by the measured floor."""
        if not floor_ms > 0:
            raise ValueError(f"{self.measure} on {self.backend}: floor {floor_ms} ms is not > 0")
        self.floor_ms = floor_ms
        for name in names:
            self.ratios[name + suffix] = self.figures[name] / floor_ms


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
    """What a deployment of the measured size sustains on one backend."""

    backend: str
    #: highest offered rate sustained (executions/s of the 2-task flow); 0 if none was
    sustained_per_s: float
    p99_bound_ms: float
    #: p99 at that rate
    p99_ms: float | None
    #: the same per minute, Kestra's unit
    per_minute: float
    note: str = ""


class Report(msgspec.Struct, kw_only=True):
    """A whole harness run: what ran where, every figure, the capacity summary."""

    started: str
    finished: str = ""
    quick: bool = False
    machine: dict[str, Any] = {}
    versions: dict[str, str] = {}
    settings: dict[str, Any] = {}
    results: list[Result] = []
    capacity: list[Capacity] = []

    def find(self, measure: str, backend: str | None = None) -> list[Result]:
        return [
            r
            for r in self.results
            if r.measure == measure and (backend is None or r.backend == backend)
        ]


def encode(report: Report) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=2)


def decode(data: bytes | str) -> Report:
    return msgspec.json.decode(data, type=Report)
