"""More core tasks: ``http.Download``, ``execution.Resume`` and
``templating.TemplatedTask``."""

from __future__ import annotations

import enum
import secrets
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Any, ClassVar, Protocol, cast
from urllib.parse import unquote, urlsplit

import httpx
import yaml

from runtime.flow.model import RunnableTask
from runtime.tasks.context import RunContext, TaskFailure
from runtime.tasks.support import as_bool, seconds

Outputs = dict[str, Any] | None


class Download(RunnableTask, kw_only=True, frozen=True):
    """Streams an HTTP response body into internal storage."""

    uri: str
    method: str = "GET"
    headers: dict[str, Any] = {}
    body: str | None = None
    content_type: str | None = None
    options: dict[str, Any] = {}
    fail_on_empty_response: bool = True

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.http.Download"
    aliases: ClassVar[tuple[str, ...]] = (
        "io.kestra.plugin.fs.http.Download",
        "io.kestra.core.tasks.storages.Downloads",
    )

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Download {self.id!r}"
        uri = str(await ctx.render(self.uri)).replace(" ", "%20")
        if urlsplit(uri).scheme not in ("http", "https"):
            raise TaskFailure(f"{where}: uri must be an http:// or https:// URL, got {uri!r}")
        options: dict[str, Any] = await ctx.render(dict(self.options))
        headers = {str(k): str(v) for k, v in (await ctx.render(dict(self.headers))).items()}
        if self.content_type:
            headers.setdefault("Content-Type", str(await ctx.render(self.content_type)))
        body = await ctx.render(self.body) if self.body is not None else None
        read = seconds(options.get("readTimeout"), where=f"{where} readTimeout")
        connect = seconds(options.get("connectTimeout"), where=f"{where} connectTimeout")
        timeout = httpx.Timeout(read if read is not None else 10.0, connect=connect)
        follow = as_bool(options.get("followRedirects", True), where=f"{where} followRedirects")
        name = PurePosixPath(unquote(urlsplit(uri).path)).name or "download"
        prefix = (
            f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"
        )
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=follow) as client:
            try:
                async with client.stream(
                    str(await ctx.render(self.method)).upper(), uri, headers=headers, content=body
                ) as response:
                    if response.status_code >= 400:
                        raise TaskFailure(
                            f"{where}: {uri} answered HTTP {response.status_code}; check the URL "
                            "and the credentials"
                        )
                    name = _disposition_name(response.headers.get("content-disposition")) or name
                    size = [0]
                    stored = await ctx.storage.put(
                        ctx.namespace,
                        f"{prefix}/{secrets.token_hex(4)}-{name}",
                        _counted(response.aiter_bytes(), size),
                    )
                    code = response.status_code
                    response_headers = {k: response.headers.get_list(k) for k in response.headers}
            except httpx.HTTPError as exc:
                raise TaskFailure(f"{where}: request to {uri} failed: {exc}") from None
        if size[0] == 0 and self.fail_on_empty_response:
            raise TaskFailure(
                f"{where}: {uri} sent an empty body; set failOnEmptyResponse: false to accept it"
            )
        return {"uri": stored, "code": code, "length": size[0], "headers": response_headers}


async def _counted(chunks: AsyncIterator[bytes], size: list[int]) -> AsyncIterator[bytes]:
    """``chunks``, adding up their length in ``size[0]`` as they go through."""
    async for chunk in chunks:
        size[0] += len(chunk)
        yield chunk


def _disposition_name(header: str | None) -> str | None:
    if not header or "filename=" not in header:
        return None
    name = header.split("filename=", 1)[1].split(";", 1)[0].strip().strip('"')
    return PurePosixPath(name).name or None


class _ResumeServices(Protocol):
    async def resume_execution(self, execution_id: str, inputs: dict[str, Any]) -> None: ...


class Resume(RunnableTask, kw_only=True, frozen=True):
    """Resumes a paused execution (by default this one's, which is seldom useful)."""

    execution_id: str | None = None
    namespace: str | None = None
    flow_id: str | None = None
    inputs: dict[str, Any] | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.Resume"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.executions.Resume",)

    async def run(self, ctx: RunContext) -> Outputs:
        services = getattr(ctx, "backend_services", None)
        if services is None:
            raise TaskFailure(f"Resume {self.id!r} needs the worker's backend")
        execution_id = (
            str(await ctx.render(self.execution_id)) if self.execution_id else ctx.execution_id
        )
        inputs = await ctx.render(dict(self.inputs)) if self.inputs else {}
        try:
            await cast(_ResumeServices, services).resume_execution(execution_id, inputs)
        except LookupError as exc:
            raise TaskFailure(f"Resume {self.id!r}: {exc}") from None
        return None


class TemplatedTask(RunnableTask, kw_only=True, frozen=True):
    """Renders ``spec`` (a task in YAML) and runs that task, here, as this one."""

    spec: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.templating.TemplatedTask"

    async def run(self, ctx: RunContext) -> Outputs:
        from runtime.flow.loader import check_flow

        where = f"TemplatedTask {self.id!r}"
        text = str(await ctx.render(self.spec))
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TaskFailure(f"{where}: the rendered spec is not YAML: {exc}") from None
        if not isinstance(spec, dict) or "type" not in spec:
            raise TaskFailure(f"{where}: the rendered spec must be a task mapping with a `type`")
        document = {"id": "templated", "namespace": "templated", "tasks": [{**spec, "id": self.id}]}
        flow, problems = check_flow(document)
        if flow is None:
            listed = "; ".join(f"{p.path}: {p.message}" for p in problems)
            raise TaskFailure(f"{where}: the rendered spec is not a valid task: {listed}")
        (task,) = flow.tasks
        if not isinstance(task, RunnableTask) or isinstance(task, TemplatedTask):
            raise TaskFailure(
                f"{where}: the rendered spec must be a runnable task, not {task.type}"
            )
        return await task.run(ctx)


class ExitState(enum.Enum):
    SUCCESS = "SUCCESS"
    WARNING = "WARNING"
    KILLED = "KILLED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Exit(RunnableTask, kw_only=True, frozen=True):
    """Ends the execution now, in ``state`` (the engine does it when this succeeds;
    tasks still running elsewhere are killed)."""

    state: ExitState = ExitState.SUCCESS

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.Exit"
    exits_execution: ClassVar[bool] = True

    async def run(self, ctx: RunContext) -> Outputs:
        return {"state": self.state.value}


MISC_TASKS: tuple[type[RunnableTask], ...] = (Download, Resume, TemplatedTask, Exit)
