"""The capacity and latency harness (python -m bench, or runtime bench).

Measures: sequential, fib, throughput and floor (per backend: sqlite, postgres,
mysql), actors and engine (no backend). See bench/README.md. The report goes to
stdout as markdown and to the results folder as JSON, markdown and a PNG plot.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench.harness import BACKENDS, MEASURES, SIZES, run, write
from runtime.log import configure_logging


def parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument(
        "measures",
        nargs="*",
        metavar="MEASURE",
        help=f"what to measure: {', '.join(MEASURES)} (default: all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes, a pass under 5 minutes (make bench)"
    )
    p.add_argument(
        "--size",
        choices=sorted(SIZES),
        help="size preset (full by default; --quick is --size quick; tiny only proves it runs)",
    )
    p.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="a backend to measure on, repeatable (default: all; unavailable ones are skipped)",
    )
    p.add_argument(
        "--out",
        "--results",
        dest="out",
        default="bench/results",
        type=Path,
        help="folder for the JSON, markdown and PNG results (created)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile the end-to-end measures (cProfile; slows them): profile-*.txt in --out",
    )
    return p


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    args = parser(prog).parse_args(argv)
    unknown = [m for m in args.measures if m not in MEASURES]
    if unknown:
        parser(prog).error(f"unknown measure(s) {', '.join(unknown)}: use {', '.join(MEASURES)}")
    size = args.size or ("quick" if args.quick else "full")
    configure_logging("WARNING")

    def say(line: str) -> None:
        print(f"-- {line}", file=sys.stderr, flush=True)

    report = asyncio.run(
        run(
            args.measures or MEASURES,
            args.backend or BACKENDS,
            size=size,
            say=say,
            profile=args.out if args.profile else None,
        )
    )
    paths = write(report, args.out)
    print(paths["markdown"].read_text())
    print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
