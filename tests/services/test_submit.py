"""The one way into the executor (services.submit) and the one place its
preconditions live (the engine's refusals)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from backends.memory import MemoryBackend
from runtime.flow.engine import EngineError, apply, restart_refusal
from runtime.flow.events import ExecutionCreated, Restart
from runtime.flow.execution import new_execution
from runtime.messages import EXECUTOR_QUEUE, decode_event
from services.flows import FlowCache, deploy_source
from services.submit import submit
from tests.services.server_helpers import NS, returns

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.asyncio
async def test_a_later_start_is_stored_now_and_hidden_from_the_executor_until_then() -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, returns("later"))
    now = backend.clock()
    execution = new_execution(id="ex-later", namespace=NS, flow_id="later", flow_revision=1, at=now)
    await submit(backend, execution, start_at=now + timedelta(hours=1))
    assert await backend.executions.get("ex-later") is not None
    assert await backend.queues.claim(EXECUTOR_QUEUE, "probe", 10, 30.0) == []
    assert await backend.queues.next_available(EXECUTOR_QUEUE) == now + timedelta(hours=1)

    await submit(
        backend, new_execution(id="ex-now", namespace=NS, flow_id="later", flow_revision=1, at=now)
    )
    [message] = await backend.queues.claim(EXECUTOR_QUEUE, "probe", 10, 30.0)
    assert message.key == "ex-now"
    assert isinstance(decode_event(message.payload), ExecutionCreated)


@pytest.mark.asyncio
async def test_the_api_s_refusal_and_the_engine_s_are_the_same_rule() -> None:
    backend = MemoryBackend()
    record = await deploy_source(backend.flows, returns("rule"))
    flow = FlowCache(backend).parse(record)
    now = backend.clock()
    execution = new_execution(id="ex", namespace=NS, flow_id="rule", flow_revision=1, at=now)
    running, _ = apply(execution, flow, ExecutionCreated(at=now))
    refusal = restart_refusal(running)
    assert refusal is not None
    with pytest.raises(EngineError) as raised:
        apply(running, flow, Restart(at=now))
    assert str(raised.value) == refusal


def test_only_the_entry_module_and_the_components_publish_to_the_executor() -> None:
    """Starting executions and sending events goes through services.submit; the
    executor (its outbox) and the worker (results) are the executor's own traffic, and
    the dry run plays the workers."""
    allowed = {
        "services/dry_run.py",
        "services/submit.py",
        "services/executor.py",
        "services/worker",
    }
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if any(relative == a or relative.startswith(a + "/") for a in allowed):
            continue
        # Reading the queue (its depth, on the instance page) is anyone's business.
        if re.search(r"publish\(\s*EXECUTOR_QUEUE", path.read_text()):
            offenders.append(relative)
    assert offenders == [], f"publish through services.submit instead: {offenders}"
