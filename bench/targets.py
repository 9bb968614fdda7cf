"""Measure names and the bounds of DESIGN §8 the harness checks."""

from __future__ import annotations

FLOOR = "floor"
SEQUENTIAL = "sequential"
FIB = "fib"
THROUGHPUT = "throughput"
ACTORS = "actors"
ENGINE = "engine"

#: 40 sequential no-op tasks on PostgreSQL, end to end, worker in its own process
SEQUENTIAL_TOTAL_MS = 200.0
#: the per-task cost of that flow as a multiple of the durable hop
PER_TASK_FLOORS = 4.0
#: sustained executions/s of the 2-task flow on PostgreSQL...
THROUGHPUT_PER_S = 500.0
#: ...with this p99, request sent to execution ended
P99_BOUND_MS = 250.0
#: a rate is sustained when executions end at this share of the offered rate or more
KEEP_UP = 0.90
