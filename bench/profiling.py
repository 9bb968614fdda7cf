"""``--profile``: where the time goes, for the closing note of a missed target.

In-process measures run under :mod:`cProfile`; the server processes of the
throughput measure are started under ``python -m cProfile`` (they write their
profile when they stop gracefully). Each profile is kept twice in the results
folder: the raw ``.prof`` (for snakeviz or pstats) and a ``.txt`` with the top
entries by cumulative and by own time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TOP = 30


def summary(source: str | cProfile.Profile, top: int = TOP) -> str:
    """The top entries of a profile, by cumulative time and by own time."""
    out = io.StringIO()
    stats = pstats.Stats(source, stream=out)
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        out.write(f"=== top {top} by {order}\n")
        stats.sort_stats(order).print_stats(top)
    return out.getvalue()


@contextmanager
def profiled(folder: Path | None, name: str) -> Iterator[None]:
    """Profile the block into ``folder/profile-<name>.{prof,txt}`` (nothing if None)."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(folder / f"profile-{name}.prof")
        (folder / f"profile-{name}.txt").write_text(summary(profile))


def command(folder: Path, name: str, cli_args: list[str]) -> list[str]:
    """``runtime <cli_args>`` under cProfile, writing ``folder/profile-<name>.prof``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"profile-{name}.prof"
    return [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "services.cli", *cli_args]


def summarise_files(folder: Path, prefix: str) -> list[Path]:
    """Write the ``.txt`` summary next to each ``profile-<prefix>*.prof`` that exists."""
    written = []
    for prof in sorted(folder.glob(f"profile-{prefix}*.prof")):
        text = prof.with_suffix(".txt")
        text.write_text(summary(str(prof)))
        written.append(text)
    return written
