"""Faults of a distributed deployment on Kafka: two executors and two workers, each its
own `runtime run` process, 200 executions with a Sleep task, and one fault mid-run:
kill -9 of an executor (its partitions move to the other, which restores their state
from the changelog), kill -9 of a worker (its running jobs, never committed, come back
to the worker that takes its partitions), or a graceful restart of the broker.

Every execution ends SUCCESS and every task run has exactly one successful attempt.

Each runs on the broker that can do what it checks:
- the kills need the group to expire a killed member: Tansu does, noida-db never does
  (its partitions stay with the dead process); Tansu has no transactions, so they run
  at least once (``backend.exactly_once: false``);
- the broker restart needs the broker to keep its data: noida-db should (exactly
  once), but lost unconsumed queue records in two runs of three (a non-strict xfail);
  Tansu's memory storage comes back empty.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import Counter
from pathlib import Path
from subprocess import Popen

import pytest

from backends.kafka.backend import KafkaBackend
from backends.kafka.settings import KafkaSettings
from backends.kafka.testing import NOIDA_DB, TANSU, BrokerProcess, running_broker
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from services.flows import deploy_source
from services.submit import submit_in
from tests.faults.test_postgres_faults import Processes, processes, until

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

NAMESPACE = "kafkafaults"
FLOW = "naps"
TASK_IDS = ["first", "nap", "done"]
EXECUTIONS = 200
FLOW_SOURCE = f"""
id: {FLOW}
namespace: {NAMESPACE}
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ execution.id }}}}"
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.3S
  - id: done
    type: io.kestra.plugin.core.log.Log
    message: "done {{{{ execution.id }}}}"
"""

NEVER_EXPIRES = "noida-db never expires a killed member: its partitions stay with the dead process"
EMPTIED = "Tansu's memory storage comes back empty from a restart"
RESTART_LOSES = (
    "after a graceful restart the components' fetches were answered 'offset out of"
    " range' on queue partitions (unconsumed records gone) and transactions stalled"
    " until given up; some executions then never end"
)


def _environment(settings: KafkaSettings, data: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RUNTIME_") and name != "PYTHONASYNCIODEBUG"
    }
    env.update(
        RUNTIME_BACKEND_TYPE="kafka",
        RUNTIME_BACKEND_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        RUNTIME_BACKEND_TOPIC_PREFIX=settings.topic_prefix,
        RUNTIME_BACKEND_PARTITIONS=str(settings.partitions),
        RUNTIME_BACKEND_EXACTLY_ONCE="true" if settings.exactly_once else "false",
        RUNTIME_DATA_DIR=str(data),
        RUNTIME_WORKER_CONCURRENCY="4",
        RUNTIME_WORKER_HEARTBEAT_SECONDS="0.5",
        RUNTIME_LIVENESS_WORKER_TIMEOUT_SECONDS="3",
        RUNTIME_LIVENESS_INTERVAL_SECONDS="0.5",
        RUNTIME_LOG_LEVEL="INFO",
        # required on Kafka (issue 14); executors and workers never read the search store
        RUNTIME_SEARCH_TYPE="elasticsearch",
        RUNTIME_SEARCH_HOSTS="http://127.0.0.1:9",
    )
    return env


async def _submit(settings: KafkaSettings) -> list[str]:
    """Deploy the flow and submit the executions in one unit of work (one by one takes
    ~40 s on Tansu, one acknowledged record at a time)."""
    backend = KafkaBackend(settings)
    await backend.start()
    try:
        record = await deploy_source(backend.flows, FLOW_SOURCE)
        now = backend.clock()
        executions = [
            new_execution(
                id=new_id(),
                namespace=NAMESPACE,
                flow_id=FLOW,
                flow_revision=record.revision,
                at=now,
            )
            for _ in range(EXECUTIONS)
        ]
        async with backend.transaction() as tx:
            for execution in executions:
                await submit_in(tx, execution, now=now)
    finally:
        await backend.stop()
    return [e.id for e in executions]


def check_task_runs(execution: Execution) -> None:
    where = f"execution {execution.id}"
    assert execution.state.current is StateType.SUCCESS, (where, execution.state.current)
    assert [run.task_id for run in execution.task_run_list] == TASK_IDS, where
    for run in execution.task_run_list:
        states = [attempt.state.current for attempt in run.attempts]
        assert states.count(StateType.SUCCESS) == 1, (where, run.task_id, states)
        assert states[-1] is StateType.SUCCESS, (where, run.task_id, states)
        successes = [h for h in run.state.histories if h.state is StateType.SUCCESS]
        assert len(successes) == 1, (where, run.task_id, run.state.histories)


async def _executions(reader: KafkaBackend) -> list[Execution]:
    return await reader.executions.search(namespace=NAMESPACE, flow_id=FLOW, limit=10_000)


def _summary(executions: list[Execution]) -> str:
    states = Counter(e.state.current.value for e in executions)
    waiting = [
        (e.id, [(r.task_id, r.state.current.value) for r in e.task_run_list])
        for e in executions
        if not e.state.terminated
    ]
    return f"{len(executions)} executions, states {dict(states)}; not ended: {waiting[:5]}"


async def _fault(
    scenario: str, group: Processes, broker: BrokerProcess, victims: dict[str, Popen[bytes]]
) -> None:
    if scenario == "kill-executor":
        await asyncio.to_thread(group.kill, victims["executor"])
    elif scenario == "kill-worker":
        await asyncio.to_thread(group.kill, victims["worker"])
    else:
        await asyncio.to_thread(broker.restart)


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        pytest.param(
            "kill-executor",
            NOIDA_DB,
            marks=pytest.mark.xfail(strict=True, reason=f"{NOIDA_DB}: {NEVER_EXPIRES}"),
        ),
        pytest.param("kill-executor", TANSU),
        pytest.param(
            "kill-worker",
            NOIDA_DB,
            marks=pytest.mark.xfail(strict=True, reason=f"{NOIDA_DB}: {NEVER_EXPIRES}"),
        ),
        pytest.param("kill-worker", TANSU),
        pytest.param(
            "restart-broker",
            NOIDA_DB,
            # not strict: it passed one run of three; the fault shows by timing
            marks=pytest.mark.xfail(strict=False, reason=f"{NOIDA_DB}: {RESTART_LOSES}"),
        ),
        pytest.param(
            "restart-broker",
            TANSU,
            marks=pytest.mark.xfail(strict=True, reason=f"{TANSU}: {EMPTIED}"),
        ),
    ],
)
async def test_a_fault_mid_run_loses_nothing(scenario: str, kind: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with running_broker(kind, data_dir=tmp_path / kind) as broker:
        settings = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=f"f{secrets.token_hex(4)}.",
            partitions=4,
            exactly_once=kind != TANSU,
        )
        env = _environment(settings, data)
        async with asyncio.timeout(140), processes(tmp_path, env) as group:
            began = time.monotonic()
            ids = await _submit(settings)
            submitted = time.monotonic() - began
            executors = [group.start(f"executor-{n}", "run", "executor") for n in (1, 2)]
            workers = [group.start(f"worker-{n}", "run", "worker") for n in (1, 2)]
            reader = KafkaBackend(settings)
            await reader.start()
            try:

                async def some_ended() -> bool:
                    ended = [e for e in await _executions(reader) if e.state.terminated]
                    return len(ended) >= 10

                await until(some_ended, 60, "the first executions ended", group)
                executions = await _executions(reader)
                assert sum(e.state.terminated for e in executions) < EXECUTIONS, (
                    "the work was done before the fault"
                )
                faulted = time.monotonic() - began
                await _fault(
                    scenario, group, broker, {"executor": executors[0], "worker": workers[0]}
                )

                async def all_ended() -> bool:
                    executions = await _executions(reader)
                    return len(executions) == EXECUTIONS and all(
                        e.state.terminated for e in executions
                    )

                try:
                    await until(all_ended, 75, "every execution ended", group)
                except AssertionError as exc:
                    raise AssertionError(f"{_summary(await _executions(reader))}\n{exc}") from None
                executions = await _executions(reader)
                print(
                    f"{scenario} on {kind}: submitted {submitted:.1f} s, fault at"
                    f" {faulted:.1f} s, all ended at {time.monotonic() - began:.1f} s"
                )
            finally:
                await reader.stop()
    assert sorted(e.id for e in executions) == sorted(ids)
    for execution in executions:
        check_task_runs(execution)
