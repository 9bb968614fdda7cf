"""``/api/v1/executions``: create (inputs and FILE uploads, optional wait), get,
search, delete, kill, restart, replay, resume, labels, output files, live follow."""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.errors import BackendError
from backends.protocols import ExecutionFilter, ExecutionSortField, LogFilter
from runtime.flow import budget
from runtime.flow.durations import DurationError, parse_duration
from runtime.flow.engine import (
    kill_refusal,
    replay_refusal,
    restart_refusal,
    resume_refusal,
    task_index,
)
from runtime.flow.events import Kill, Replay, Restart, Resume
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.inputs import InputError, convert, resolve_inputs
from runtime.flow.model import Flow, Input, Pause
from runtime.flow.states import StateType
from runtime.log import get_logger
from runtime.tasks.files import execution_prefixes
from services.submit import send_event, submit
from services.webserver.http import (
    ApiError,
    AppState,
    Filters,
    json_body,
    json_response,
    no_content,
    not_found,
    paged,
    paging,
    q_bool,
    q_datetime,
    q_int,
    q_labels,
    q_str,
    state,
)
from services.webserver.middleware import allow_upload
from services.webserver.shapes import execution_json
from services.webserver.sse import EventStream, follow_execution, pause
from services.webserver.tenants import tenant_path_used

S = StateType
#: the largest text value of a form (a file part has the upload limit instead)
FORM_FIELD_LIMIT = 1024 * 1024
log = get_logger(__name__)


async def load_execution(app: AppState, execution_id: str) -> Execution:
    execution = await app.backend.executions.get(execution_id)
    if execution is None:
        raise not_found(f"execution {execution_id}")
    return execution


def invalid_inputs(exc: InputError) -> ApiError:
    return ApiError(
        422,
        f"invalid inputs: {exc}",
        [{"input": name, "message": message} for name, message in exc.problems.items()],
    )


class FormInputs:
    """The text fields and the uploaded files of a create or resume request."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.files: dict[str, UploadFile] = {}
        self._form: Any = None

    @classmethod
    async def read(cls, request: Request, *, uploads: bool = False) -> FormInputs:
        """The form of ``request``; ``uploads``: its files may reach the upload limit
        (they are streamed to storage), not only the body limit."""
        out = cls()
        content_type = request.headers.get("content-type", "").lower()
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            if uploads:
                allow_upload(request.scope)
            try:
                out._form = await request.form(
                    max_files=100, max_fields=1000, max_part_size=FORM_FIELD_LIMIT
                )
            except ApiError:
                raise
            except HTTPException as exc:
                if "exceeded maximum size" in str(exc.detail):
                    raise ApiError(
                        413,
                        f"a form field is over the {FORM_FIELD_LIMIT // 1024 // 1024} MiB a "
                        "text value may have: send a large value as a FILE input's file part",
                    ) from None
                raise ApiError(400, f"the form body cannot be read: {exc.detail}") from None
            except Exception as exc:  # the parser's errors: a malformed body
                raise ApiError(400, f"the form body cannot be read: {exc}") from None
            for key, value in out._form.multi_items():
                if isinstance(value, UploadFile):
                    out.files[key] = value
                else:
                    out.values[key] = value
        elif (await request.body()).strip():
            raise ApiError(
                415, "send inputs as multipart/form-data (files) or x-www-form-urlencoded"
            )
        return out

    async def close(self) -> None:
        if self._form is not None:
            await self._form.close()


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(65536):
        yield chunk


#: bytes of an uploaded file's name kept: storage adds a temporary suffix while it
#: writes, and file systems stop at 255
MAX_NAME_BYTES = 100


def upload_name(filename: str | None) -> str:
    """The name an uploaded file is stored under: the client's, without its folders
    and the characters a file name cannot hold (NUL, line breaks), at most
    MAX_NAME_BYTES long (its extension kept); ``file`` when nothing is left."""
    name = posixpath.basename((filename or "").replace("\\", "/"))
    name = "".join(c for c in name if c.isprintable()).strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not (dot and stem and len(extension.encode()) <= 16):
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + suffix


async def _upload_files(
    app: AppState, flow: Flow, form: FormInputs, execution_id: str, stored: list[str]
) -> dict[str, str]:
    """Stream each FILE upload to internal storage; the input becomes its URI (and
    goes into ``stored`` at once, for the caller to delete if the request fails)."""
    specs = {spec.id: spec for spec in flow.inputs}
    problems: dict[str, str] = {}
    for name in form.files:
        spec = specs.get(name)
        if spec is None or spec.type.upper() != "FILE":
            problems[name] = "is not a FILE input of the flow: send it as a text field"
    for name, value in form.values.items():
        spec = specs.get(name)
        if spec is not None and spec.type.upper() == "FILE" and value != "":
            problems[name] = "is a FILE input: upload the file as a multipart file part"
    if problems:
        raise invalid_inputs(InputError(problems))
    uris: dict[str, str] = {}
    for name, upload in form.files.items():
        path = f"executions/{execution_id}/inputs/{name}/{upload_name(upload.filename)}"
        try:
            uris[name] = await app.storage.put(flow.namespace, path, _chunks(upload))
        except OSError as exc:  # a full or failing disk: not the client's fault, nor a bug
            raise ApiError(
                503, f"internal storage cannot store the upload of input `{name}`: {exc.strerror}"
            ) from None
        except BackendError as exc:  # an object store unreachable after its retries
            raise ApiError(
                503, f"internal storage cannot store the upload of input `{name}`: {exc}"
            ) from None
        stored.append(uris[name])
    return uris


async def wait_end(app: AppState, execution_id: str, request: Request) -> Execution:
    """Until the execution ends (or pauses, which needs someone to act), the server
    stops, or the client goes away."""
    while True:
        execution = await load_execution(app, execution_id)
        if execution.state.terminated or execution.state.current is S.PAUSED:
            return execution
        if not await pause(app, app.config.poll_seconds) or await request.is_disconnected():
            return execution


async def _delete_all(app: AppState, uris: list[str]) -> None:
    for uri in uris:
        try:
            await app.storage.delete(uri)
        except Exception as exc:  # the request's own error is the one to report
            log.warning("webserver.upload_not_deleted", uri=uri, error=repr(exc))


async def create(request: Request) -> Response:
    app = state(request)
    namespace, flow_id = request.path_params["namespace"], request.path_params["id"]
    revision = q_int(request, "revision", 0, lo=0) or None
    labels = q_labels(request)
    wait = q_bool(request, "wait")
    scheduled = q_datetime(request, "scheduleDate")
    record = await app.backend.flows.get(namespace, flow_id, revision)
    if record is None:
        raise not_found(
            f"flow {namespace}.{flow_id}" + (f" revision {revision}" if revision else "")
        )
    flow = app.flows.parse(record)
    if flow.disabled:
        raise ApiError(409, f"flow {namespace}.{flow_id} is disabled: enable it to execute it")
    execution_id = new_id()
    form = await FormInputs.read(request, uploads=True)
    stored: list[str] = []
    try:
        given: dict[str, Any] = dict(form.values)
        uris = await _upload_files(app, flow, form, execution_id, stored)
        given.update(uris)
        now = app.backend.clock()
        try:
            # input defaults are expressions: budgeted, off the loop if heavy
            inputs = await budget.evaluate(resolve_inputs, flow, given, now=now)
        except InputError as exc:
            raise invalid_inputs(exc) from None
        execution = new_execution(
            id=execution_id,
            namespace=namespace,
            flow_id=flow_id,
            flow_revision=record.revision,
            at=now,
            inputs=inputs,
            labels={**flow.label_map(), **dict(labels)},
        )
        # a later date: stored now, started when it comes
        await submit(app.backend, execution, start_at=scheduled)
    except BaseException:
        # Refused, or not stored (the database failed, the client left): nothing will
        # ever read the uploads.
        await asyncio.shield(_delete_all(app, stored))
        raise
    finally:
        await form.close()
    if wait:
        execution = await wait_end(app, execution_id, request)
    return json_response(execution_json(execution))


async def get(request: Request) -> Response:
    execution = await load_execution(state(request), request.path_params["executionId"])
    return json_response(execution_json(execution))


_SORTS: dict[str, ExecutionSortField] = {
    "state.startDate": "start_date",
    "startDate": "start_date",
    "state.endDate": "end_date",
    "endDate": "end_date",
    "id": "id",
    "namespace": "namespace",
    "flowId": "flow_id",
    "state.current": "state",
    "state": "state",
}


def _states(names: list[str]) -> tuple[StateType, ...] | None:
    out = []
    for name in names:
        try:
            out.append(StateType(name.upper()))
        except ValueError:
            known = ", ".join(s.value for s in StateType)
            raise ApiError(
                400, f"query parameter `state`: {name!r} is not one of {known}"
            ) from None
    return tuple(out) or None


#: the filters an execution search takes (Kestra 1.x ``filters[field][OPERATION]``)
EXECUTION_FILTERS = {
    "namespace": ("EQUALS", "PREFIX"),
    "flowId": ("EQUALS",),
    "state": ("EQUALS", "IN"),
    "startDate": ("GREATER_THAN_OR_EQUAL_TO", "GREATER_THAN", "LESS_THAN", "LESS_THAN_OR_EQUAL_TO"),
    "endDate": ("LESS_THAN_OR_EQUAL_TO", "LESS_THAN"),
    "timeRange": ("EQUALS",),
    "labels": ("EQUALS",),
    "q": ("EQUALS", "CONTAINS"),
    "id": ("EQUALS", "IN"),
}


def _time_range(app: AppState, raw: str) -> datetime:
    try:
        span = abs(parse_duration(raw))
    except DurationError:
        raise ApiError(
            400, f"query parameter `timeRange`: {raw!r} is not an ISO-8601 duration (P1D)"
        ) from None
    try:
        return app.backend.clock() - span
    except OverflowError:
        raise ApiError(400, f"query parameter `timeRange`: {raw!r} is too long") from None


def execution_filter(request: Request) -> tuple[ExecutionFilter, frozenset[str] | None]:
    """What an execution search (or a bulk action by query) selects: the old
    parameters and Kestra 1.x's ``filters[...]``; with the ids an ``id`` filter
    keeps (None: any)."""
    app = state(request)
    filters = Filters(request, EXECUTION_FILTERS)
    started_after = q_datetime(request, "startDate") or filters.date(
        "startDate", "GREATER_THAN_OR_EQUAL_TO", "GREATER_THAN"
    )
    started_before = (
        q_datetime(request, "endDate")
        or filters.date("endDate")
        or filters.date("startDate", "LESS_THAN", "LESS_THAN_OR_EQUAL_TO")
    )
    time_range = q_str(request, "timeRange") or filters.value("timeRange")
    if time_range is not None:
        if started_after is not None:
            raise ApiError(400, "query parameters `startDate` and `timeRange`: give one, not both")
        started_after = _time_range(app, time_range)
    namespace = q_str(request, "namespace")
    exact = filters.value("namespace", "EQUALS")
    where = ExecutionFilter(
        namespace=namespace or exact or filters.value("namespace", "PREFIX"),
        flow_id=q_str(request, "flowId") or filters.value("flowId"),
        states=_states(request.query_params.getlist("state") + filters.values("state")),
        started_after=started_after,
        started_before=started_before,
        labels=(*q_labels(request), *filters.labels()),
        query=q_str(request, "q") or filters.value("q"),
    )
    ids = filters.values("id")
    return where, frozenset(ids) if ids else None


async def search(request: Request) -> Response:
    app = state(request)
    limit, offset = paging(request)
    sort = q_str(request, "sort") or "state.startDate:desc"
    field, _, direction = sort.partition(":")
    if field not in _SORTS or direction not in ("", "asc", "desc"):
        known = ", ".join(_SORTS)
        raise ApiError(400, f"query parameter `sort`: {sort!r}: use one of {known}, :asc or :desc")
    where, ids = execution_filter(request)
    exact = Filters(request, EXECUTION_FILTERS).value("namespace", "EQUALS")
    if ids is None and exact is None:
        found, total = await app.backend.executions.find(
            where, sort=_SORTS[field], descending=direction != "asc", limit=limit, offset=offset
        )
    else:
        # The store filters on a namespace and those below it, and on no id: the
        # rest of the filter is applied here, over every match.
        every = await find_all(app, where, sort=_SORTS[field], descending=direction != "asc")
        kept = [e for e in every if _keeps(e, ids, exact)]
        found, total = kept[offset : offset + limit], len(kept)
    return json_response(paged([execution_json(e) for e in found], total))


async def of_flow(request: Request) -> Response:
    """The executions of one flow (``?namespace=&flowId=``), latest first."""
    app = state(request)
    namespace, flow_id = q_str(request, "namespace"), q_str(request, "flowId")
    if namespace is None or flow_id is None:
        raise ApiError(400, "query parameters `namespace` and `flowId` are both required")
    limit, offset = paging(request)
    where = ExecutionFilter(namespace=namespace, flow_id=flow_id)
    # the store's namespace filter takes the namespaces below too: kept exact here
    every = [e for e in await find_all(app, where) if e.namespace == namespace]
    return json_response(
        paged([execution_json(e) for e in every[offset : offset + limit]], len(every))
    )


def _keeps(execution: Execution, ids: frozenset[str] | None, namespace: str | None) -> bool:
    return (ids is None or execution.id in ids) and (
        namespace is None or execution.namespace == namespace
    )


#: executions fetched per page when a filter or a bulk action goes over every match
_BATCH = 500


async def find_all(
    app: AppState,
    where: ExecutionFilter,
    *,
    sort: ExecutionSortField = "start_date",
    descending: bool = True,
) -> list[Execution]:
    out: list[Execution] = []
    while True:
        page, total = await app.backend.executions.find(
            where, sort=sort, descending=descending, limit=_BATCH, offset=len(out)
        )
        out.extend(page)
        if not page or len(out) >= total:
            return out


async def selected(request: Request) -> list[Execution]:
    """The executions a bulk action by query applies to."""
    where, ids = execution_filter(request)
    exact = Filters(request, EXECUTION_FILTERS).value("namespace", "EQUALS")
    return [e for e in await find_all(state(request), where) if _keeps(e, ids, exact)]


async def delete_files(app: AppState, execution: Execution) -> None:
    """The execution's files in internal storage: its FILE inputs and its tasks'
    output files (the two places they are written)."""
    for prefix in execution_prefixes(execution.flow_id, execution.id):
        for uri in await app.storage.list(execution.namespace, prefix):
            await app.storage.delete(uri)


async def delete(request: Request) -> Response:
    """As Kestra, the execution's files and logs go with it unless ``deleteStorage=false``
    / ``deleteLogs=false``."""
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    delete_storage = q_bool(request, "deleteStorage", True)
    delete_logs = q_bool(request, "deleteLogs", True)
    if not execution.state.terminated:
        raise ApiError(
            409,
            f"execution {execution.id} is {execution.state.current.value}: kill it first, "
            "only an ended execution can be deleted",
        )
    if await app.backend.executions.delete(execution.id):
        if delete_storage:
            await delete_files(app, execution)
        if delete_logs:
            await app.backend.logs.delete(LogFilter(execution_id=execution.id))
    return no_content()


async def kill(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    refusal = kill_refusal(execution)
    if refusal is not None:
        raise ApiError(409, refusal)
    # The engine kills the execution's subflow executions too (always cascading).
    await send_event(app.backend, execution.id, Kill(at=app.backend.clock()))
    return json_response(execution_json(execution), status=202)


async def restart(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    refusal = restart_refusal(execution)
    if refusal is not None:
        raise ApiError(409, refusal)
    await send_event(app.backend, execution.id, Restart(at=app.backend.clock()))
    return json_response(execution_json(execution), status=202)


async def replay(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    task_run_id = q_str(request, "taskRunId")
    refusal = replay_refusal(execution, task_run_id)
    if refusal is not None:
        # an unknown task run is a bad request; a running execution, a conflict
        raise ApiError(409 if not execution.state.terminated else 422, refusal)
    new = new_id()
    event = Replay(at=app.backend.clock(), new_execution_id=new, task_run_id=task_run_id)
    await send_event(app.backend, execution.id, event)
    # The executor makes the new execution; as Kestra, the answer is that execution
    # (its clients parse one), once it exists. Should the executor be slow or down,
    # its id alone, which the client can poll.
    made = await _appeared(app, new, request)
    if made is not None:
        return json_response(execution_json(made), status=202)
    return json_response(
        {
            "id": new,
            "namespace": execution.namespace,
            "flowId": execution.flow_id,
            "originalId": execution.id,
        },
        status=202,
    )


#: how long a replay waits for the executor to make the new execution
REPLAY_WAIT_SECONDS = 5.0


async def _appeared(app: AppState, execution_id: str, request: Request) -> Execution | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REPLAY_WAIT_SECONDS
    while loop.time() < deadline:
        found = await app.backend.executions.get(execution_id)
        if found is not None:
            return found
        if (
            not await pause(app, min(app.config.poll_seconds, 0.05))
            or await request.is_disconnected()
        ):
            return None
    return None


def resume_specs(flow: Flow, execution: Execution) -> list[Input]:
    tasks = task_index(flow)
    specs: list[Input] = []
    for run in execution.task_run_list:
        task = tasks.get(run.task_id)
        if run.state.current is S.PAUSED and isinstance(task, Pause):
            for raw in task.on_resume:
                try:
                    specs.append(msgspec.convert(raw, Input))
                except msgspec.ValidationError:
                    continue
    return specs


def resume_inputs(specs: list[Input], given: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    out: dict[str, Any] = {}
    for spec in specs:
        raw = given.get(spec.id)
        if raw in (None, ""):
            raw = spec.defaults
        if raw in (None, ""):
            if spec.required:
                problems[spec.id] = "is required"
            continue
        try:
            out[spec.id] = convert(spec, raw)
        except ValueError as exc:
            problems[spec.id] = str(exc)
    if problems:
        raise invalid_inputs(InputError(problems))
    return out


async def _resume_files(
    app: AppState, flow: Flow, execution: Execution, specs: list[Input], form: FormInputs
) -> dict[str, str]:
    """FILE answers of a Pause's ``onResume``, streamed to internal storage beside the
    execution's inputs; each becomes its URI (as Kestra)."""
    files = {spec.id for spec in specs if spec.type.upper() == "FILE"}
    wrong = sorted(name for name in form.files if name not in files)
    if wrong:
        raise ApiError(
            422, f"resume inputs {', '.join(wrong)} are not FILE inputs of the paused task"
        )
    uris: dict[str, str] = {}
    for name, upload in form.files.items():
        path = f"{flow.id}/executions/{execution.id}/resume/{name}/{upload_name(upload.filename)}"
        try:
            uris[name] = await app.storage.put(flow.namespace, path, _chunks(upload))
        except OSError as exc:
            raise ApiError(
                503, f"internal storage cannot store the upload of input `{name}`: {exc.strerror}"
            ) from None
    return uris


async def resume(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    refusal = resume_refusal(execution)
    if refusal is not None:
        raise ApiError(409, refusal)
    flow = await app.flows.get(execution.namespace, execution.flow_id, execution.flow_revision)
    form = await FormInputs.read(request)
    try:
        specs = resume_specs(flow, execution)
        given: dict[str, Any] = dict(form.values)
        given.update(await _resume_files(app, flow, execution, specs, form))
        inputs = resume_inputs(specs, given)
    finally:
        await form.close()
    await send_event(app.backend, execution.id, Resume(at=app.backend.clock(), inputs=inputs))
    if tenant_path_used(request) or request.url.path.endswith("/actions/resume"):
        # Kestra 1.x's clients read the execution back (the old path answers 204)
        return json_response(execution_json(execution))
    return no_content()


class LabelItem(msgspec.Struct, frozen=True):
    key: str
    value: str


async def set_labels(request: Request) -> Response:
    app = state(request)
    execution_id = request.path_params["executionId"]
    items = await json_body(request, list[LabelItem])
    if any(not item.key for item in items):
        raise ApiError(422, "a label needs a non-empty key")
    system = sorted(item.key for item in items if item.key.startswith("system."))
    if system:
        raise ApiError(
            422, f"labels {', '.join(system)} are system labels, set by the server: leave them out"
        )
    # Under the execution's lock: the executor may be saving it at the same time.
    async with app.backend.transaction() as tx:
        execution = await tx.executions.get_for_update(execution_id)
        if execution is None:
            raise not_found(f"execution {execution_id}")
        # system labels (the correlation id) stay, as in Kestra
        kept = tuple(lb for lb in execution.labels if lb["key"].startswith("system."))
        labels = tuple({"key": i.key, "value": i.value} for i in items) + kept
        execution = msgspec.structs.replace(execution, labels=labels)
        await tx.executions.save(execution)
    return json_response(execution_json(execution))


async def follow(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    return EventStream(follow_execution(app, execution))


routes = [
    Route("/api/v1/executions/search", search, methods=["GET"]),
    Route("/api/v1/executions", of_flow, methods=["GET"]),
    Route("/api/v1/executions/{executionId}", get, methods=["GET"]),
    Route("/api/v1/executions/{executionId}", delete, methods=["DELETE"]),
    Route("/api/v1/executions/{executionId}/kill", kill, methods=["DELETE"]),
    Route("/api/v1/executions/{executionId}/restart", restart, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/replay", replay, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/resume", resume, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/labels", set_labels, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/follow", follow, methods=["GET"]),
    # Last: /executions/{executionId}/restart and friends have the same shape.
    Route("/api/v1/executions/{namespace}/{id}", create, methods=["POST"]),
]
