"""The UI on a large installation: how long the executions list takes with 100,000
executions stored, and an execution page with 1,000 task runs, in Chromium.

    python -m bench.ui                      # 100,000 executions, 1,000 task runs
    python -m bench.ui --executions 5000    # smaller, to try it

It fills a fresh SQLite data folder through the backend's own store (executions of
three flows over 30 days, mixed states, labels), starts ``runtime run --all`` on it on
a free port, and times, over ``--repeat`` loads each, the navigation to the moment the
page shows its data: the list's first page of rows with its total, the Gantt with
every task run. It needs Chromium (``.ci/services.d/chromium.sh``) and prints a
markdown table; ``--json`` writes the figures too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from runtime.config import Config
from runtime.flow.execution import Attempt, Execution, TaskRun, new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import History, State, StateType
from services.standalone import make_backend

NS = "bench.ui"
FLOWS = ("nightly_load", "hourly_sync", "report")
BIG_FLOW = f"""id: big
namespace: {NS}
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: "{{{{ range(1, 1000) }}}}"
    tasks:
      - id: step
        type: io.kestra.plugin.core.log.Log
        message: "{{{{ taskrun.value }}}}"
"""
SMALL_FLOW = """id: {id}
namespace: {ns}
tasks:
  - id: extract
    type: io.kestra.plugin.core.debug.Return
    format: x
  - id: load
    type: io.kestra.plugin.core.log.Log
    message: done
"""
ENDS = (StateType.SUCCESS,) * 8 + (StateType.FAILED, StateType.WARNING, StateType.KILLED)


def _state(start: datetime, end_state: StateType, seconds: float) -> State:
    return State(
        end_state,
        (
            History(StateType.CREATED, start),
            History(StateType.RUNNING, start + timedelta(milliseconds=20)),
            History(end_state, start + timedelta(seconds=seconds)),
        ),
    )


def _small(rng: random.Random, now: datetime) -> Execution:
    flow_id = rng.choice(FLOWS)
    start = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
    end_state = rng.choice(ENDS)
    execution = new_execution(
        id=new_id(),
        namespace=NS,
        flow_id=flow_id,
        flow_revision=1,
        at=start,
        labels={"team": rng.choice(("blue", "red", "green"))},
    )
    runs = []
    for i, task_id in enumerate(("extract", "load")):
        state = _state(start + timedelta(seconds=i), end_state, 1.0)
        runs.append(
            TaskRun(
                id=new_id(),
                execution_id=execution.id,
                namespace=NS,
                flow_id=flow_id,
                task_id=task_id,
                state=state,
                attempts=(Attempt(state=state),),
            )
        )
    return Execution(
        **{
            **{f: getattr(execution, f) for f in execution.__struct_fields__},
            "state": _state(start, end_state, 2.5),
            "task_run_list": tuple(runs),
        }
    )


def _big(now: datetime, task_runs: int) -> Execution:
    start = now - timedelta(minutes=5)
    execution = new_execution(id=new_id(), namespace=NS, flow_id="big", flow_revision=1, at=start)
    parent = TaskRun(
        id=new_id(),
        execution_id=execution.id,
        namespace=NS,
        flow_id="big",
        task_id="each",
        state=_state(start, StateType.SUCCESS, 200),
    )
    runs = [parent]
    for i in range(task_runs - 1):
        state = _state(start + timedelta(seconds=i * 0.2), StateType.SUCCESS, 0.15)
        runs.append(
            TaskRun(
                id=new_id(),
                execution_id=execution.id,
                namespace=NS,
                flow_id="big",
                task_id="step",
                parent_task_run_id=parent.id,
                value=str(i + 1),
                state=state,
                attempts=(Attempt(state=state),),
            )
        )
    return Execution(
        **{
            **{f: getattr(execution, f) for f in execution.__struct_fields__},
            "state": _state(start, StateType.SUCCESS, 200.5),
            "task_run_list": tuple(runs),
        }
    )


async def fill(data_dir: Path, executions: int, task_runs: int) -> str:
    """Stores the flows and the executions; returns the big execution's id."""
    config = Config(data_dir=str(data_dir))
    backend = make_backend(config)
    await backend.start()
    try:
        for flow_id in FLOWS:
            await backend.flows.deploy(NS, flow_id, SMALL_FLOW.format(id=flow_id, ns=NS))
        await backend.flows.deploy(NS, "big", BIG_FLOW)
        rng = random.Random(16)
        now = datetime.now(UTC)
        done = 0
        while done < executions:
            batch = min(2000, executions - done)
            async with backend.transaction() as tx:
                for _ in range(batch):
                    await tx.executions.save(_small(rng, now))
            done += batch
            print(f"\rstored {done}/{executions} executions", end="", file=sys.stderr)
        print(file=sys.stderr)
        big = _big(now, task_runs)
        async with backend.transaction() as tx:
            await tx.executions.save(big)
        return big.id
    finally:
        await backend.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUNTIME_DATA_DIR": str(data_dir), "RUNTIME_WEBSERVER_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "--all"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.2)


def measure(
    url: str,
    big_id: str,
    repeat: int,
    chromium: str,
    task_runs: int,
    screenshots: Path | None = None,
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {"executions list": [], "execution page": []}
    # the API calls alone, to tell the server's share from the browser's
    api_calls = {
        "executions list": "/api/v1/executions/search?page=1&size=25",
        "execution page": f"/api/v1/executions/{big_id}",
    }
    api: dict[str, list[float]] = {name: [] for name in api_calls}
    for _ in range(repeat):
        for name, path in api_calls.items():
            began = time.perf_counter()
            with urllib.request.urlopen(url + path, timeout=60) as response:
                response.read()
            api[name].append(time.perf_counter() - began)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        for _ in range(repeat):
            # from a blank page each time: the figure is the page's own, not the
            # previous one's unloading
            page.goto("about:blank")
            began = time.perf_counter()
            page.goto(f"{url}/ui/executions")
            page.locator("table.grid tbody tr").nth(24).wait_for()
            page.get_by_text("in all").wait_for()
            figures["executions list"].append(time.perf_counter() - began)
            page.goto("about:blank")
            began = time.perf_counter()
            page.goto(f"{url}/ui/executions/{big_id}")
            # every task run is in the Gantt (only the rows in view are drawn)
            page.locator(f".gantt[data-rows='{task_runs}'] .gantt-row").first.wait_for()
            figures["execution page"].append(time.perf_counter() - began)
        total = page.evaluate("fetch('/api/v1/executions/search?size=1').then(r => r.json())")
        if screenshots:
            screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshots / "large-execution-gantt.png"))
            for path, name, ready in (
                ("/ui/", "large-dashboard", "canvas"),
                ("/ui/executions", "large-executions", "table.grid tbody tr"),
            ):
                page.goto(url + path)
                page.locator(ready).first.wait_for()
                page.wait_for_timeout(300)
                page.screenshot(path=str(screenshots / f"{name}.png"))
        browser.close()
    return {
        "stored": total["total"],
        "pages": {
            name: {
                "median_s": round(statistics.median(values), 3),
                "max_s": round(max(values), 3),
                "runs": [round(v, 3) for v in values],
                "api_median_s": round(statistics.median(api[name]), 3),
            }
            for name, values in figures.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--task-runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--screenshots", type=Path, help="save the pages measured here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        data_dir = Path(tmp)
        began = time.perf_counter()
        big_id = asyncio.run(fill(data_dir, args.executions, args.task_runs))
        filled = time.perf_counter() - began
        port = _free_port()
        process = _serve(data_dir, port)
        try:
            result = measure(
                f"http://127.0.0.1:{port}",
                big_id,
                args.repeat,
                args.chromium,
                args.task_runs,
                args.screenshots,
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    result.update(executions=args.executions, task_runs=args.task_runs, fill_s=round(filled, 1))
    print(f"| page ({result['stored']} executions stored) | median | max | its API call alone |")
    print("|---|---|---|---|")
    for name, figure in result["pages"].items():
        label = f"{name} ({args.task_runs} task runs)" if name == "execution page" else name
        print(
            f"| {label} | {figure['median_s']} s | {figure['max_s']} s "
            f"| {figure['api_median_s']} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
