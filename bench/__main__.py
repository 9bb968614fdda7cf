"""``python -m bench``: run the capacity and latency benchmarks.

Today: the actor kernel (``actors``). Results go to stdout as a markdown table and
to ``bench/results/<measure>-<timestamp>.json`` with machine information.
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
from typing import Any

from bench import actors
from runtime.log import configure_logging


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "runtime_version": __import__("runtime").__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "measure", nargs="?", default="actors", choices=["actors"], help="what to measure"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast pass")
    parser.add_argument(
        "--results", default="bench/results", help="folder for the JSON results (created)"
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING")

    sizes = {"messages": 50_000, "rounds": 5_000} if args.quick else {}
    result = asyncio.run(actors.run(**sizes))
    document = {"measure": args.measure, "machine": machine(), "settings": sizes, "result": result}
    out = pathlib.Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.measure}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=2))
    print(actors.table(result))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
