"""Measure compatibility against a checkout of Kestra's own core test flows.

Nothing of Kestra is kept in this repository: point the harness at a checkout
(``core/src/test/resources/flows/valids`` and ``core/src/test/java``) and it

1. validates every flow with ``runtime flow validate``;
2. reads, from the Java tests, the end state (and task run count) each plain test
   asserts for a flow it runs without inputs (a heuristic: the first assertion on
   ``execution.getState().getCurrent()`` and ``getTaskRunList()`` size after the
   flow is named in a test method);
3. runs every flow with ``runtime flow test --flows <valids>`` (all flows deployed,
   as Kestra's test runner loads the whole folder) and compares.

Usage::

    python -m bench.kestra_compat KESTRA_CHECKOUT [--only ID ...] [--jobs 2] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

#: task types that are Kestra's test fixtures (Java classes of its test sources), not
#: core tasks: flows using them are out of scope
_TEST_TYPE = re.compile(r"^io\.kestra\.(core\.tasks\.test|core\.runners\.test)\.")
_STATE_ASSERT = re.compile(
    r"execution\w*\.getState\(\)\.getCurrent\(\)\)?,?\s*(?:is\(|\.isEqualTo\()\s*State\.Type\.(\w+)"
)
_SIZE_ASSERT = re.compile(
    r"execution\w*\.getTaskRunList\(\)(?:\.size\(\),\s*is\((\d+)\)|,\s*hasSize\((\d+)\)|\)\.hasSize\((\d+)\))"
)
_EXECUTE_FLOW = re.compile(r'@ExecuteFlow\("flows/valids/([\w.-]+?)\.ya?ml"\)')
_RUN_ONE = re.compile(r'runOne\w*\(\s*null,\s*"io\.kestra\.tests",\s*"([\w.-]+)"\s*[,)]')
_DRIVEN = re.compile(
    r"runOneUntilPaused|\(\w+, \w+\) ->|\.restart\(|\.replay\(|\.resume\(|FlowConcurrency"
)
#: where a test method starts (its annotations stay with it)
_METHOD = re.compile(r"(?=\n\s*@Test\b)|(?=\n\s*public void \w+\()")


@dataclass
class Expectation:
    state: str | None
    runs: int | None
    source: str


@dataclass
class Outcome:
    valid: bool
    problem: str
    state: str | None
    runs: int | None
    detail: str


def core_only(path: Path) -> bool:
    text = path.read_text()
    types = re.findall(r"type:\s*\"?([\w.]+)", text)
    return not any(_TEST_TYPE.match(t) for t in types)


def flow_id(path: Path) -> str:
    data = yaml.safe_load(path.read_text())
    return str(data["id"])


def needs_inputs(path: Path) -> bool:
    """Whether the flow has a required input without a default (its Kestra test
    passes values this harness does not know)."""
    data = yaml.safe_load(path.read_text()) or {}
    return any(
        isinstance(item, dict) and item.get("required", True) and item.get("defaults") is None
        for item in data.get("inputs") or []
    )


def expectations(java_root: Path) -> dict[str, Expectation]:
    """flow id -> the first plain assertion made on its execution."""
    found: dict[str, Expectation] = {}
    for source in sorted(java_root.rglob("*Test.java")):
        text = source.read_text()
        for chunk in _METHOD.split(text):
            ids = [m.group(1) for m in _EXECUTE_FLOW.finditer(chunk)]
            ids += [m.group(1) for m in _RUN_ONE.finditer(chunk)]
            started = len(re.findall(r"runOne\w*\(|\.emit\(", chunk))
            if not ids or _DRIVEN.search(chunk) or started > 1:
                continue  # inputs, resumes or concurrent runs: a scenario, not a plain run
            state = _STATE_ASSERT.search(chunk)
            size = _SIZE_ASSERT.search(chunk)
            if state is None and size is None:
                continue
            runs = next((int(g) for g in size.groups() if g), None) if size else None
            found.setdefault(
                ids[0],
                Expectation(state.group(1) if state else None, runs, source.name),
            )
    return found


async def _run(cmd: list[str], limit: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", "harness timeout"
    return proc.returncode or 0, out.decode(), err.decode()


async def outcome(path: Path, valids: Path, limit: float) -> Outcome:
    runtime = [sys.executable, "-m", "services.cli"]
    code, out, err = await _run([*runtime, "flow", "validate", str(path)], 60)
    if code != 0:
        first = (out or err).strip().splitlines()[0] if (out or err).strip() else "?"
        return Outcome(False, first.replace(str(valids) + "/", ""), None, None, "")
    cmd = [*runtime, "flow", "test", str(path), "--flows", str(valids), "--json"]
    code, out, err = await _run([*cmd, "--timeout", f"{int(limit)}s"], limit + 30)
    try:
        execution = json.loads(out)
    except ValueError:
        tail = err.strip().splitlines()[-1] if err.strip() else "no output"
        return Outcome(True, "", None, None, tail[:200])
    return Outcome(
        True, "", execution["state"]["current"], len(execution.get("taskRunList", [])), ""
    )


async def measure(root: Path, only: list[str], jobs: int, limit: float) -> list[dict[str, object]]:
    valids = root / "core/src/test/resources/flows/valids"
    expected = expectations(root / "core/src/test/java")
    files = sorted(p for p in valids.iterdir() if p.suffix in {".yml", ".yaml"})
    gate = asyncio.Semaphore(jobs)
    rows: list[dict[str, object]] = []

    async def one(path: Path) -> None:
        fid = flow_id(path)
        if only and fid not in only and path.name not in only:
            return
        core = core_only(path)
        async with gate:
            got = await outcome(path, valids, limit) if core else None
        want = expected.get(fid)
        verdict = "out of scope (test-only task types)"
        if got is not None:
            if not got.valid:
                verdict = "invalid"
            elif got.state is None and needs_inputs(path):
                verdict = "needs inputs (not driven)"
            elif want is None:
                verdict = "ran (no plain assertion to compare)"
            else:
                ok = (want.state is None or want.state == got.state) and (
                    want.runs is None or want.runs == got.runs
                )
                verdict = "as asserted" if ok else "differs"
        rows.append(
            {
                "file": path.name,
                "id": fid,
                "core": core,
                "expected": None if want is None else [want.state, want.runs, want.source],
                "got": None if got is None else [got.state, got.runs],
                "problem": "" if got is None else (got.problem or got.detail),
                "verdict": verdict,
            }
        )

    await asyncio.gather(*(one(p) for p in files))
    return sorted(rows, key=lambda r: str(r["file"]))


def markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| file | verdict | Kestra asserts | runtime got | problem |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['verdict']} | {r['expected'] or ''} | {r['got'] or ''} "
            f"| {str(r['problem']).replace('|', '/')} |"
        )
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["verdict"])] = counts.get(str(r["verdict"]), 0) + 1
    lines.append("")
    lines += [f"- {k}: {v}" for k, v in sorted(counts.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kestra", type=Path, help="a checkout of kestra-io/kestra")
    parser.add_argument("--only", nargs="*", default=[], help="flow ids or file names")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per flow run")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = asyncio.run(measure(args.kestra, args.only, args.jobs, args.timeout))
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
