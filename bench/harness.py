"""Run the measures, per backend, and write the report: JSON, markdown, a PNG plot.

Per backend the floor is measured first, in the same run, and every other figure of
that backend is also given as a multiple of it. Backends that cannot be measured
here (MySQL before its backend exists, a server that does not answer) are reported
as skipped with the reason, never silently left out.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import actors, e2e, engine, floor, kafka, throughput
from bench.model import NO_BACKEND, Capacity, Report, Result, Target, encode
from bench.profiling import profiled
from bench.report import markdown, plot
from bench.targets import ACTORS, ENGINE, FIB, FLOOR, P99_BOUND_MS, SEQUENTIAL, THROUGHPUT

MEASURES = (SEQUENTIAL, FIB, THROUGHPUT, FLOOR, ACTORS, ENGINE)
BACKENDS = e2e.BACKENDS
#: measures that run once per backend (the others use no backend)
PER_BACKEND = (FLOOR, SEQUENTIAL, FIB, THROUGHPUT)

#: sizes per preset: "full" is the lead's run, "quick" is `make bench` (< 5 minutes),
#: "tiny" is the test suite's (it only proves the harness works)
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        FLOOR: {"rounds": 500},
        SEQUENTIAL: {"tasks": 40, "repeat": 10},
        FIB: {"light": (40, 10), "heavy": (10, 33), "repeat": 3},
        THROUGHPUT: {"rates": throughput.RATES, "step_seconds": 20.0},
        ACTORS: {},
        ENGINE: {},
    },
    "quick": {
        FLOOR: {"rounds": 200},
        SEQUENTIAL: {"tasks": 40, "repeat": 3},
        FIB: {"light": (40, 10), "heavy": (10, 25), "repeat": 1},
        THROUGHPUT: {"rates": (100, 200, 300, 400, 500), "step_seconds": 3.0},
        ACTORS: {"messages": 50_000, "rounds": 5_000},
        ENGINE: {"repeat": 4},
    },
    "tiny": {
        FLOOR: {"rounds": 20},
        SEQUENTIAL: {"tasks": 4, "repeat": 1},
        FIB: {"light": (2, 5), "heavy": (1, 8), "repeat": 1},
        THROUGHPUT: {"rates": (5,), "step_seconds": 1.0},
        ACTORS: {"messages": 1_000, "rounds": 100, "mailbox": 32},
        ENGINE: {"repeat": 1},
    },
}


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "hostname": platform.node(),
    }


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version}
    for package in ("runtime", "asyncpg", "aiosqlite", "aiomysql", "msgspec", "httpx"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _figures(values: dict[str, Any], prefix: str, into: dict[str, float]) -> None:
    """The measured numbers of a micro-benchmark's dict (not its sizes, bounds, ratio)."""
    skip = ("messages", "mailbox", "rounds", "executions", "ratio_to_baseline")
    for key, value in values.items():
        if key in skip or key.startswith(("target_", "meets_")):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            into[f"{prefix}{key}"] = float(value)


async def _actors(sizes: dict[str, Any]) -> Result:
    raw = await actors.run(**sizes)
    result = Result(measure=ACTORS, backend=NO_BACKEND, settings=sizes)
    for part in ("tell", "ask"):
        _figures(raw[part], f"{part}_", result.figures)
        # the baseline here is asyncio itself (a bare queue), measured in the same run
        result.ratios[f"{part}_to_asyncio"] = raw[part]["ratio_to_baseline"]
    result.notes.append("ratios: to a bare asyncio queue, same run (tell: rate; ask: time)")
    tell, ask = raw["tell"], raw["ask"]
    result.targets = [
        Target(
            name="tell through one actor",
            figure="tell_messages_per_s",
            value=tell["messages_per_s"],
            bound=tell["target_messages_per_s"],
            direction="at_least",
            unit="msg/s",
        ),
        Target(
            name="ask round trip, median",
            figure="ask_median_us",
            value=ask["median_us"],
            bound=ask["target_median_us"],
            direction="at_most",
            unit="µs",
        ),
    ]
    return result


def _engine(sizes: dict[str, Any]) -> Result:
    raw = engine.run(**sizes)
    result = Result(measure=ENGINE, backend=NO_BACKEND, settings=sizes)
    for flow, figures in raw.items():
        _figures(figures, f"{flow}_", result.figures)
        result.ratios[f"{flow}_to_codec"] = figures["ratio_to_baseline"]
        result.targets.append(
            Target(
                name=f"engine, {flow}, per event",
                figure=f"{flow}_us_per_event",
                value=figures["us_per_event"],
                bound=figures["target_us_per_transition"],
                direction="at_most",
                unit="µs",
            )
        )
    result.notes.append("ratios: to a msgspec encode+decode of the execution per event")
    return result


async def _per_backend(
    backend: str,
    measures: Sequence[str],
    sizes: dict[str, dict[str, Any]],
    say: Callable[[str], None],
    profile: Path | None,
) -> list[Result]:
    why = await e2e.unavailable(backend)
    # MySQL's and Kafka's floors need only the server and the driver, not the backend
    if backend == "mysql":
        floor_why = await e2e.mysql_unavailable(need_backend=False)
    elif backend == "kafka":
        floor_why = await kafka.unavailable()
    else:
        floor_why = why
    results: list[Result] = []
    base: Result | None = None
    if floor_why is None:
        say(f"{backend}: floor")
        base = await floor.measure(backend, **sizes[FLOOR])
        if FLOOR in measures:
            results.append(base)
        if base.skipped:
            say(f"{backend}: floor skipped: {base.skipped}")
    elif FLOOR in measures:
        results.append(Result(measure=FLOOR, backend=backend, skipped=floor_why))
        say(f"{backend}: floor skipped: {floor_why}")
    for measure in (SEQUENTIAL, FIB, THROUGHPUT):
        if measure not in measures:
            continue
        if why is not None or base is None or base.floor_ms is None:
            results.append(Result(measure=measure, backend=backend, skipped=why or floor_why))
            say(f"{backend}: {measure} skipped: {why or floor_why}")
            continue
        say(f"{backend}: {measure}")
        if measure == THROUGHPUT:
            result = await throughput.throughput(
                backend, floor_ms=base.floor_ms, profile=profile, **sizes[measure]
            )
            if result.skipped:
                say(f"{backend}: {measure} skipped: {result.skipped}")
        else:
            run = e2e.sequential if measure == SEQUENTIAL else e2e.fib
            with profiled(profile, f"{measure}-{backend}"):
                result = await run(backend, floor_ms=base.floor_ms, **sizes[measure])
            if profile is not None:
                result.notes.append(f"profiled (this process): profile-{measure}-{backend}.txt")
        results.append(result)
    return results


def capacity(report: Report) -> list[Capacity]:
    """Per backend: the highest offered rate sustained within the latency bound."""
    rows = []
    for result in report.results:
        if result.measure != THROUGHPUT:
            continue
        bound = float(result.settings.get("p99_bound_ms", P99_BOUND_MS))
        if result.skipped:
            rows.append(
                Capacity(
                    backend=result.backend,
                    sustained_per_s=0.0,
                    p99_bound_ms=bound,
                    p99_ms=None,
                    per_minute=0.0,
                    note=result.skipped,
                )
            )
            continue
        sustained = [s for s in result.steps if s.sustained]
        best = max(sustained, key=lambda s: s.offered_per_s, default=None)
        rate = best.offered_per_s if best else 0.0
        tried = ", ".join(f"{s.offered_per_s:g}" for s in result.steps)
        rows.append(
            Capacity(
                backend=result.backend,
                sustained_per_s=rate,
                p99_bound_ms=bound,
                p99_ms=best.p99_ms if best else None,
                per_minute=rate * 60,
                note=(
                    f"offered {tried}/s; the first rate not sustained ends the steps"
                    if best
                    else f"no offered rate ({tried}/s) was sustained"
                ),
            )
        )
    return rows


async def run(
    measures: Sequence[str] = MEASURES,
    backends: Sequence[str] = BACKENDS,
    *,
    size: str = "full",
    say: Callable[[str], None] = print,
    profile: Path | None = None,
) -> Report:
    """Run ``measures`` on ``backends`` with the ``size`` preset; the report.

    ``profile``: a folder for cProfile profiles of the end-to-end measures.
    """
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f"unknown measure(s) {sorted(unknown)}: use {', '.join(MEASURES)}")
    sizes = SIZES[size]
    report = Report(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        quick=size != "full",
        machine=machine(),
        versions=versions(),
        settings={
            "size": size,
            "measures": list(measures),
            "backends": list(backends),
            "profiled": profile is not None,
        },
    )
    if ACTORS in measures:
        say("actors")
        report.results.append(await _actors(sizes[ACTORS]))
    if ENGINE in measures:
        say("engine")
        report.results.append(_engine(sizes[ENGINE]))
    wanted = [m for m in PER_BACKEND if m in measures]
    if wanted:
        for backend in backends:
            report.results.extend(await _per_backend(backend, wanted, sizes, say, profile))
    for result in report.find(FLOOR):
        if result.skipped is None and "server_version" in result.settings:
            report.versions[f"{result.backend}_server"] = str(result.settings["server_version"])
    report.capacity = capacity(report)
    report.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return report


def write(report: Report, folder: Path) -> dict[str, Path]:
    """The report as ``bench-<stamp>.json``, ``.md`` and ``latency-<stamp>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = report.started.replace(":", "").replace("-", "")[:15]
    paths = {"json": folder / f"bench-{stamp}.json", "markdown": folder / f"bench-{stamp}.md"}
    paths["json"].write_bytes(encode(report))
    paths["markdown"].write_text(markdown(report))
    png = folder / f"latency-{stamp}.png"
    if plot(report, png):
        paths["plot"] = png
    return paths
