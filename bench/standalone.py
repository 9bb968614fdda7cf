"""End-to-end inside one process on SQLite: the standalone server's cost per task.

* ``sequential``: 40 sequential Return tasks, from submission to the execution's end.
* ``fib``: Windmill's 40 x fibo(10), each a PythonFunction task in the worker's pool.

Baseline, measured in the same run on the same disk: the durable-commit floor, a
bare ``BEGIN IMMEDIATE; INSERT; COMMIT`` through aiosqlite with synchronous=FULL.
A task costs several such commits (the job, the worker's result, the engine's
next step), so the per-task ratio to that floor is the figure to watch.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

from runtime.config import load_config
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from services.executor import submit
from services.flows import deploy_source
from services.standalone import Server

SEQUENTIAL = "id: sequential\nnamespace: bench\ntasks:\n" + "".join(
    f"  - id: t{i}\n    type: io.kestra.plugin.core.debug.Return\n    format: '{i}'\n"
    for i in range(40)
)
FIB = """
id: fib
namespace: bench
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: "{{ range(1, 40) }}"
    tasks:
      - id: fibo
        type: io.kestra.plugin.runtime.PythonFunction
        function: "bench.fib:fibo"
        args: [10]
"""


async def floor(folder: Path, rounds: int = 200) -> float:
    """Median seconds of one durable commit of one small row."""
    db = await aiosqlite.connect(folder / "floor.db", isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        samples = []
        for _ in range(rounds):
            began = time.perf_counter()
            await db.execute("BEGIN IMMEDIATE")
            await db.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 200,))
            await db.execute("COMMIT")
            samples.append(time.perf_counter() - began)
        return statistics.median(samples)
    finally:
        await db.close()


async def run_once(
    server: Server, namespace: str, flow_id: str, limit_s: float = 120.0
) -> tuple[float, Execution]:
    """Seconds from submitting one execution of the flow to its end (it must succeed)."""
    backend = server.backend
    assert server.executor is not None
    done = asyncio.Event()
    execution_id = new_id()

    def observe(execution: Execution) -> None:
        if execution.id == execution_id and execution.state.terminated:
            done.set()

    server.executor.listeners.append(observe)
    record = await backend.flows.get(namespace, flow_id)
    assert record is not None
    execution = new_execution(
        id=execution_id,
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=record.revision,
        at=backend.clock(),
    )
    began = time.perf_counter()
    await submit(backend, execution)
    async with asyncio.timeout(limit_s):
        await done.wait()
    elapsed = time.perf_counter() - began
    server.executor.listeners.remove(observe)
    final = await backend.executions.get(execution_id)
    assert final is not None
    if final.state.current is not StateType.SUCCESS:
        raise RuntimeError(f"benchmark flow {flow_id} ended {final.state.current.value}")
    return elapsed, final


async def run(*, repeat: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as scratch:
        folder = Path(scratch)
        config = load_config(None, {"RUNTIME_DATA_DIR": str(folder / "data")})
        commit = await floor(folder)
        server = Server(config, watch=False)
        async with server:
            await deploy_source(server.backend.flows, SEQUENTIAL)
            await deploy_source(server.backend.flows, FIB)
            await run_once(server, "bench", "sequential")  # warm-up
            seq = sorted(
                [(await run_once(server, "bench", "sequential"))[0] for _ in range(repeat)]
            )
            await run_once(server, "bench", "fib")
            fib = sorted([(await run_once(server, "bench", "fib"))[0] for _ in range(repeat)])
    seq_median = statistics.median(seq)
    per_task = seq_median / 40
    return {
        "floor_commit_ms": commit * 1e3,
        "sequential_40": {
            "median_s": seq_median,
            "best_s": seq[0],
            "per_task_ms": per_task * 1e3,
            "per_task_commits_of_floor": per_task / commit,
            "target_per_task_ms": 2.0,
            "meets_target": per_task * 1e3 <= 2.0,
        },
        "fib_40x10": {"median_s": statistics.median(fib), "best_s": fib[0]},
    }


def table(result: dict[str, Any]) -> str:
    seq, fib = result["sequential_40"], result["fib_40x10"]
    return "\n".join(
        [
            "| measure | result | baseline (same run) | ratio | target |",
            "|---|---|---|---|---|",
            f"| 40 sequential Return tasks, SQLite, one process | {seq['median_s'] * 1e3:.0f} ms "
            f"({seq['per_task_ms']:.2f} ms/task) "
            f"| durable commit {result['floor_commit_ms']:.2f} ms "
            f"| {seq['per_task_commits_of_floor']:.1f} commits/task | ≤ 2 ms/task: "
            f"{'met' if seq['meets_target'] else 'missed'} |",
            f"| 40 x fibo(10), PythonFunction in the pool | {fib['median_s'] * 1e3:.0f} ms | | | |",
        ]
    )
