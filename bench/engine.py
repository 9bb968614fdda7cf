"""Engine micro-benchmark: the cost of one decision (one event applied), no I/O.

Two flows: 40 sequential no-op tasks, and a ForEach over 100 values with one task
each. A task run costs two events here (the worker's RUNNING and its final
result), as it does in the server. The baseline, measured in the same run, is
what every executor pays per event anyway: encoding the execution with msgspec
and decoding it back (the store round trip without the store).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import msgspec

from runtime.flow.engine import apply
from runtime.flow.events import Event, ExecutionCreated, ExecutionEnded, Log, RunTask, WorkerResult
from runtime.flow.execution import Execution, new_execution
from runtime.flow.loader import build_flow
from runtime.flow.model import Flow
from runtime.flow.states import StateType

LOG = "io.kestra.plugin.core.log.Log"


def sequential_flow(tasks: int = 40) -> Flow:
    return build_flow(
        {
            "id": "sequential",
            "namespace": "bench",
            "tasks": [{"id": f"t{i}", "type": LOG, "message": "x"} for i in range(tasks)],
        }
    )


def foreach_flow(values: int = 100) -> Flow:
    return build_flow(
        {
            "id": "foreach",
            "namespace": "bench",
            "tasks": [
                {
                    "id": "each",
                    "type": "io.kestra.plugin.core.flow.ForEach",
                    "values": [str(i) for i in range(values)],
                    "concurrencyLimit": 1,
                    "tasks": [{"id": "work", "type": LOG, "message": "x"}],
                }
            ],
        }
    )


EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _run_engine(flow: Flow, execution_id: str) -> tuple[Execution, int]:
    """The pure engine alone, on a flow that asks only for tasks: each task answered at
    once with RUNNING then SUCCESS, as a worker reports. Returns the end and the number
    of events applied. (Flows that ask for more run through the real executor:
    services.dry_run.)"""
    execution = new_execution(
        id=execution_id, namespace=flow.namespace, flow_id=flow.id, flow_revision=1, at=EPOCH
    )
    events: deque[Event] = deque([ExecutionCreated(at=EPOCH)])
    applied = 0
    while events:
        execution, commands = apply(execution, flow, events.popleft())
        applied += 1
        for command in commands:
            if isinstance(command, RunTask):
                for state in (StateType.RUNNING, StateType.SUCCESS):
                    events.append(
                        WorkerResult(
                            at=EPOCH,
                            task_run_id=command.task_run_id,
                            attempt=command.attempt,
                            state=state,
                        )
                    )
            elif not isinstance(command, (Log, ExecutionEnded)):
                raise RuntimeError(f"the engine benchmark's flows ask only for tasks: {command!r}")
    return execution, applied


def _measure(flow: Flow, repeat: int) -> dict[str, float]:
    events = 0
    task_runs = 0
    elapsed = 0.0
    final: Execution | None = None
    for i in range(repeat):
        began = time.perf_counter()
        final, applied = _run_engine(flow, f"e{i}")
        elapsed += time.perf_counter() - began
        events += applied
        task_runs += len(final.task_run_list)
    if final is None or final.state.current.value != "SUCCESS":
        raise RuntimeError(f"benchmark flow {flow.id} did not succeed: {final}")
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(Execution)
    # Baseline: one encode+decode of the final execution per event of a run.
    per_run_events = events // repeat
    began = time.perf_counter()
    for _ in range(repeat):
        for _ in range(per_run_events):
            decoder.decode(encoder.encode(final))
    baseline = (time.perf_counter() - began) / (per_run_events * repeat)
    per_event = elapsed / events
    return {
        "executions": repeat,
        "events": events,
        "task_runs": task_runs,
        "decisions_per_s": events / elapsed,
        "us_per_event": per_event * 1e6,
        "us_per_task_run": elapsed / task_runs * 1e6,
        "baseline_codec_us_per_event": baseline * 1e6,
        "ratio_to_baseline": per_event / baseline,
        "target_us_per_transition": 100.0,
        "meets_target": per_event * 1e6 <= 100.0,
    }


def run(*, repeat: int = 20) -> dict[str, Any]:
    sequential = sequential_flow()
    foreach = foreach_flow()
    _measure(sequential, 2)  # warm-up
    return {
        "sequential_40": _measure(sequential, repeat),
        "foreach_100": _measure(foreach, max(1, repeat // 4)),
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        "| flow | decisions/s | µs per event | µs per task run | codec baseline µs/event "
        "| ratio | target ≤ 100 µs/transition |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result.items():
        rows.append(
            f"| {name} | {r['decisions_per_s']:,.0f} | {r['us_per_event']:.1f} "
            f"| {r['us_per_task_run']:.1f} | {r['baseline_codec_us_per_event']:.1f} "
            f"| {r['ratio_to_baseline']:.2f}x | {'met' if r['meets_target'] else 'missed'} |"
        )
    return "\n".join(rows)
