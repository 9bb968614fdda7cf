"""The API driven through Kestra's official Python SDK (PyPI ``kestrapy``), as a new
user would: ``KestraClient(host=...)``, tenant ``main``, against the server on a real
socket. Every answer is parsed by the SDK's own models; ``strict`` below also holds
each one to the model's schema (the SDK quietly falls back to an unchecked model
when validation fails, which would hide a wrong shape)."""

from __future__ import annotations

import asyncio
import io
import warnings
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pytest

from backends.storage_local import LocalStorage
from runtime.config import Config, WebserverConfig
from services.standalone import Server
from tests.services.server_helpers import settings
from tests.webserver.helpers import make_backend

with warnings.catch_warnings():
    # the SDK's models shadow a pydantic attribute (`validate`) and say so on import
    warnings.simplefilter("ignore")
    from kestrapy import KestraClient
    from kestrapy.base_api import BaseApi
    from kestrapy.exceptions import (
        BadRequestException,
        ConflictException,
        NotFoundException,
        UnprocessableEntityException,
    )
    from kestrapy.models import (
        BulkResponse,
        Execution,
        ExecutionControllerExecutionResponse,
        ExecutionControllerSetLabelsByIdsRequest,
        ExecutionControllerStateRequest,
        FlowForExecution,
        FlowGraph,
        FlowWithSource,
        IdWithNamespace,
        KVControllerKvDetail,
        KVEntry,
        Label,
        LogEntry,
        Namespace,
        PagedResultsApiTriggerAndState,
        PagedResultsFlow,
        PagedResultsKVEntry,
        PagedResultsNamespace,
        QueryFilter,
        QueryFilterField,
        QueryFilterOp,
        StateType,
        TriggerControllerApiTriggerId,
        TriggerControllerSetDisabledRequest,
        WebhookResponse,
    )

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
NS = "sdk.demo"
TENANT = "main"

HELLO = f"""id: hello
namespace: {NS}
labels:
  team: data
inputs:
  - id: who
    type: STRING
  - id: data
    type: FILE
tasks:
  - id: greet
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ inputs.who }}}} sent {{{{ read(inputs.data) }}}}"
  - id: answer
    type: io.kestra.plugin.core.debug.Return
    format: "hello {{{{ inputs.who }}}}"
"""
NAP = f"""id: nap
namespace: {NS}
tasks:
  - id: sleep
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT60S
"""
BROKEN = f"""id: broken
namespace: {NS}
tasks:
  - id: fail
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: on purpose
"""
APPROVAL = f"""id: approval
namespace: {NS}
tasks:
  - id: wait
    type: io.kestra.plugin.core.flow.Pause
    onResume:
      - id: approved
        type: BOOLEAN
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: "approved={{{{ outputs.wait.onResume.approved }}}}"
"""
GATE = f"""id: gate
namespace: {NS}
tasks:
  - id: wait
    type: io.kestra.plugin.core.flow.Pause
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: through
"""
TRIGGERED = f"""id: triggered
namespace: {NS}.sub
tasks:
  - id: echo
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.body.name ?? 'none' }}}}"
triggers:
  - id: daily
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "0 9 * * *"
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: s3cr3t
"""
#: fields Kestra's OpenAPI marks required because of Java getters, which its own
#: JSON (and so every real server) leaves out: the SDK parses around them
PHANTOMS = frozenset({"getDuration", "getStartDate", "getEndDate"})


class Strict:
    """Every model the SDK builds from an answer, validated against its schema; the
    problems found (phantom fields aside) are kept for the test to assert on."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.parsed: list[str] = []

    def parse(self, model: type[M], data: Any) -> M:
        """An answer the SDK hands back as plain JSON (searches, bulk counts), parsed by
        the SDK's model for it."""
        parsed: M = BaseApi._deserialize(data, model)  # checked by the fixture's patch
        return parsed

    def check(self, data: Any, model: Any) -> None:
        if not (isinstance(data, dict) and hasattr(model, "model_validate")):
            return
        self.parsed.append(model.__name__)
        try:
            model.model_validate(data)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                if error["type"] == "missing" and PHANTOMS & {str(p) for p in error["loc"]}:
                    continue
                self.problems.append(f"{model.__name__} {error['loc']}: {error['msg']}")


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> Iterator[Strict]:
    found = Strict()
    original = BaseApi._deserialize

    def checked(data: Any, return_type: Any) -> Any:
        found.check(data, return_type)
        return original(data, return_type)

    monkeypatch.setattr(BaseApi, "_deserialize", staticmethod(checked))
    yield found
    assert found.parsed, "no answer went through the SDK's models"
    assert found.problems == [], "\n".join(found.problems)


@asynccontextmanager
async def serving(tmp_path: Path, kind: str = "sqlite") -> AsyncIterator[KestraClient]:
    """The server (every component, the webserver on a free port) on a ``kind``
    backend: SQLite in ``tmp_path``, or a fresh PostgreSQL schema."""
    base = settings()
    config = Config(
        executor=base.executor,
        worker=base.worker,
        scheduler=base.scheduler,
        liveness=base.liveness,
        webserver=WebserverConfig(port=0, poll_seconds=0.05, shutdown_seconds=2.0),
    )
    async with AsyncExitStack() as stack:
        schema = None
        if kind == "postgres":
            from backends.postgres.testing import fresh_schema

            schema = await stack.enter_async_context(fresh_schema("runtime_sdk"))
        server = Server(
            config,
            components=("executor", "worker", "scheduler", "webserver"),
            backend=make_backend(kind, tmp_path, schema),
            storage=LocalStorage(tmp_path / "storage"),
            watch=False,
        )
        await stack.enter_async_context(server)
        assert server.webserver is not None
        yield KestraClient(host=f"http://127.0.0.1:{server.webserver.port}", timeout=30)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The SDK is synchronous (requests): its calls run in a thread while the server
    runs on this loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def ended(
    client: KestraClient, execution_id: str, within: float = 20.0, attempt: int = 1
) -> Execution:
    """The execution once it has ended (its ``attempt``-th run: a restart is under way
    until the executor has taken it, and the execution still shows the last end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        execution = await call(client.executions.execution, execution_id, TENANT)
        at = execution.metadata.attempt_number or 1
        if execution.state.current.value in TERMINAL and at >= attempt:
            return execution
        assert loop.time() < deadline, f"{execution_id} still {execution.state.current}"
        await asyncio.sleep(0.05)


async def in_state(client: KestraClient, execution_id: str, wanted: str) -> Execution:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        execution = await call(client.executions.execution, execution_id, TENANT)
        if execution.state.current.value == wanted:
            return execution
        assert loop.time() < deadline, f"{execution_id} still {execution.state.current}"
        await asyncio.sleep(0.05)


TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "RETRIED", "SKIPPED"}


def ns_filter(namespace: str) -> QueryFilter:
    return QueryFilter(
        field=QueryFilterField.NAMESPACE, operation=QueryFilterOp.EQUALS, value=namespace
    )


async def test_flows_created_read_searched_and_validated(tmp_path: Path, strict: Strict) -> None:
    async with serving(tmp_path) as client:
        created = await call(client.flows.create_flow, TENANT, HELLO)
        assert isinstance(created, FlowWithSource)
        assert (created.id, created.namespace, created.revision) == ("hello", NS, 1)
        assert created.source == HELLO
        assert created.disabled is False
        assert created.deleted is False
        assert [(i.id, i.type.value) for i in created.inputs or []] == [
            ("who", "STRING"),
            ("data", "FILE"),
        ]
        assert [(lb.key, lb.value) for lb in created.labels or []] == [("team", "data")]
        assert isinstance(created.updated, datetime)
        with pytest.raises(ConflictException, match="already exists"):
            await call(client.flows.create_flow, TENANT, HELLO)
        with pytest.raises(UnprocessableEntityException, match="invalid flow"):
            await call(client.flows.create_flow, TENANT, "id: x\nnamespace: y\n")
        await call(client.flows.create_flow, TENANT, TRIGGERED)

        got = await call(client.flows.flow, NS, "hello", TENANT, source=True)
        assert got.source == HELLO
        assert [t.id for t in got.tasks] == ["greet", "answer"]
        updated = await call(client.flows.update_flow, NS, "hello", TENANT, HELLO + "\n")
        assert updated.revision == 2
        revisions = await call(client.flows.list_flow_revisions, NS, "hello", TENANT)
        assert [r.revision for r in revisions] == [1, 2]

        found = await call(client.flows.search_flows, TENANT, filters=[ns_filter(NS)])
        assert isinstance(found, PagedResultsFlow)
        assert found.total == 1
        assert [f.id for f in found.results] == ["hello"]
        prefix = QueryFilter(
            field=QueryFilterField.NAMESPACE, operation=QueryFilterOp.STARTS_WITH, value=NS
        )
        everything = await call(
            client.flows.search_flows, TENANT, filters=[prefix], sort=["id:asc"]
        )
        assert [f.id for f in everything.results] == ["hello", "triggered"]
        query = QueryFilter(
            field=QueryFilterField.QUERY, operation=QueryFilterOp.EQUALS, value="trig"
        )
        assert [
            f.id for f in (await call(client.flows.search_flows, TENANT, filters=[query])).results
        ] == ["triggered"]
        by_ns = await call(client.flows.list_flows_by_namespace, NS, TENANT)
        assert [f.id for f in by_ns] == ["hello"]
        namespaces = await call(client.flows.list_distinct_namespaces, TENANT)
        assert namespaces == [NS, f"{NS}.sub"]

        problems = await call(client.flows.validate_flows, TENANT, "id: x\nnamespace: y\n")
        assert len(problems) == 1
        assert "tasks" in (problems[0].constraints or "")

        await call(client.flows.delete_flow, f"{NS}.sub", "triggered", TENANT)
        with pytest.raises(NotFoundException, match="triggered"):
            await call(client.flows.flow, f"{NS}.sub", "triggered", TENANT)


async def test_an_unknown_tenant_is_a_404_naming_it(tmp_path: Path, strict: Strict) -> None:
    async with serving(tmp_path) as client:
        with pytest.raises(NotFoundException) as caught:
            await call(client.flows.search_flows, "acme")
        assert "tenant 'acme' not found" in str(caught.value.body)
        with pytest.raises(NotFoundException, match="acme"):
            await call(client.flows.create_flow, "acme", HELLO)
        # nothing was created under another tenant: main has no flow
        empty = await call(client.flows.search_flows, TENANT)
        assert (empty.total, empty.results) == (0, [])


async def test_executions_with_inputs_a_file_wait_search_follow_and_logs(
    tmp_path: Path, strict: Strict
) -> None:
    async with serving(tmp_path) as client:
        await call(client.flows.create_flow, TENANT, HELLO)
        created = await call(
            client.executions.create_execution,
            TENANT,
            NS,
            "hello",
            wait=True,
            labels=["run:first"],
            inputs={"who": "Ada", "data": ("apples.txt", b"42 apples")},
        )
        assert isinstance(created, ExecutionControllerExecutionResponse)
        assert created.state.current is StateType.SUCCESS
        assert (created.namespace, created.flow_id, created.flow_revision) == (NS, "hello", 1)
        assert created.inputs is not None
        assert created.inputs["who"] == "Ada"
        assert str(created.inputs["data"]).startswith(f"kestra:///{NS}/")
        assert str(created.inputs["data"]).endswith("/apples.txt")
        assert _user_labels(created.labels) == {("team", "data"), ("run", "first")}
        # every execution carries its correlation id, as in Kestra
        assert ("system.correlationId", created.id) in {
            (lb.key, lb.value) for lb in created.labels or []
        }
        assert [r.task_id for r in created.task_run_list or []] == ["greet", "answer"]
        assert all(r.state.current is StateType.SUCCESS for r in created.task_run_list or [])
        assert created.state.start_date is not None
        assert created.state.end_date is not None
        assert created.state.end_date >= created.state.start_date
        assert (created.state.duration or "").startswith("PT")
        assert created.original_id == created.id
        assert created.deleted is False
        assert created.metadata.attempt_number == 1

        got = await call(client.executions.execution, created.id, TENANT)
        assert isinstance(got, Execution)
        assert got.id == created.id
        answer = (got.task_run_list or [])[1]
        assert answer.additional_properties.get("outputs") == {"value": "hello Ada"}
        its_flow = await call(client.executions.flow_from_execution_by_id, created.id, TENANT)
        assert isinstance(its_flow, FlowForExecution)
        assert (its_flow.id, its_flow.revision) == ("hello", 1)
        assert [t.id for t in its_flow.tasks] == ["greet", "answer"]
        to_start = await call(client.executions.flow_from_execution, TENANT, NS, "hello")
        assert [i.id for i in to_start.inputs or []] == ["who", "data"]
        data = await call(
            client.executions.download_file_from_execution,
            created.id,
            str(created.inputs["data"]),
            TENANT,
        )
        assert data == b"42 apples"

        with pytest.raises(UnprocessableEntityException, match="who"):
            await call(
                client.executions.create_execution, TENANT, NS, "hello", inputs={"data": b"x"}
            )
        with pytest.raises(NotFoundException, match="nope"):
            await call(client.executions.create_execution, TENANT, NS, "nope")

        other = await call(
            client.executions.create_execution,
            TENANT,
            NS,
            "hello",
            inputs={"who": "Bob", "data": b"pears"},
        )
        await ended(client, other.id)
        page = await call(client.executions.search_executions, TENANT, filters=[ns_filter(NS)])
        assert page["total"] == 2
        assert {e["id"] for e in page["results"]} == {created.id, other.id}
        for item in page["results"]:
            parsed = strict.parse(Execution, item)
            assert parsed.state.current is StateType.SUCCESS
            assert parsed.namespace == NS
        of_hello = await call(client.executions.search_executions_by_flow_id, TENANT, NS, "hello")
        assert of_hello["total"] == 2
        assert [strict.parse(Execution, e).id for e in of_hello["results"]] == [
            other.id,
            created.id,
        ]
        labelled = QueryFilter(
            field=QueryFilterField.LABELS, operation=QueryFilterOp.EQUALS, value={"run": "first"}
        )
        page = await call(client.executions.search_executions, TENANT, filters=[labelled])
        assert [e["id"] for e in page["results"]] == [created.id]
        states = QueryFilter(
            field=QueryFilterField.STATE, operation=QueryFilterOp.IN, value=["FAILED", "KILLED"]
        )
        page = await call(client.executions.search_executions, TENANT, filters=[states])
        assert page == {"results": [], "total": 0}
        with pytest.raises(BadRequestException, match="workerId"):
            await call(
                client.executions.search_executions,
                TENANT,
                filters=[
                    QueryFilter(
                        field=QueryFilterField.WORKER_ID, operation=QueryFilterOp.EQUALS, value="w"
                    )
                ],
            )

        followed = list(
            await call(lambda: list(client.executions.follow_execution(other.id, TENANT)))
        )
        assert followed
        assert isinstance(followed[-1], Execution)
        assert followed[-1].state.current is StateType.SUCCESS

        logs = await call(client.logs.list_logs_from_execution, created.id, TENANT)
        assert all(isinstance(e, LogEntry) for e in logs)
        assert [e.message for e in logs if e.task_id == "greet"] == ["Ada sent 42 apples"]
        assert logs[0].execution_id == created.id
        assert logs[0].level is not None
        assert logs[0].level.value == "INFO"
        only_errors = await call(
            client.logs.list_logs_from_execution, created.id, TENANT, min_level="ERROR"
        )
        assert only_errors == []
        text = await call(client.logs.download_logs_from_execution, created.id, TENANT)
        assert "Ada sent 42 apples" in text
        streamed = await call(
            lambda: [e.message for e in client.logs.follow_logs_from_execution(created.id, TENANT)]
        )
        assert "Ada sent 42 apples" in streamed

        value = await call(
            client.executions.eval_expression, created.id, TENANT, "{{ inputs.who }}!"
        )
        assert value == {"result": "Ada!", "error": None}
        run_id = answer.id
        in_run = await call(
            client.executions.eval_task_run_expression,
            created.id,
            run_id,
            TENANT,
            "{{ outputs.answer.value }} / {{ taskrun.id }}",
        )
        assert in_run.result == f"hello Ada / {run_id}"
        broken = await call(client.executions.eval_expression, created.id, TENANT, "{{ nope( }}")
        assert broken["result"] is None
        assert broken["error"]

        await call(client.executions.delete_execution, other.id, TENANT)
        with pytest.raises(NotFoundException):
            await call(client.executions.execution, other.id, TENANT)


QUEUE = f"""id: one_at_a_time
namespace: {NS}
concurrency:
  limit: 1
  behavior: QUEUE
tasks:
  - id: sleep
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT60S
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_kill_restart_replay_resume_labels_and_status(
    tmp_path: Path, strict: Strict, kind: str
) -> None:
    async with serving(tmp_path, kind) as client:
        for source in (NAP, BROKEN, APPROVAL, GATE):
            await call(client.flows.create_flow, TENANT, source)
        ex = client.executions

        napping = await call(ex.create_execution, TENANT, NS, "nap")
        await in_state(client, napping.id, "RUNNING")
        killed = await call(ex.kill_execution, napping.id, TENANT)
        assert isinstance(killed, Execution)
        assert killed.id == napping.id
        assert (await ended(client, napping.id)).state.current is StateType.KILLED
        with pytest.raises(ConflictException, match="nothing to kill"):
            await call(ex.kill_execution, napping.id, TENANT)

        failed = await call(ex.create_execution, TENANT, NS, "broken", wait=True)
        assert failed.state.current is StateType.FAILED
        restarted = await call(ex.restart_execution, failed.id, TENANT)
        assert restarted.id == failed.id
        again = await ended(client, failed.id, attempt=2)
        assert again.state.current is StateType.FAILED
        assert StateType.RESTARTED in [h.state for h in again.state.histories]

        replayed = await call(ex.replay_execution, failed.id, TENANT)
        assert isinstance(replayed, Execution)
        assert replayed.id != failed.id
        assert replayed.original_id == failed.id
        assert (await ended(client, replayed.id)).state.current is StateType.FAILED

        two = [await call(ex.create_execution, TENANT, NS, "gate", wait=True) for _ in "ab"]
        assert await call(ex.resume_executions_by_ids, TENANT, [two[0].id]) == {"count": 1}
        assert (await ended(client, two[0].id)).state.current is StateType.SUCCESS
        gate = QueryFilter(
            field=QueryFilterField.FLOW_ID, operation=QueryFilterOp.EQUALS, value="gate"
        )
        # the one resumed already is skipped by the query
        assert await call(ex.resume_executions_by_query, TENANT, filters=[gate]) == {"count": 1}
        for one in two:
            assert (await ended(client, one.id)).state.current is StateType.SUCCESS
        paused = await call(ex.create_execution, TENANT, NS, "approval", wait=True)
        assert paused.state.current is StateType.PAUSED
        # its Pause needs an input: a bulk resume, which sends none, refuses it
        with pytest.raises(BadRequestException, match="needs resume inputs"):
            await call(ex.resume_executions_by_ids, TENANT, [paused.id])
        with pytest.raises(UnprocessableEntityException, match="approved"):
            await call(ex.resume_execution, paused.id, TENANT, inputs={"approved": "maybe"})
        await call(ex.resume_execution, paused.id, TENANT, inputs={"approved": True})
        resumed = await ended(client, paused.id)
        assert resumed.state.current is StateType.SUCCESS
        after = (resumed.task_run_list or [])[-1]
        assert after.additional_properties.get("outputs") == {"value": "approved=true"}

        labelled = await call(
            ex.set_labels_on_terminated_execution,
            resumed.id,
            TENANT,
            [Label(key="reviewed", value="yes")],
        )
        # the labels given replace the user's; the system ones stay, as in Kestra
        assert _user_labels(labelled.labels) == {("reviewed", "yes")}

        status = await call(ex.update_execution_status, failed.id, StateType.SUCCESS, TENANT)
        assert status.state.current is StateType.SUCCESS
        with pytest.raises(BadRequestException, match="not an end state"):
            await call(ex.update_execution_status, failed.id, StateType.RUNNING, TENANT)

        broken = await call(ex.create_execution, TENANT, NS, "broken", wait=True)
        run = (broken.task_run_list or [])[0]
        marked = await call(
            ex.update_task_run_state,
            broken.id,
            TENANT,
            ExecutionControllerStateRequest(task_run_id=run.id, state=StateType.WARNING),
        )
        assert marked.id == broken.id
        taken_up = await ended(client, broken.id, attempt=2)
        assert (taken_up.task_run_list or [])[0].state.current is StateType.WARNING
        assert taken_up.state.current is StateType.WARNING
        with pytest.raises(NotFoundException, match="no task run"):
            await call(
                ex.update_task_run_state,
                broken.id,
                TENANT,
                ExecutionControllerStateRequest(task_run_id="nope", state=StateType.SUCCESS),
            )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_bulk_actions_by_ids_and_by_query(tmp_path: Path, strict: Strict, kind: str) -> None:
    async with serving(tmp_path, kind) as client:
        for source in (NAP, BROKEN, QUEUE):
            await call(client.flows.create_flow, TENANT, source)
        ex = client.executions
        naps = [(await call(ex.create_execution, TENANT, NS, "nap")).id for _ in range(2)]
        for execution_id in naps:
            await in_state(client, execution_id, "RUNNING")

        # one missing id: nothing is done, and the answer names it
        with pytest.raises(BadRequestException, match="not found") as caught:
            await call(ex.kill_executions_by_ids, TENANT, [naps[0], "nope"])
        assert "nope" in str(caught.value.body)
        assert (await call(ex.execution, naps[0], TENANT)).state.current is StateType.RUNNING
        killed = strict.parse(BulkResponse, await call(ex.kill_executions_by_ids, TENANT, naps))
        assert killed.count == 2
        for execution_id in naps:
            assert (await ended(client, execution_id)).state.current is StateType.KILLED

        fails = [
            (await call(ex.create_execution, TENANT, NS, "broken", wait=True)).id for _ in range(2)
        ]
        assert await call(ex.restart_executions_by_ids, TENANT, fails) == {"count": 2}
        for execution_id in fails:
            done = await ended(client, execution_id, attempt=2)
            assert done.state.current is StateType.FAILED
        flow_is_broken = QueryFilter(
            field=QueryFilterField.FLOW_ID, operation=QueryFilterOp.EQUALS, value="broken"
        )
        replays = await call(ex.replay_executions_by_query, TENANT, filters=[flow_is_broken])
        assert replays == {"count": 2}
        labels = ExecutionControllerSetLabelsByIdsRequest(
            executions_id=fails, execution_labels=[Label(key="batch", value="b1")]
        )
        assert await call(ex.set_labels_on_terminated_executions_by_ids, TENANT, labels) == {
            "count": 2
        }
        batch = QueryFilter(
            field=QueryFilterField.LABELS, operation=QueryFilterOp.EQUALS, value={"batch": "b1"}
        )
        page = await call(ex.search_executions, TENANT, filters=[batch])
        assert {e["id"] for e in page["results"]} == set(fails)
        assert await call(ex.update_executions_status_by_ids, TENANT, StateType.SUCCESS, fails) == {
            "count": 2
        }
        assert (await call(ex.execution, fails[0], TENANT)).state.current is StateType.SUCCESS

        # a flow that runs one at a time: the second waits QUEUED, unqueue starts it
        first = await call(ex.create_execution, TENANT, NS, "one_at_a_time")
        await in_state(client, first.id, "RUNNING")
        second = await call(ex.create_execution, TENANT, NS, "one_at_a_time")
        await in_state(client, second.id, "QUEUED")
        unqueued = await call(ex.unqueue_execution, second.id, TENANT)
        assert unqueued.id == second.id
        await in_state(client, second.id, "RUNNING")
        third = await call(ex.create_execution, TENANT, NS, "one_at_a_time")
        await in_state(client, third.id, "QUEUED")
        with pytest.raises(ConflictException, match="only a QUEUED"):
            await call(ex.unqueue_execution, first.id, TENANT)
        forced = await call(ex.force_run_execution, third.id, TENANT)
        assert forced.id == third.id
        await in_state(client, third.id, "RUNNING")
        running = QueryFilter(
            field=QueryFilterField.FLOW_ID, operation=QueryFilterOp.EQUALS, value="one_at_a_time"
        )
        assert await call(ex.kill_executions_by_query, TENANT, filters=[running]) == {"count": 3}
        for execution in (first, second, third):
            assert (await ended(client, execution.id)).state.current is StateType.KILLED

        deleted = await call(ex.delete_executions_by_ids, TENANT, naps)
        assert isinstance(deleted, BulkResponse)
        assert deleted.count == 2
        with pytest.raises(NotFoundException):
            await call(ex.execution, naps[0], TENANT)
        removed = await call(ex.delete_executions_by_query, TENANT, filters=[running])
        assert removed == {"count": 3}
        left = await call(ex.search_executions, TENANT, filters=[ns_filter(NS)])
        assert left["total"] == 4  # the two failed executions and their two replays


async def test_kv_namespaces_triggers_and_webhooks(tmp_path: Path, strict: Strict) -> None:
    async with serving(tmp_path) as client:
        await call(client.flows.create_flow, TENANT, HELLO)
        await call(client.flows.create_flow, TENANT, TRIGGERED)
        kv = client.kv
        await call(kv.set_key_value, NS, "answer", TENANT, "42")
        await call(kv.set_key_value, NS, "who", TENANT, '"Ada"')
        await call(kv.set_key_value, f"{NS}.sub", "who", TENANT, '"Bob"')
        await call(kv.set_key_value, NS, "conf", TENANT, '{"retries": 3}')
        detail = await call(kv.key_value, NS, "answer", TENANT)
        assert isinstance(detail, KVControllerKvDetail)
        assert detail.type is not None
        assert (detail.type.value, detail.value) == ("NUMBER", 42)
        assert isinstance(detail.updated, datetime)
        conf = await call(kv.key_value, NS, "conf", TENANT)
        assert conf.type is not None
        assert (conf.type.value, conf.value) == ("JSON", {"retries": 3})
        with pytest.raises(NotFoundException, match="nope"):
            await call(kv.key_value, NS, "nope", TENANT)

        listed = await call(kv.list_all_keys, TENANT, filters=[ns_filter(NS)])
        assert isinstance(listed, PagedResultsKVEntry)
        assert listed.total == 3
        assert sorted(e.key or "" for e in listed.results) == ["answer", "conf", "who"]
        assert all(isinstance(e, KVEntry) and e.namespace == NS for e in listed.results)
        inherited = await call(kv.list_keys_with_inheritance, f"{NS}.sub", TENANT)
        assert {(e.key, e.namespace) for e in inherited} == {
            ("who", f"{NS}.sub"),
            ("answer", NS),
            ("conf", NS),
        }
        assert await call(kv.delete_key_value, NS, "answer", TENANT) is True
        with pytest.raises(NotFoundException):
            await call(kv.delete_key_value, NS, "answer", TENANT)
        listed = await call(kv.list_all_keys, TENANT, filters=[ns_filter(NS)])
        assert sorted(e.key or "" for e in listed.results) == ["conf", "who"]

        namespaces = await call(client.namespaces.search_namespaces, TENANT)
        assert isinstance(namespaces, PagedResultsNamespace)
        assert [n.id for n in namespaces.results] == ["sdk", NS, f"{NS}.sub"]
        assert namespaces.total == 3
        one = await call(client.namespaces.namespace, NS, TENANT)
        assert isinstance(one, Namespace)
        assert one.id == NS
        assert one.deleted is False
        with pytest.raises(NotFoundException, match="elsewhere"):
            await call(client.namespaces.namespace, "elsewhere", TENANT)

        triggers = await call(
            client.triggers.search_triggers, TENANT, filters=[ns_filter(f"{NS}.sub")]
        )
        assert triggers["total"] == 2
        parsed = strict.parse(PagedResultsApiTriggerAndState, triggers)
        assert {(t.trigger.id, t.state.flow_id) for t in parsed.results} == {
            ("daily", "triggered"),
            ("hook", "triggered"),
        }
        assert all(t.state.disabled is False for t in parsed.results)
        by_id = {t["triggerContext"]["triggerId"]: t for t in triggers["results"]}
        assert set(by_id) == {"daily", "hook"}
        daily = by_id["daily"]
        assert daily["abstractTrigger"]["cron"] == "0 9 * * *"
        assert daily["triggerContext"]["nextExecutionDate"] is not None
        assert daily["triggerContext"]["disabled"] is False
        request = TriggerControllerSetDisabledRequest(
            triggers=[
                TriggerControllerApiTriggerId(
                    namespace=f"{NS}.sub", flow_id="triggered", trigger_id="daily"
                )
            ],
            disabled=True,
        )
        assert await call(client.triggers.disabled_triggers_by_ids, TENANT, request) == {"count": 1}
        for_flow = await call(
            client.triggers.search_triggers_for_flow, TENANT, f"{NS}.sub", "triggered"
        )
        disabled = {
            t["triggerContext"]["triggerId"]: t["triggerContext"]["disabled"]
            for t in for_flow["results"]
        }
        assert disabled == {"daily": True, "hook": False}
        hook = QueryFilter(
            field=QueryFilterField.TRIGGER_ID, operation=QueryFilterOp.EQUALS, value="hook"
        )
        assert await call(
            client.triggers.disabled_triggers_by_query, TENANT, disabled=True, filters=[hook]
        ) == {"count": 1}
        with pytest.raises(NotFoundException, match="webhook"):
            await call(
                client.executions.trigger_execution_by_get_webhook,
                TENANT,
                f"{NS}.sub",
                "triggered",
                "s3cr3t",
            )
        assert await call(
            client.triggers.disabled_triggers_by_query, TENANT, disabled=False, filters=[hook]
        ) == {"count": 1}

        started = await call(
            client.executions.trigger_execution_by_get_webhook,
            TENANT,
            f"{NS}.sub",
            "triggered",
            "s3cr3t",
        )
        assert isinstance(started, WebhookResponse)
        assert (started.namespace, started.flow_id) == (f"{NS}.sub", "triggered")
        assert started.trigger is not None
        assert (started.trigger.id, started.trigger.type) == (
            "hook",
            "io.kestra.plugin.core.trigger.Webhook",
        )
        assert started.id is not None
        done = await ended(client, started.id)
        assert done.state.current is StateType.SUCCESS
        with pytest.raises(NotFoundException):
            await call(
                client.executions.trigger_execution_by_get_webhook,
                TENANT,
                f"{NS}.sub",
                "triggered",
                "wrong",
            )


BRANCHY = f"""id: branchy
namespace: {NS}
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: one
  - id: both
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - id: left
        type: io.kestra.plugin.core.debug.Return
        format: l
      - id: right
        type: io.kestra.plugin.core.debug.Return
        format: r
  - id: last
    type: io.kestra.plugin.core.debug.Return
    format: done
errors:
  - id: alert
    type: io.kestra.plugin.core.log.Log
    message: failed
"""


async def test_flows_exported_imported_in_bulk_and_drawn(tmp_path: Path, strict: Strict) -> None:
    async with serving(tmp_path) as client:
        flows = client.flows
        for source in (HELLO, NAP, BRANCHY):
            await call(flows.create_flow, TENANT, source)

        exported = await call(
            flows.export_flows_by_ids,
            TENANT,
            [IdWithNamespace(namespace=NS, id="hello"), IdWithNamespace(namespace=NS, id="nap")],
        )
        with zipfile.ZipFile(io.BytesIO(exported)) as archive:
            assert sorted(archive.namelist()) == [f"{NS}.hello.yml", f"{NS}.nap.yml"]
            assert archive.read(f"{NS}.hello.yml").decode() == HELLO
        by_query = await call(flows.export_flows_by_query, TENANT, filters=[ns_filter(NS)])
        with zipfile.ZipFile(io.BytesIO(by_query)) as archive:
            assert len(archive.namelist()) == 3

        # a zip with a new flow, a changed one and a broken one
        upload = io.BytesIO()
        with zipfile.ZipFile(upload, "w") as archive:
            archive.writestr("new.yml", NAP.replace("id: nap", "id: nap2"))
            archive.writestr("hello.yml", HELLO.replace("hello {{", "hi {{"))
            archive.writestr("broken.yml", "id: broken\nnamespace: x\n")
        with pytest.raises(UnprocessableEntityException, match="nothing was imported"):
            await call(
                flows.import_flows, TENANT, fail_on_error=True, file_content=upload.getvalue()
            )
        assert (await call(flows.flow, NS, "hello", TENANT)).revision == 1
        wrong = await call(flows.import_flows, TENANT, file_content=upload.getvalue())
        assert wrong == ["broken.yml"]
        assert (await call(flows.flow, NS, "nap2", TENANT)).revision == 1
        assert (await call(flows.flow, NS, "hello", TENANT)).revision == 2
        documents = "\n---\n".join([NAP.replace("id: nap", "id: nap3"), "not: a flow"])
        assert await call(flows.import_flows, TENANT, file_content=documents.encode()) == ["1"]
        assert (await call(flows.flow, NS, "nap3", TENANT)).id == "nap3"

        refs = [IdWithNamespace(namespace=NS, id="nap2"), IdWithNamespace(namespace=NS, id="nap3")]
        disabled = await call(flows.disable_flows_by_ids, TENANT, refs)
        assert isinstance(disabled, BulkResponse)
        assert disabled.count == 2
        assert (await call(flows.flow, NS, "nap2", TENANT)).disabled is True
        removed = await call(flows.delete_flows_by_ids, TENANT, refs)
        assert removed.count == 2
        with pytest.raises(NotFoundException):
            await call(flows.flow, NS, "nap3", TENANT)

        graph = await call(flows.generate_flow_graph, NS, "branchy", TENANT)
        assert isinstance(graph, FlowGraph)
        edges = {(e.source, e.target, e.relation.relation_type.value) for e in graph.edges or []}
        assert ("root.root", "root.first", "SEQUENTIAL") in edges
        assert ("root.first", "root.both", "SEQUENTIAL") in edges
        assert ("root.both", "root.both.left", "PARALLEL") in edges
        assert ("root.both", "root.both.right", "PARALLEL") in edges
        assert ("root.both.left", "root.both.end", "SEQUENTIAL") in edges
        assert ("root.both.end", "root.last", "SEQUENTIAL") in edges
        assert ("root.last", "root.end", "SEQUENTIAL") in edges
        assert ("root.root", "root.alert", "ERROR") in edges
        assert graph.flowables == ["root.both"]
        assert [c.cluster.uid for c in graph.clusters or [] if c.cluster] == ["cluster_root.both"]
        uids = {n.uid for n in graph.nodes or []}
        assert {"root.root", "root.end", "root.both.left", "root.alert"} <= uids
        with pytest.raises(NotFoundException):
            await call(flows.generate_flow_graph, NS, "nope", TENANT)


def flow_is(flow_id: str) -> QueryFilter:
    return QueryFilter(
        field=QueryFilterField.FLOW_ID, operation=QueryFilterOp.EQUALS, value=flow_id
    )


async def test_the_other_bulk_variants_and_graphs(tmp_path: Path, strict: Strict) -> None:
    async with serving(tmp_path) as client:
        for source in (BROKEN, QUEUE, BRANCHY):
            await call(client.flows.create_flow, TENANT, source)
        ex = client.executions

        fails = [
            (await call(ex.create_execution, TENANT, NS, "broken", wait=True)).id for _ in "ab"
        ]
        tagged = await call(
            ex.set_labels_on_terminated_executions_by_query,
            TENANT,
            [Label(key="triage", value="done")],
            filters=[flow_is("broken")],
        )
        assert tagged == {"count": 2}
        one = await call(ex.execution, fails[0], TENANT)
        assert ("triage", "done") in {(lb.key, lb.value) for lb in one.labels or []}
        changed = await call(
            ex.update_executions_status_by_query,
            TENANT,
            StateType.CANCELLED,
            filters=[flow_is("broken")],
        )
        assert changed == {"count": 2}
        for execution_id in fails:
            done = await call(ex.execution, execution_id, TENANT)
            assert done.state.current is StateType.CANCELLED
            assert [h.state for h in done.state.histories][-2:] == [
                StateType.FAILED,
                StateType.CANCELLED,
            ]

        # a task run marked FAILED: the execution is taken up again and fails from it
        broken = await call(ex.create_execution, TENANT, NS, "broken", wait=True)
        run = (broken.task_run_list or [])[0]
        await call(
            ex.update_task_run_state,
            broken.id,
            TENANT,
            ExecutionControllerStateRequest(task_run_id=run.id, state=StateType.FAILED),
        )
        again = await ended(client, broken.id, attempt=2)
        assert again.state.current is StateType.FAILED

        first = await call(ex.create_execution, TENANT, NS, "one_at_a_time")
        await in_state(client, first.id, "RUNNING")
        queued = [(await call(ex.create_execution, TENANT, NS, "one_at_a_time")).id for _ in "abcd"]
        for execution_id in queued:
            await in_state(client, execution_id, "QUEUED")
        assert await call(ex.unqueue_executions_by_ids, TENANT, StateType.RUNNING, [queued[0]]) == {
            "count": 1
        }
        await in_state(client, queued[0], "RUNNING")
        assert await call(ex.force_run_by_ids, TENANT, [queued[1]]) == {"count": 1}
        await in_state(client, queued[1], "RUNNING")
        with pytest.raises(BadRequestException, match="RUNNING"):
            await call(ex.unqueue_executions_by_ids, TENANT, StateType.SUCCESS, [queued[2]])
        killed = await call(
            ex.unqueue_executions_by_query,
            TENANT,
            new_state=StateType.KILLED,
            filters=[flow_is("one_at_a_time")],
        )
        assert killed == {"count": 2}  # the two still QUEUED
        for execution_id in queued[2:]:
            assert (await ended(client, execution_id)).state.current is StateType.KILLED
        forced = await call(
            ex.force_run_executions_by_query, TENANT, filters=[flow_is("one_at_a_time")]
        )
        assert forced == {"count": 3}  # the running ones: nothing to change, counted
        assert await call(
            ex.kill_executions_by_query, TENANT, filters=[flow_is("one_at_a_time")]
        ) == {"count": 3}

        drawn = await call(client.flows.generate_flow_graph_from_source, TENANT, HELLO)
        assert [(e.source, e.target) for e in drawn.edges or []] == [
            ("root.root", "root.greet"),
            ("root.greet", "root.answer"),
            ("root.answer", "root.end"),
        ]
        branchy = await call(ex.create_execution, TENANT, NS, "branchy", wait=True)
        of_execution = await call(ex.execution_flow_graph, branchy.id, TENANT)
        assert of_execution.flowables == ["root.both"]

        assert await call(client.flows.disable_flows_by_query, TENANT, filters=[ns_filter(NS)]) == (
            BulkResponse(count=3)
        )
        with pytest.raises(ConflictException, match="disabled"):
            await call(ex.create_execution, TENANT, NS, "branchy")
        assert (
            await call(client.flows.enable_flows_by_query, TENANT, filters=[ns_filter(NS)])
        ).count == 3
        assert (
            await call(client.flows.delete_flows_by_query, TENANT, filters=[ns_filter(NS)])
        ).count == 3
        assert (await call(client.flows.search_flows, TENANT)).total == 0


CHATTY = f"""id: chatty
namespace: {NS}.sub
tasks:
  - id: say
    type: io.kestra.plugin.core.log.Log
    message: "chatty says hi"
  - id: warn
    type: io.kestra.plugin.core.log.Log
    level: WARN
    message: "chatty is worried"
"""


async def test_logs_searched_over_executions_and_deleted(tmp_path: Path, strict: Strict) -> None:
    async with serving(tmp_path) as client:
        await call(client.flows.create_flow, TENANT, CHATTY)
        runs = [
            await call(client.executions.create_execution, TENANT, f"{NS}.sub", "chatty", wait=True)
            for _ in range(3)
        ]

        def f(field: QueryFilterField, op: QueryFilterOp, value: Any) -> QueryFilter:
            return QueryFilter(field=field, operation=op, value=value)

        page = await call(
            client.logs.search_logs,
            TENANT,
            page=1,
            size=4,
            filters=[f(QueryFilterField.NAMESPACE, QueryFilterOp.PREFIX, NS)],
        )
        # parsed by the SDK's CursorOrOffsetPagedResultsLogEntry (strictly, by the fixture);
        # three lines a run: the executor's "Flow started", then the tasks' two
        assert page.total == 9
        assert page.type.value == "OFFSET"
        assert len(page.results) == 4
        stamps = [e.timestamp for e in page.results]
        assert stamps == sorted(stamps, reverse=True)
        assert {e.execution_id for e in page.results} <= {r.id for r in runs}
        assert page.results[0].execution_id == runs[-1].id
        second = await call(
            client.logs.search_logs,
            TENANT,
            page=2,
            size=4,
            filters=[f(QueryFilterField.NAMESPACE, QueryFilterOp.PREFIX, NS)],
        )
        assert len(second.results) == 4
        worried = await call(
            client.logs.search_logs,
            TENANT,
            filters=[
                f(QueryFilterField.LEVEL, QueryFilterOp.EQUALS, "WARN"),
                f(QueryFilterField.QUERY, QueryFilterOp.EQUALS, "WORRIED"),
                f(QueryFilterField.FLOW_ID, QueryFilterOp.EQUALS, "chatty"),
            ],
        )
        assert worried.total == 3
        assert {(e.level.value, e.task_id) for e in worried.results} == {("WARN", "warn")}
        exact = await call(
            client.logs.search_logs,
            TENANT,
            filters=[f(QueryFilterField.NAMESPACE, QueryFilterOp.EQUALS, NS)],
        )
        assert (exact.total, exact.results) == (0, [])

        # one execution's WARN lines, then the rest of its log
        await call(client.logs.delete_logs_from_execution, runs[0].id, TENANT, min_level="WARN")
        left = await call(client.logs.list_logs_from_execution, runs[0].id, TENANT)
        assert [e.message for e in left] == ["Flow started", "chatty says hi"]
        await call(client.logs.delete_logs_from_execution, runs[0].id, TENANT)
        assert await call(client.logs.list_logs_from_execution, runs[0].id, TENANT) == []
        by_execution = await call(
            client.logs.search_logs,
            TENANT,
            filters=[f(QueryFilterField.EXECUTION_ID, QueryFilterOp.EQUALS, runs[1].id)],
        )
        assert by_execution.total == 3

        # a trigger's logs: none are stored, so the flow's execution logs stay
        await call(client.logs.delete_logs_from_flow, f"{NS}.sub", "chatty", "schedule", TENANT)
        assert (await call(client.logs.search_logs, TENANT)).total == 6
        # the SDK drops a None trigger id: the whole flow's logs go
        await call(client.logs.delete_logs_from_flow, f"{NS}.sub", "chatty", None, TENANT)
        assert (await call(client.logs.search_logs, TENANT)).total == 0

        with pytest.raises(BadRequestException, match="minLevel"):
            await call(client.logs.delete_logs_from_execution, runs[1].id, TENANT, min_level="LOUD")


def _user_labels(labels: list[Label] | None) -> set[tuple[str, str]]:
    """The labels a user set, without the system ones (``system.correlationId``)."""
    return {(lb.key, lb.value) for lb in labels or [] if not lb.key.startswith("system.")}
