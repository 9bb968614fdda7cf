"""The API driven through Kestra's official Python SDK (PyPI ``kestrapy``), as a new
user would: ``KestraClient(host=...)``, tenant ``main``, against the server on a real
socket. Every answer is parsed by the SDK's own models; ``strict`` below also holds
each one to the model's schema (the SDK quietly falls back to an unchecked model
when validation fails, which would hide a wrong shape)."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import pytest

from backends.sqlite import SqliteBackend
from backends.storage_local import LocalStorage
from runtime.config import Config, WebserverConfig
from services.standalone import Server
from tests.services.server_helpers import settings

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
        FlowGraph,
        FlowWithSource,
        IdWithNamespace,
        KVControllerKvDetail,
        KVEntry,
        Label,
        LogEntry,
        Namespace,
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
async def serving(tmp_path: Path) -> AsyncIterator[KestraClient]:
    base = settings()
    config = Config(
        executor=base.executor,
        worker=base.worker,
        scheduler=base.scheduler,
        liveness=base.liveness,
        webserver=WebserverConfig(port=0, poll_seconds=0.05, shutdown_seconds=2.0),
    )
    server = Server(
        config,
        components=("executor", "worker", "scheduler", "webserver"),
        backend=SqliteBackend(tmp_path / "runtime.db", synchronous="NORMAL"),
        storage=LocalStorage(tmp_path / "storage"),
        watch=False,
    )
    async with server:
        assert server.webserver is not None
        yield KestraClient(host=f"http://127.0.0.1:{server.webserver.port}", timeout=30)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The SDK is synchronous (requests): its calls run in a thread while the server
    runs on this loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def ended(client: KestraClient, execution_id: str, within: float = 20.0) -> Execution:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        execution = await call(client.executions.execution, execution_id, TENANT)
        if execution.state.current.value in TERMINAL:
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
        assert {(lb.key, lb.value) for lb in created.labels or []} == {
            ("team", "data"),
            ("run", "first"),
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
