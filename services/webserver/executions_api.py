"""``/api/v1/executions``: create (inputs and FILE uploads, optional wait), get,
search, delete, kill, restart, replay, resume, labels, output files, live follow."""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from backends.protocols import ExecutionFilter, ExecutionSortField
from runtime.flow.durations import DurationError, parse_duration
from runtime.flow.engine import task_index
from runtime.flow.events import ExecutionCreated, Kill, Replay, Restart, Resume
from runtime.flow.execution import Execution, new_execution, to_kestra_dict
from runtime.flow.ids import new_id
from runtime.flow.inputs import InputError, convert, resolve_inputs
from runtime.flow.model import Flow, Input, Pause
from runtime.flow.states import StateType
from runtime.log import get_logger
from runtime.messages import EXECUTOR_QUEUE, encode_event
from services.executor import send_event, submit
from services.webserver.http import (
    ApiError,
    AppState,
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
from services.webserver.sse import EventStream, follow_execution, pause

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


async def _start(
    app: AppState, execution: Execution, scheduled: datetime | None, now: datetime
) -> None:
    if scheduled is not None and scheduled > now:
        # Stored now, started when the date comes: its start event stays hidden until
        # then (one transaction, as submit).
        started = encode_event(ExecutionCreated(at=scheduled))
        async with app.backend.transaction() as tx:
            await tx.executions.save(execution)
            await tx.queues.publish(
                EXECUTOR_QUEUE, [(execution.id, started)], available_at=scheduled
            )
    else:
        await submit(app.backend, execution)


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
            inputs = resolve_inputs(flow, given, now=now)
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
        await _start(app, execution, scheduled, now)
    except BaseException:
        # Refused, or not stored (the database failed, the client left): nothing will
        # ever read the uploads.
        await asyncio.shield(_delete_all(app, stored))
        raise
    finally:
        await form.close()
    if wait:
        execution = await wait_end(app, execution_id, request)
    return json_response(to_kestra_dict(execution))


async def get(request: Request) -> Response:
    execution = await load_execution(state(request), request.path_params["executionId"])
    return json_response(to_kestra_dict(execution))


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


def _states(request: Request) -> tuple[StateType, ...] | None:
    names = request.query_params.getlist("state")
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


async def search(request: Request) -> Response:
    app = state(request)
    limit, offset = paging(request)
    sort = q_str(request, "sort") or "state.startDate:desc"
    field, _, direction = sort.partition(":")
    if field not in _SORTS or direction not in ("", "asc", "desc"):
        known = ", ".join(_SORTS)
        raise ApiError(400, f"query parameter `sort`: {sort!r}: use one of {known}, :asc or :desc")
    started_after = q_datetime(request, "startDate")
    started_before = q_datetime(request, "endDate")
    time_range = q_str(request, "timeRange")
    if time_range is not None:
        if started_after is not None:
            raise ApiError(400, "query parameters `startDate` and `timeRange`: give one, not both")
        try:
            span = abs(parse_duration(time_range))
        except DurationError:
            raise ApiError(
                400, f"query parameter `timeRange`: {time_range!r} is not an ISO-8601 duration"
            ) from None
        try:
            started_after = app.backend.clock() - span
        except OverflowError:
            raise ApiError(
                400, f"query parameter `timeRange`: {time_range!r} is too long"
            ) from None
    where = ExecutionFilter(
        namespace=q_str(request, "namespace"),
        flow_id=q_str(request, "flowId"),
        states=_states(request),
        started_after=started_after,
        started_before=started_before,
        labels=q_labels(request),
        query=q_str(request, "q"),
    )
    found, total = await app.backend.executions.find(
        where, sort=_SORTS[field], descending=direction != "asc", limit=limit, offset=offset
    )
    return json_response(paged([to_kestra_dict(e) for e in found], total))


async def _delete_files(app: AppState, execution: Execution) -> None:
    """The execution's files in internal storage: its FILE inputs and its tasks'
    output files (the two places they are written)."""
    for prefix in (
        f"executions/{execution.id}/",
        f"{execution.flow_id}/executions/{execution.id}/",
    ):
        for uri in await app.storage.list(execution.namespace, prefix):
            await app.storage.delete(uri)


async def delete(request: Request) -> Response:
    """As Kestra, the execution's files go with it unless ``deleteStorage=false``."""
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    delete_storage = q_bool(request, "deleteStorage", True)
    if not execution.state.terminated:
        raise ApiError(
            409,
            f"execution {execution.id} is {execution.state.current.value}: kill it first, "
            "only an ended execution can be deleted",
        )
    if await app.backend.executions.delete(execution.id) and delete_storage:
        await _delete_files(app, execution)
    return no_content()


async def kill(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    if execution.state.terminated or execution.state.current is S.KILLING:
        raise ApiError(
            409, f"execution {execution.id} is {execution.state.current.value}: nothing to kill"
        )
    # The engine kills the execution's subflow executions too (always cascading).
    await send_event(app.backend, execution.id, Kill(at=app.backend.clock()))
    return json_response(to_kestra_dict(execution), status=202)


async def restart(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    current = execution.state.current
    if not (current.terminated or current is S.PAUSED):
        raise ApiError(
            409, f"execution {execution.id} is {current.value}: only an ended one can restart"
        )
    if not any(r.state.current in (S.FAILED, S.PAUSED) for r in execution.task_run_list):
        raise ApiError(409, f"execution {execution.id} has no failed task run to restart")
    await send_event(app.backend, execution.id, Restart(at=app.backend.clock()))
    return json_response(to_kestra_dict(execution), status=202)


async def replay(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    if not execution.state.terminated:
        raise ApiError(
            409,
            f"execution {execution.id} is {execution.state.current.value}: "
            "only an ended execution can be replayed",
        )
    task_run_id = q_str(request, "taskRunId")
    if task_run_id is not None and execution.find(task_run_id) is None:
        raise ApiError(422, f"execution {execution.id} has no task run {task_run_id!r}")
    new = new_id()
    event = Replay(at=app.backend.clock(), new_execution_id=new, task_run_id=task_run_id)
    await send_event(app.backend, execution.id, event)
    return json_response(
        {
            "id": new,
            "namespace": execution.namespace,
            "flowId": execution.flow_id,
            "originalId": execution.id,
        },
        status=202,
    )


def _resume_specs(flow: Flow, execution: Execution) -> list[Input]:
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


def _resume_inputs(specs: list[Input], given: dict[str, Any]) -> dict[str, Any]:
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
    if execution.state.current is not S.PAUSED:
        raise ApiError(
            409,
            f"execution {execution.id} is {execution.state.current.value}: only a paused "
            "execution can be resumed",
        )
    flow = await app.flows.get(execution.namespace, execution.flow_id, execution.flow_revision)
    form = await FormInputs.read(request)
    try:
        specs = _resume_specs(flow, execution)
        given: dict[str, Any] = dict(form.values)
        given.update(await _resume_files(app, flow, execution, specs, form))
        inputs = _resume_inputs(specs, given)
    finally:
        await form.close()
    await send_event(app.backend, execution.id, Resume(at=app.backend.clock(), inputs=inputs))
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
    return json_response(to_kestra_dict(execution))


async def file(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    uri = q_str(request, "path")
    if uri is None:
        raise ApiError(400, "query parameter `path` is required: the kestra:/// URI of the file")
    prefix = f"kestra:///{execution.namespace}/"
    rest = uri.removeprefix(prefix)
    # Where its FILE inputs and its tasks' output files are written; nothing else of
    # the namespace's storage (KV state files, other executions' files) is served.
    homes = (f"executions/{execution.id}/", f"{execution.flow_id}/executions/{execution.id}/")
    if rest == uri or not rest.startswith(homes):
        raise ApiError(
            422,
            f"{uri!r} is not a file of execution {execution.id} "
            f"(its files start {prefix}{homes[0]} or {prefix}{homes[1]})",
        )
    try:
        exists = await app.storage.exists(uri)
    except ValueError as exc:
        raise ApiError(422, f"{uri!r}: {exc}") from None
    if not exists:
        raise not_found(f"file {uri}")
    name = quote(posixpath.basename(rest))
    return StreamingResponse(
        app.storage.open(uri),
        media_type="application/octet-stream",
        headers={"content-disposition": f"attachment; filename*=UTF-8''{name}"},
    )


async def follow(request: Request) -> Response:
    app = state(request)
    execution = await load_execution(app, request.path_params["executionId"])
    return EventStream(follow_execution(app, execution))


routes = [
    Route("/api/v1/executions/search", search, methods=["GET"]),
    Route("/api/v1/executions/{executionId}", get, methods=["GET"]),
    Route("/api/v1/executions/{executionId}", delete, methods=["DELETE"]),
    Route("/api/v1/executions/{executionId}/kill", kill, methods=["DELETE"]),
    Route("/api/v1/executions/{executionId}/restart", restart, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/replay", replay, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/resume", resume, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/labels", set_labels, methods=["POST"]),
    Route("/api/v1/executions/{executionId}/file", file, methods=["GET"]),
    Route("/api/v1/executions/{executionId}/follow", follow, methods=["GET"]),
    # Last: /executions/{executionId}/restart and friends have the same shape.
    Route("/api/v1/executions/{namespace}/{id}", create, methods=["POST"]),
]
