"""Files between a task's working folder and internal storage: ``inputFiles`` in,
``outputFiles`` out (script tasks and WorkingDirectory)."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, Final

import anyio.to_thread

from runtime.tasks.context import RunContext, TaskFailure

_CHUNK: Final = 1 << 20


def safe_relative(name: str, *, where: str) -> PurePosixPath:
    """``name`` as a path inside the working folder, else TaskFailure."""
    if not name or "\x00" in name or name.startswith("/"):
        raise TaskFailure(f"{where}: file name {name!r} must be a relative path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise TaskFailure(f"{where}: file name {name!r} must stay inside the working folder")
    return PurePosixPath(*parts)


async def write_input_files(
    ctx: RunContext,
    spec: Any,
    folder: Path,
    *,
    where: str,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Render ``spec`` (a map of file name -> content or ``kestra://`` URI, or a
    template rendering to such a map as JSON) and write the files under ``folder``.
    Returns the names written."""
    if spec is None:
        return []
    rendered = await ctx.render(spec, extra)
    if isinstance(rendered, str):
        try:
            rendered = json.loads(rendered) if rendered.strip() else {}
        except ValueError:
            raise TaskFailure(
                f"{where}: inputFiles must be a map of file name to content (or a template "
                f"rendering to a JSON object), got {rendered[:200]!r}"
            ) from None
    if not isinstance(rendered, dict):
        raise TaskFailure(f"{where}: inputFiles must be a map of file name to content")
    written: list[str] = []
    for name, content in rendered.items():
        target = folder.joinpath(*safe_relative(str(name), where=f"{where} inputFiles").parts)
        if isinstance(content, str) and content.startswith("kestra://"):
            await _download(ctx, content, target, where)
        else:
            text = content if isinstance(content, str) else json.dumps(content)
            await anyio.to_thread.run_sync(_write_text, target, text)
        written.append(str(name))
    return written


async def _download(ctx: RunContext, uri: str, target: Path, where: str) -> None:
    try:
        opener = getattr(ctx.storage, "open", None)
        if opener is not None:  # stream when the storage can (backends' Storage does)
            await anyio.to_thread.run_sync(_prepare, target)
            handle = await anyio.to_thread.run_sync(target.open, "wb")
            try:
                async for chunk in opener(uri):
                    await anyio.to_thread.run_sync(handle.write, chunk)
            finally:
                handle.close()
        else:
            data = await ctx.storage.get(uri)
            await anyio.to_thread.run_sync(_write_bytes, target, data)
    except TaskFailure:
        raise
    except Exception as exc:
        raise TaskFailure(f"{where}: cannot copy {uri} into the working folder: {exc}") from None


def _prepare(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)


def _write_text(target: Path, text: str) -> None:
    _prepare(target)
    target.write_text(text, encoding="utf-8")


def _write_bytes(target: Path, data: bytes) -> None:
    _prepare(target)
    target.write_bytes(data)


def match_output_files(folder: Path, patterns: list[str]) -> dict[str, Path]:
    """Files under ``folder`` matching the glob ``patterns`` (``**`` recurses), by
    their path relative to ``folder``. Folders, and links leading outside, are skipped."""
    base = Path(os.path.realpath(folder))
    found: dict[str, Path] = {}
    for pattern in patterns:
        for rel in sorted(glob.glob(pattern, root_dir=folder, recursive=True)):
            path = folder / rel
            real = Path(os.path.realpath(path))
            if not real.is_file() or base not in real.parents:
                continue
            found[PurePosixPath(Path(os.path.normpath(rel)).as_posix()).as_posix()] = path
    return found


async def upload_output_files(
    ctx: RunContext, patterns: list[str], folder: Path, *, where: str
) -> dict[str, str]:
    """Store the files matching ``patterns`` (rendered) and return ``{name: uri}``."""
    if not patterns:
        return {}
    rendered = [str(p) for p in await ctx.render(list(patterns))]
    matches = await anyio.to_thread.run_sync(match_output_files, folder, rendered)
    return await upload_files(ctx, matches, where=where)


async def upload_files(ctx: RunContext, files: dict[str, Path], *, where: str) -> dict[str, str]:
    """Store ``files`` under this task run's folder of internal storage; ``{name: uri}``."""
    prefix = f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"
    uris: dict[str, str] = {}
    for name, path in files.items():
        try:
            uris[name] = await ctx.storage.put(ctx.namespace, f"{prefix}/{name}", _read(path))
        except Exception as exc:
            # The storage already retried what a retry could fix (an object store's
            # parts, a store briefly unreachable): what is left fails this task run,
            # named, and never the worker.
            raise TaskFailure(f"{where}: cannot store output file {name!r}: {exc}") from None
    return uris


def execution_prefixes(flow_id: str, execution_id: str) -> tuple[str, str]:
    """Where an execution's files are, in its namespace: its FILE inputs (stored by
    the webserver) and its tasks' output files (``upload_files``)."""
    return f"executions/{execution_id}/", f"{flow_id}/executions/{execution_id}/"


async def purge_execution_files(ctx: RunContext) -> list[str]:
    """Delete every file of the running execution from internal storage; the URIs."""
    deleted: list[str] = []
    for prefix in execution_prefixes(ctx.flow_id, ctx.execution_id):
        for uri in await ctx.storage.list(ctx.namespace, prefix):
            if await ctx.storage.delete(uri):
                deleted.append(uri)
    return deleted


async def _read(path: Path) -> AsyncIterator[bytes]:
    handle = await anyio.to_thread.run_sync(path.open, "rb")
    try:
        while chunk := await anyio.to_thread.run_sync(handle.read, _CHUNK):
            yield chunk
    finally:
        handle.close()
