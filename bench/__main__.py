"""``python -m bench``: run the capacity and latency benchmarks.

Measures today: ``actors`` (the actor kernel), ``engine`` (the pure execution
engine), ``standalone`` (the one-process server on SQLite, end to end) and ``postgres``
(the executor in-process, workers in subprocesses, on PostgreSQL).
Results go to stdout as markdown tables and to
``bench/results/<measure>-<timestamp>.json`` with machine information.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import actors, engine, postgres, standalone
from runtime.log import configure_logging


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "runtime_version": __import__("runtime").__version__,
    }


def _actors(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes = {"messages": 50_000, "rounds": 5_000} if quick else {}
    return sizes, asyncio.run(actors.run(**sizes))


def _engine(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes = {"repeat": 4} if quick else {}
    return sizes, engine.run(**sizes)


def _standalone(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes = {"repeat": 2} if quick else {}
    return sizes, asyncio.run(standalone.run(**sizes))


def _postgres(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes: dict[str, Any] = (
        {"repeat": 2, "rates": [50, 100, 200], "step_seconds": 2.0, "floor_rounds": 200}
        if quick
        else {}
    )
    return sizes, asyncio.run(postgres.run(**sizes))


MEASURES: dict[str, tuple[Callable[[bool], tuple[dict[str, Any], dict[str, Any]]], Any]] = {
    "actors": (_actors, actors.table),
    "engine": (_engine, engine.table),
    "standalone": (_standalone, standalone.table),
    "postgres": (_postgres, postgres.table),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "measures",
        nargs="*",
        default=list(MEASURES),
        choices=[*MEASURES, []],
        metavar="MEASURE",
        help=f"what to measure: {', '.join(MEASURES)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast pass")
    parser.add_argument(
        "--results", default="bench/results", help="folder for the JSON results (created)"
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    out = pathlib.Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in args.measures or list(MEASURES):
        measure, table = MEASURES[name]
        settings, result = measure(args.quick)
        document = {"measure": name, "machine": machine(), "settings": settings, "result": result}
        path = out / f"{name}-{stamp}.json"
        path.write_text(json.dumps(document, indent=2))
        print(f"## {name}\n\n{table(result)}\n\nresults: {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
