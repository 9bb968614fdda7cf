"""Start, follow and list executions through a running server's REST API: what
``runtime execute|logs|executions|triggers --server URL`` use, with the interface of
:class:`services.client.LocalClient`.

Credentials for basic authentication go in the URL (``http://user:pass@host:8080``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import msgspec

from backends.protocols import ExecutionFilter
from runtime.flow.execution import Execution
from runtime.flow.inputs import InputError
from runtime.messages import LogEntry


class RemoteError(RuntimeError):
    """The server refused the request, or cannot be reached."""


class RemoteClient:
    """Talks to the server at ``url`` (e.g. http://127.0.0.1:8080)."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        #: the URL as error messages show it: without the password it may carry
        self.shown_url = _shown(self.url)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach the server at {self.shown_url}: {exc}") from None
        _raise_for(response)
        return response

    async def execute(self, namespace: str, flow_id: str, inputs: Mapping[str, str]) -> Execution:
        """Start an execution; a FILE input given as ``@path`` is uploaded."""
        flow = (await self._request("GET", f"/api/v1/flows/{namespace}/{flow_id}")).json()
        file_inputs = {
            spec.get("id")
            for spec in flow.get("inputs") or ()
            if str(spec.get("type", "")).upper() == "FILE"
        }
        data: dict[str, str] = {}
        with contextlib.ExitStack() as files:
            uploads: dict[str, tuple[str, Any]] = {}
            for name, value in inputs.items():
                if name in file_inputs and value.startswith("@"):
                    path = await asyncio.to_thread(Path(value[1:]).expanduser)
                    try:
                        handle = files.enter_context(await asyncio.to_thread(path.open, "rb"))
                    except OSError as exc:
                        raise InputError({name: f"cannot read {path}: {exc.strerror}"}) from None
                    uploads[name] = (path.name, handle)
                else:
                    data[name] = value
            # multipart with files, a plain form without: the server takes both
            response = await self._request(
                "POST",
                f"/api/v1/executions/{namespace}/{flow_id}",
                data=data,
                files=uploads or None,
            )
        return _execution(response.content)

    async def check_server(self) -> None:
        """The server answers (it carries executions out)."""
        await self._request("GET", "/health")

    async def get(self, execution_id: str) -> Execution:
        response = await self._request("GET", f"/api/v1/executions/{execution_id}")
        return _execution(response.content)

    async def wait(
        self, execution_id: str, on_change: Callable[[Execution], None] | None = None
    ) -> Execution:
        """Until the execution ends or pauses, following it live (Server-Sent Events)."""
        last = await self.get(execution_id)
        if on_change is not None:
            on_change(last)
        while not (last.state.terminated or last.state.current.value == "PAUSED"):
            async for data in self._events(f"/api/v1/executions/{execution_id}/follow"):
                last = _execution(data)
                if on_change is not None:
                    on_change(last)
                if last.state.current.value == "PAUSED":
                    return last
            last = await self.get(execution_id)
        return last

    async def search(
        self, where: ExecutionFilter, *, limit: int, offset: int = 0
    ) -> tuple[list[Execution], int]:
        """Executions matching ``where``, newest first, and how many match in all."""
        params: list[tuple[str, str | int]] = [("size", limit), ("page", offset // limit + 1)]
        if where.namespace:
            params.append(("namespace", where.namespace))
        if where.flow_id:
            params.append(("flowId", where.flow_id))
        params.extend(("state", state.value) for state in where.states or ())
        params.extend(("labels", f"{key}:{value}") for key, value in where.labels or ())
        response = await self._request("GET", "/api/v1/executions/search", params=params)
        page = msgspec.json.decode(response.content, type=_ExecutionPage)
        return page.results, page.total

    async def triggers(
        self, namespace: str | None = None, flow_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every trigger of the deployed flows, in the API's shape."""
        params: dict[str, str | int] = {"size": _MAX_PAGE}
        if namespace:
            params["namespace"] = namespace
        if flow_id:
            params["flowId"] = flow_id
        results: list[dict[str, Any]] = []
        while True:
            params["page"] = len(results) // _MAX_PAGE + 1
            response = await self._request("GET", "/api/v1/triggers/search", params=params)
            body = response.json()
            results.extend(body["results"])
            if not body["results"] or len(results) >= body["total"]:
                return results

    async def logs(self, execution_id: str, *, follow: bool = False) -> AsyncIterator[LogEntry]:
        if not follow:
            response = await self._request("GET", f"/api/v1/logs/{execution_id}")
            for item in response.json():
                yield _log_entry(item)
            return
        async for data in self._events(f"/api/v1/logs/{execution_id}/follow"):
            yield _log_entry(msgspec.json.decode(data))

    async def _events(self, path: str) -> AsyncIterator[bytes]:
        """The ``data`` of each Server-Sent Event of ``path``, until the stream ends."""
        try:
            async with self._http.stream("GET", path, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        yield line[5:].strip().encode()
        except httpx.HTTPError as exc:
            raise RemoteError(f"lost the server at {self.shown_url}: {exc}") from None


#: the largest page the API serves
_MAX_PAGE = 1000


class _ExecutionPage(msgspec.Struct, frozen=True):
    results: list[Execution]
    total: int


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    message = message or f"HTTP {response.status_code} from {_shown(response.request.url)}"
    if response.status_code == 404:
        raise LookupError(message)
    errors = body.get("errors") if isinstance(body, dict) else None
    if response.status_code == 422 and errors and all("input" in e for e in errors):
        raise InputError({e["input"]: e["message"] for e in errors})
    raise RemoteError(f"{message} (HTTP {response.status_code})")


def _shown(url: httpx.URL | str) -> str:
    """``url`` with its password masked: error messages end up in terminals and logs."""
    parsed = httpx.URL(url)
    if not parsed.password:
        return str(parsed)
    return str(parsed.copy_with(username=parsed.username, password="***"))


def _execution(data: bytes) -> Execution:
    return msgspec.json.decode(data, type=Execution)


def _log_entry(item: dict[str, Any]) -> LogEntry:
    return LogEntry(
        execution_id=item["executionId"],
        namespace=item["namespace"],
        flow_id=item["flowId"],
        timestamp=datetime.fromisoformat(item["timestamp"]),
        level=item["level"],
        message=item["message"],
        task_run_id=item.get("taskRunId"),
        task_id=item.get("taskId"),
        attempt=item.get("attemptNumber"),
        seq=item.get("index") or 0,
    )


__all__ = ["RemoteClient", "RemoteError"]
