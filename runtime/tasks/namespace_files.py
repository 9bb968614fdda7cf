"""Namespace files (``io.kestra.plugin.core.namespace.*``): files kept per namespace
in internal storage, under ``_files/`` (``kestra:///<namespace>/_files/<path>``).

- **UploadFiles**: ``filesMap`` (namespace path -> a ``kestra://`` URI or text) and/or
  ``files`` (globs over the working folder, ``glob:`` prefix optional) into
  ``destination`` (default ``/``); ``conflict``: OVERWRITE (default), ERROR or SKIP.
  Outputs ``files``: namespace path -> URI.
- **DownloadFiles**: the namespace files matching ``files`` (globs) copied into this
  execution's storage under ``destination``; outputs ``files``: path -> URI.
- **DeleteFiles**: the namespace files matching ``files``; outputs ``files``: the
  deleted paths -> their former URIs.

Paths are POSIX, relative to the namespace's file root; ``**`` matches across
folders, ``*`` within one.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Protocol, cast

import anyio.to_thread

from runtime.flow.model import RunnableTask
from runtime.tasks import files
from runtime.tasks.context import RunContext, TaskFailure

Outputs = dict[str, Any] | None
ROOT = "_files"


class _Storage(Protocol):
    async def put(self, namespace: str, path: str, data: bytes) -> str: ...
    async def get(self, uri: str) -> bytes: ...
    async def exists(self, uri: str) -> bool: ...
    async def delete(self, uri: str) -> bool: ...
    async def list(self, namespace: str, prefix: str = "") -> list[str]: ...


def _storage(ctx: RunContext, where: str) -> _Storage:
    if not hasattr(ctx.storage, "list"):
        raise TaskFailure(f"{where}: this worker's storage cannot list namespace files")
    return cast(_Storage, ctx.storage)


def _glob(pattern: str) -> re.Pattern[str]:
    """An Ant-like glob (``glob:`` prefix accepted) as a regular expression."""
    text = pattern.removeprefix("glob:").lstrip("/")
    out = []
    i = 0
    while i < len(text):
        if text.startswith("**", i):
            out.append(".*")
            i += 2
        elif text[i] == "*":
            out.append("[^/]*")
            i += 1
        elif text[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(text[i]))
            i += 1
    return re.compile("".join(out))


def _relative(uri: str, namespace: str) -> str:
    return uri.split(f"{namespace}/{ROOT}/", 1)[-1]


async def _matching(storage: _Storage, namespace: str, patterns: list[str]) -> dict[str, str]:
    uris = await storage.list(namespace, f"{ROOT}/")
    compiled = [_glob(p) for p in patterns]
    found = {}
    for uri in uris:
        path = _relative(uri, namespace)
        if any(c.fullmatch(path) for c in compiled):
            found[path] = uri
    return found


async def _patterns(ctx: RunContext, value: Any) -> list[str]:
    rendered = await ctx.render(value)
    return [str(p) for p in (rendered if isinstance(rendered, list) else [rendered])]


class Conflict(enum.Enum):
    OVERWRITE = "OVERWRITE"
    ERROR = "ERROR"
    SKIP = "SKIP"


class UploadFiles(RunnableTask, kw_only=True, frozen=True):
    namespace: str
    files: list[str] | str | None = None
    files_map: dict[str, Any] | str | None = None
    destination: str = "/"
    conflict: Conflict = Conflict.OVERWRITE

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.namespace.UploadFiles"

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"UploadFiles {self.id!r}"
        storage = _storage(ctx, where)
        namespace = str(await ctx.render(self.namespace))
        destination = str(await ctx.render(self.destination)).strip("/")
        sources: dict[str, bytes] = {}
        if self.files_map is not None:
            mapping = await ctx.render(self.files_map)
            if isinstance(mapping, str):
                mapping = json.loads(mapping)
            for name, source in dict(mapping).items():
                text = str(source)
                data = (
                    await ctx.storage.get(text) if text.startswith("kestra://") else text.encode()
                )
                sources[str(PurePosixPath(destination, str(name).lstrip("/")))] = data
        if self.files is not None:
            folder = ctx.workdir
            for pattern in await _patterns(ctx, self.files):
                regex = _glob(pattern)
                for local in sorted(p for p in folder.rglob("*") if p.is_file()):
                    rel = local.relative_to(folder).as_posix()
                    if regex.fullmatch(rel) or fnmatch.fnmatch(rel, pattern.removeprefix("glob:")):
                        sources[str(PurePosixPath(destination, rel))] = local.read_bytes()
        if not sources:
            raise TaskFailure(f"{where}: nothing to upload: set `files` or `filesMap`")
        stored = {}
        for path, data in sources.items():
            files.safe_relative(path, where=where)
            target = f"kestra:///{namespace}/{ROOT}/{path}"
            if await storage.exists(target):
                if self.conflict is Conflict.ERROR:
                    raise TaskFailure(f"{where}: namespace file {path!r} exists (conflict: ERROR)")
                if self.conflict is Conflict.SKIP:
                    continue
            stored["/" + path] = await storage.put(namespace, f"{ROOT}/{path}", data)
        return {"files": stored}


class DownloadFiles(RunnableTask, kw_only=True, frozen=True):
    namespace: str
    files: list[str] | str
    destination: str = ""

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.namespace.DownloadFiles"

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"DownloadFiles {self.id!r}"
        storage = _storage(ctx, where)
        namespace = str(await ctx.render(self.namespace))
        destination = str(await ctx.render(self.destination)).strip("/")
        found = await _matching(storage, namespace, await _patterns(ctx, self.files))
        prefix = (
            f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"
        )
        copied = {}
        for path, uri in sorted(found.items()):
            name = str(PurePosixPath(destination, path)) if destination else path
            copied["/" + path] = await storage.put(
                ctx.namespace, f"{prefix}/{name}", await storage.get(uri)
            )
        return {"files": copied}


class DeleteFiles(RunnableTask, kw_only=True, frozen=True):
    namespace: str
    files: list[str] | str
    delete_parent_folder: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.namespace.DeleteFiles"

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"DeleteFiles {self.id!r}"
        storage = _storage(ctx, where)
        namespace = str(await ctx.render(self.namespace))
        found = await _matching(storage, namespace, await _patterns(ctx, self.files))
        deleted = {}
        for path, uri in sorted(found.items()):
            if await storage.delete(uri):
                deleted["/" + path] = uri
        return {"files": deleted}


async def copy_into(ctx: RunContext, spec: dict[str, Any], folder: Path, where: str) -> list[str]:
    """``namespaceFiles`` of a WorkingDirectory or script task: the flow's namespace
    files matching ``include`` (default all) and not ``exclude``, written under
    ``folder``; ``enabled: false`` turns it off. Returns the paths written."""
    rendered = await ctx.render(dict(spec))
    if rendered.get("enabled", True) in (False, "false"):
        return []
    storage = _storage(ctx, where)
    namespace = str(rendered.get("namespace") or ctx.namespace)
    include = rendered.get("include") or ["**"]
    exclude = [_glob(str(p)) for p in rendered.get("exclude") or []]
    found = await _matching(storage, namespace, [str(p) for p in include])
    written = []
    for path, uri in sorted(found.items()):
        if any(e.fullmatch(path) for e in exclude):
            continue
        target = folder.joinpath(*files.safe_relative(path, where=where).parts)
        await anyio.to_thread.run_sync(_write, target, await storage.get(uri))
        written.append(path)
    return written


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


NAMESPACE_TASKS: tuple[type[RunnableTask], ...] = (UploadFiles, DownloadFiles, DeleteFiles)
