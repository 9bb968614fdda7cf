"""``make mutation``: mutation testing of the engine and of the executor and worker.

mutmut changes the code one small mutation at a time (a flipped condition, a
dropped argument, an off-by-one) and runs the tests that call the mutated function;
a mutant no test fails has *survived*: a bug the suite would let through. What it
mutates and which tests it may run is ``[tool.mutmut]`` in pyproject.toml. This
script first runs the engine's property tests once under the longer ``mutation``
hypothesis profile (too slow to run for each mutant: see docs/testing.md), then
mutmut from scratch, then prints for each group the share of mutants killed (by a
test, by mypy, or by a timeout) and every survivor.

Exit status: 0 when every group reaches TARGET, 1 when one does not, 2 when the run
itself failed or left mutants unchecked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
PROPERTIES = "tests/unit/test_engine_properties.py"
#: group -> the folder its mutated modules live in (the modules: [tool.mutmut] only_mutate)
GROUPS = {"engine": "runtime/", "executor+worker": "services/"}
#: the share of mutants a group's tests must kill
TARGET = 0.85
#: mutmut's verdicts that count as caught; "no tests" and "survived" do not
CAUGHT = ("killed", "caught by type check", "timeout", "segfault")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=sorted(GROUPS), help="mutate one group only")
    parser.add_argument(
        "--keep", action="store_true", help="reuse the last run's results (mutants/)"
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="check the last run's survivors again (after adding tests); implies --keep",
    )
    parser.add_argument("--report-only", action="store_true", help="only print the last result")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--max-children", type=int, default=os.cpu_count() or 2, help="mutants run at once"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    if not args.report_only:
        engine = args.group in (None, "engine")
        if engine and not args.survivors and properties() != 0:
            print("mutation: the property tests fail: fix them first", file=sys.stderr)
            return 2
        again = survivors_of(args.group) if args.survivors else None
        if again == []:
            print("mutation: no survivors to check again")
        else:
            code = run(
                args.group,
                keep=args.keep or args.survivors,
                names=again,
                max_children=args.max_children,
            )
            if code != 0:
                print(f"mutation: mutmut run failed with status {code}", file=sys.stderr)
                return 2
    minutes = (time.monotonic() - started) / 60
    return report(args.group, diffs=args.diffs, minutes=None if args.report_only else minutes)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    # mutmut calls the type checker by name: the one of this virtualenv
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RUNTIME_HYPOTHESIS_PROFILE"] = "mutation"
    return env


def properties() -> int:
    """The property tests, once, with the mutation profile's longer search."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", PROPERTIES]
    return subprocess.run(command, cwd=ROOT, env=environment(), check=False).returncode


def survivors_of(group: str | None) -> list[str]:
    return [
        name
        for path, mutants in verdicts().items()
        if group is None or path.startswith(GROUPS[group])
        for name, verdict in mutants.items()
        if verdict in ("survived", "no tests")
    ]


def run(group: str | None, *, keep: bool, names: list[str] | None, max_children: int) -> int:
    if not keep and MUTANTS.exists():
        shutil.rmtree(MUTANTS)  # a fresh run: no verdict carried over from older code
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    if names is not None:
        command += names
    elif group is not None:
        command.append(GROUPS[group].rstrip("/").replace("/", ".") + ".*")
    return subprocess.run(command, cwd=ROOT, env=environment(), check=False).returncode


def verdicts() -> dict[str, dict[str, str]]:
    """Module path -> mutant name -> mutmut's verdict, from mutmut's result files."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, dict[str, str]] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        path = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out[path] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return out


def report(group: str | None, *, diffs: bool, minutes: float | None) -> int:
    if not MUTANTS.exists():
        print("mutation: no results yet: run `make mutation`", file=sys.stderr)
        return 2
    by_module = verdicts()
    status = 0
    survivors: list[str] = []
    print(
        f"{'group / module':<34}{'mutants':>8}{'killed':>8}{'mypy':>6}{'timeout':>8}"
        f"{'survived':>9}{'no test':>8}{'score':>8}"
    )
    for name, folder in GROUPS.items():
        if group is not None and name != group:
            continue
        total: Counter[str] = Counter()
        lines = []
        for path, mutants in by_module.items():
            if not path.startswith(folder):
                continue
            counts = Counter(mutants.values())
            total.update(counts)
            lines.append(_row(f"  {path}", counts))
            survivors += sorted(
                (m for m, v in mutants.items() if v in ("survived", "no tests")), key=_natural
            )
        print(_row(name, total))
        print("\n".join(lines))
        unchecked = sum(
            n for verdict, n in total.items() if verdict not in (*CAUGHT, "survived", "no tests")
        )
        if unchecked:
            print(f"  {unchecked} mutants of {name} were not checked (interrupted?)")
            status = 2
        elif _score(total) < TARGET:
            status = max(status, 1)
    print(f"\nsurvivors ({len(survivors)}):")
    for mutant in survivors:
        print(f"  {mutant}")
        if diffs:
            shown = subprocess.run(
                [sys.executable, "-m", "mutmut", "show", mutant],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            print("    " + "\n    ".join(shown.stdout.strip().splitlines()[2:]))
    if not diffs and survivors:
        print("  (see one: .venv/bin/mutmut show NAME; all: make mutation-report)")
    if minutes is not None:
        print(f"\nmutation: {minutes:.1f} minutes")
    print(
        f"target: {TARGET:.0%} of each group's mutants killed: "
        + ("met" if status == 0 else "NOT met" if status == 1 else "run incomplete")
    )
    return status


def _score(counts: Counter[str]) -> float:
    total = sum(counts.values())
    return sum(counts[v] for v in CAUGHT) / total if total else 1.0


def _row(label: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    return (
        f"{label:<34}{total:>8}{counts['killed']:>8}{counts['caught by type check']:>6}"
        f"{counts['timeout'] + counts['segfault']:>8}{counts['survived']:>9}"
        f"{counts['no tests']:>8}{_score(counts):>8.1%}"
    )


def _natural(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("_")
    return base, int(number) if number.isdigit() else 0


if __name__ == "__main__":
    sys.exit(main())
