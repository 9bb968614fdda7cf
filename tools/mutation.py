"""``make mutation``: mutation testing of the engine and of the executor and worker.

mutmut changes the code one small mutation at a time (a flipped condition, a
dropped argument, an off-by-one) and runs the tests that call the mutated function;
a mutant no test fails has *survived*: a bug the suite would let through. The
groups, their modules and their tests are ``[tool.runtime.mutation]`` in
pyproject.toml; how mutmut runs is ``[tool.mutmut]``. This script first runs the
engine's property tests once under the longer ``mutation`` hypothesis profile (too
slow to run for each mutant: see docs/testing.md), then mutmut once per group from
scratch, then prints for each group the share of mutants killed (by a test, by mypy,
or by a timeout) and every survivor.

Exit status: 0 when every group reaches TARGET, 1 when one does not, 2 when a run
failed or left mutants unchecked.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
#: each group's last verdicts, copied out of mutants/ (which the next group's run reuses)
RESULTS = ROOT / "mutation-results"
PROPERTIES = "tests/unit/test_engine_properties.py"
#: the share of mutants a group's tests must kill
TARGET = 0.85
#: mutmut's verdicts that count as caught; "no tests" and "survived" do not
CAUGHT = ("killed", "caught by type check", "timeout", "segfault")
UNCAUGHT = ("survived", "no tests")

#: run in a child interpreter: mutmut with the group's modules and tests in place of
#: its own selection (mutmut reads one configuration per project)
MUTMUT = """
import json, sys
from mutmut import configuration
group = json.loads(sys.argv[1])
config = configuration.config()
config.only_mutate = group["modules"]
config.pytest_add_cli_args_test_selection = group["tests"]
from mutmut.__main__ import cli
sys.argv = ["mutmut", "run", *sys.argv[2:]]
cli()
"""


def groups() -> dict[str, dict[str, Any]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: dict[str, dict[str, Any]] = data["tool"]["runtime"]["mutation"]["groups"]
    return found


def main(argv: list[str] | None = None) -> int:
    known = groups()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", choices=sorted(known), help="mutate one group only")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="check the last run's survivors again (after adding tests)",
    )
    parser.add_argument("--report-only", action="store_true", help="only print the last result")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the survivors as docs/testing.md lists them (reasons kept from there)",
    )
    parser.add_argument(
        "--max-children", type=int, default=os.cpu_count() or 2, help="mutants run at once"
    )
    args = parser.parse_args(argv)
    chosen = [args.group] if args.group else list(known)
    if args.markdown:
        print(markdown(chosen, known))
        return 0
    started = time.monotonic()
    if not args.report_only:
        if "engine" in chosen and not args.survivors and properties() != 0:
            print("mutation: the property tests fail: fix them first", file=sys.stderr)
            return 2
        for name in chosen:
            again = survivors_of(name) if args.survivors else None
            if again == []:
                continue
            began = time.monotonic()
            code = run(known[name], names=again, max_children=args.max_children)
            if code != 0:
                print(f"mutation: mutmut run of {name} failed: status {code}", file=sys.stderr)
                return 2
            keep(name, known[name], merge=args.survivors)
            print(f"mutation: {name} took {(time.monotonic() - began) / 60:.1f} minutes")
    minutes = None if args.report_only else (time.monotonic() - started) / 60
    return report(chosen, known, diffs=args.diffs, minutes=minutes)


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


def run(group: dict[str, Any], *, names: list[str] | None, max_children: int) -> int:
    if names is None and MUTANTS.exists():
        shutil.rmtree(MUTANTS)  # from scratch: no verdict carried over from older code
    spec = json.dumps({"modules": group["modules"], "tests": group["tests"]})
    command = [sys.executable, "-c", MUTMUT, spec, "--max-children", str(max_children)]
    if names is not None:
        command += names  # mutmut checks the mutants it is given by name again
    return subprocess.run(command, cwd=ROOT, env=environment(), check=False).returncode


def keep(name: str, group: dict[str, Any], *, merge: bool) -> None:
    """Copy the group's verdicts out of mutants/, which the next group's run clears."""
    target = RESULTS / name
    if not merge and target.exists():
        shutil.rmtree(target)
    for module in group["modules"]:
        meta = MUTANTS / f"{module}.meta"
        if meta.exists():
            (target / module).parent.mkdir(parents=True, exist_ok=True)
            kept = target / f"{module}.meta"
            data = json.loads(meta.read_text())
            if merge and kept.exists():
                # a survivors-only run: its verdicts replace those of the mutants it checked
                old = json.loads(kept.read_text())
                fresh = {k: v for k, v in data["exit_code_by_key"].items() if v is not None}
                old["exit_code_by_key"].update(fresh)
                data = old
            kept.write_text(json.dumps(data))
            # the mutated source, for --diffs
            shutil.copy(MUTANTS / module, target / module)


def verdicts(name: str) -> dict[str, dict[str, str]]:
    """Module path -> mutant name -> mutmut's verdict, from the group's kept results."""
    from mutmut.stats import status_by_exit_code

    out: dict[str, dict[str, str]] = {}
    folder = RESULTS / name
    for meta in sorted(folder.rglob("*.py.meta")):
        path = meta.relative_to(folder).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out[path] = {mutant: status_by_exit_code[code] for mutant, code in codes.items()}
    return out


def survivors_of(name: str) -> list[str]:
    return [
        mutant
        for mutants in verdicts(name).values()
        for mutant, verdict in mutants.items()
        if verdict in UNCAUGHT
    ]


def report(
    chosen: list[str], known: dict[str, dict[str, Any]], *, diffs: bool, minutes: float | None
) -> int:
    status = 0
    print(
        f"{'group / module':<34}{'mutants':>8}{'killed':>8}{'mypy':>6}{'timeout':>8}"
        f"{'survived':>9}{'no test':>8}{'score':>8}"
    )
    survivors: list[tuple[str, str]] = []
    for name in chosen:
        by_module = verdicts(name)
        if not by_module:
            print(f"{name}: no results yet (run make mutation)")
            status = 2
            continue
        total: Counter[str] = Counter()
        lines = []
        for path, mutants in by_module.items():
            counts = Counter(mutants.values())
            total.update(counts)
            lines.append(_row(f"  {path}", counts))
            survivors += [
                (path, m)
                for m in sorted((m for m, v in mutants.items() if v in UNCAUGHT), key=_natural)
            ]
        print(_row(name, total))
        print("\n".join(lines))
        unchecked = sum(n for v, n in total.items() if v not in (*CAUGHT, *UNCAUGHT))
        if unchecked:
            print(f"  {unchecked} mutants of {name} were not checked (interrupted?)")
            status = 2
        elif _score(total) < TARGET:
            status = max(status, 1)
    print(f"\nsurvivors ({len(survivors)}):")
    for path, mutant in survivors:
        print(f"  {mutant}")
        if diffs:
            print("    " + _diff(path, mutant))
    if minutes is not None:
        print(f"\nmutation: {minutes:.1f} minutes")
    verdict = {0: "met", 1: "NOT met"}.get(status, "run incomplete")
    print(f"target: {TARGET:.0%} of each group's mutants killed: {verdict}")
    return status


@functools.cache
def _bodies(source: Path) -> dict[str, list[str]]:
    """Each function's lines in a mutated source (parsed once: it holds every mutant)."""
    import ast

    lines = source.read_text().splitlines()
    return {
        node.name: lines[node.lineno : node.end_lineno]
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _diff(path: str, mutant: str) -> str:
    """The mutant's changed lines, from the mutated source kept with the results."""
    import difflib

    for folder in RESULTS.iterdir():
        source = folder / path
        if not source.exists():
            continue
        bodies = _bodies(source)
        short = mutant.rsplit(".", 1)[-1]
        original = bodies.get(short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
        mutated = bodies.get(short)
        if original is not None and mutated is not None:
            changed = difflib.unified_diff(original, mutated, lineterm="", n=0)
            return " | ".join(
                line.strip() for line in changed if line[:1] in "+-" and line[:3] not in "+++---"
            )
    return "(source not kept)"


DOCS = ROOT / "docs" / "testing.md"


def markdown(chosen: list[str], known: dict[str, dict[str, Any]]) -> str:
    """The last result's survivors, by group, module and function, each with its
    changed lines; a function's reason is the one docs/testing.md gives it, if any
    (check it still holds), else REASON for the writer to fill in."""
    import re

    reasons: dict[tuple[str, str, str], str] = {}
    heading = ("", "")
    for line in DOCS.read_text().splitlines() if DOCS.exists() else []:
        if found := re.match(r"#### ([\w-]+): `([^`]+)`", line):
            heading = (found[1], found[2])
        elif found := re.match(r"- \*\*`([^`]+)`\*\* — (.*)", line):
            reasons[(*heading, found[1])] = found[2]
    out: list[str] = []
    for name in chosen:
        for path, mutants in verdicts(name).items():
            left = sorted((m for m, v in mutants.items() if v in UNCAUGHT), key=_natural)
            if not left:
                continue
            out += ["", f"#### {name}: `{path}`", ""]
            by_function: dict[str, list[str]] = {}
            for mutant in left:
                by_function.setdefault(_function(mutant), []).append(mutant)
            for function, names in by_function.items():
                reason = reasons.get((name, path, function), "REASON")
                out.append(f"- **`{function}`** — {reason}")
                for mutant in names:
                    number = mutant.rsplit("_", 1)[-1]
                    note = " (no test reaches it)" if mutants[mutant] == "no tests" else ""
                    out.append(f"  - `{number}`{note}: `{_arrow(_diff(path, mutant))}`")
    return "\n".join(out).strip()


def _function(mutant: str) -> str:
    """``m.xǁClassǁmethod__mutmut_3`` -> ``Class.method``; ``m.x_f__mutmut_3`` -> ``f``."""
    short = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    if short.startswith("xǁ"):
        return short.removeprefix("xǁ").replace("ǁ", ".")
    return short.removeprefix("x_")


def _arrow(diff: str, width: int = 150) -> str:
    parts = diff.split(" | ")
    if len(parts) == 2 and parts[0].startswith("-") and parts[1].startswith("+"):
        diff = " ⟶ ".join(parts)
    return diff if len(diff) <= width else diff[:width]


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
