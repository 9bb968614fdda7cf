"""Kestra's ``io.kestra.plugin.core.storage.*`` tasks: files in internal storage.

Files are written under the task run's folder
(``<flow>/executions/<execution>/tasks/<task>/<task run>/``) as Kestra does. Item
files (FilterItems, DeduplicateItems) hold one JSON value per line; Kestra writes
Amazon Ion there, whose plain values (strings, numbers, lists, maps with quoted
keys) are the same text.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Protocol, cast

import anyio
import msgspec

from runtime.flow.context import is_truthy
from runtime.flow.model import RunnableTask
from runtime.flow.template import TemplateError
from runtime.tasks import files
from runtime.tasks.context import RunContext, TaskFailure

Outputs = dict[str, Any] | None


class _FullStorage(Protocol):
    async def put(self, namespace: str, path: str, data: bytes | AsyncIterator[bytes]) -> str: ...
    async def get(self, uri: str) -> bytes: ...
    async def exists(self, uri: str) -> bool: ...
    async def delete(self, uri: str) -> bool: ...
    async def size(self, uri: str) -> int: ...
    async def list(self, namespace: str, prefix: str = "") -> list[str]: ...


def _storage(ctx: RunContext, what: str) -> _FullStorage:
    storage = ctx.storage
    for method in ("size", "list"):
        if not hasattr(storage, method):
            raise TaskFailure(f"{what}: this worker's storage cannot {method} files")
    return cast(_FullStorage, storage)


def _prefix(ctx: RunContext) -> str:
    return f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"


async def _put(ctx: RunContext, data: bytes, extension: str) -> str:
    extension = extension if extension.startswith(".") or not extension else f".{extension}"
    name = f"{secrets.token_hex(8)}{extension}"
    return await ctx.storage.put(ctx.namespace, f"{_prefix(ctx)}/{name}", data)


async def _get(ctx: RunContext, uri: Any, what: str) -> bytes:
    text = str(uri)
    if not text.startswith("kestra://"):
        raise TaskFailure(f"{what}: expected an internal storage URI (kestra:///...), got {text!r}")
    try:
        return await ctx.storage.get(text)
    except (FileNotFoundError, KeyError, LookupError) as exc:
        raise TaskFailure(f"{what}: no file at {text!r} ({exc})") from None


def _items(data: bytes, what: str) -> list[Any]:
    items = []
    for number, line in enumerate(data.decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError:
            raise TaskFailure(
                f"{what}: line {number} is not a JSON value: {line[:120]!r} (item files hold "
                "one value per line)"
            ) from None
    return items


def _lines(items: list[Any]) -> bytes:
    return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()


class LocalFiles(RunnableTask, kw_only=True, frozen=True):
    """Writes files into the working folder and stores the ones matching ``outputs``
    (inside a WorkingDirectory, its children share that folder)."""

    inputs: dict[str, Any] | str | None = None
    outputs: list[str] = []

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.LocalFiles"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.storages.LocalFiles",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"LocalFiles {self.id!r}"
        await files.write_input_files(ctx, self.inputs, ctx.workdir, where=where)
        uris = await files.upload_output_files(ctx, list(self.outputs), ctx.workdir, where=where)
        return {"uris": uris}


class Write(RunnableTask, kw_only=True, frozen=True):
    content: Any
    extension: str = ".ion"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.Write"

    async def run(self, ctx: RunContext) -> Outputs:
        content = await ctx.render(self.content)
        text = content if isinstance(content, str) else json.dumps(content)
        return {"uri": await _put(ctx, text.encode(), str(await ctx.render(self.extension)))}


class Concat(RunnableTask, kw_only=True, frozen=True):
    files: list[str] | str
    separator: str | None = None
    extension: str = ".tmp"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.Concat"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.storages.Concat",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Concat {self.id!r}"
        listed = await ctx.render(self.files)
        if isinstance(listed, str):
            try:
                listed = json.loads(listed)
            except ValueError:
                raise TaskFailure(
                    f"{where}: files must be a list of URIs or a JSON array"
                ) from None
        if not isinstance(listed, list):
            raise TaskFailure(f"{where}: files must be a list of URIs")
        separator = (await ctx.render(self.separator) or "").encode()
        parts = [await _get(ctx, uri, where) for uri in listed]
        data = separator.join(parts) if separator else b"".join(parts)
        return {"uri": await _put(ctx, data, str(await ctx.render(self.extension)))}


class Size(RunnableTask, kw_only=True, frozen=True):
    uri: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.Size"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.storages.Size",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Size {self.id!r}"
        uri = str(await ctx.render(self.uri))
        storage = _storage(ctx, where)
        if not await storage.exists(uri):
            raise TaskFailure(f"{where}: no file at {uri!r}")
        return {"size": await storage.size(uri)}


class Delete(RunnableTask, kw_only=True, frozen=True):
    uri: str
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.Delete"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.storages.Delete",)

    async def run(self, ctx: RunContext) -> Outputs:
        uri = str(await ctx.render(self.uri))
        deleted = await ctx.storage.delete(uri)
        if not deleted and self.error_on_missing:
            raise TaskFailure(f"Delete {self.id!r}: no file at {uri!r} (errorOnMissing is true)")
        return {"uri": uri, "deleted": deleted}


class Split(RunnableTask, kw_only=True, frozen=True):
    from_: str = msgspec.field(name="from")
    bytes: str | None = None
    partitions: int | None = None
    rows: int | None = None
    separator: str = "\n"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.Split"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.storages.Split",)

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"Split {self.id!r}"
        chosen = [x for x in (self.bytes, self.partitions, self.rows) if x is not None]
        if len(chosen) != 1:
            raise TaskFailure(f"{where}: set exactly one of `bytes`, `partitions` or `rows`")
        data = await _get(ctx, await ctx.render(self.from_), where)
        separator = str(await ctx.render(self.separator)).encode()
        size = str(await ctx.render(self.bytes)) if self.bytes is not None else None
        chunks = split_rows(data, separator, self.rows, self.partitions, size, where)
        uris = []
        for chunk in chunks:
            body = b"".join(row + separator for row in chunk)
            uris.append(await _put(ctx, body, ".ion"))
        return {"uris": uris}


def split_rows(
    data: bytes,
    separator: bytes,
    rows: int | None,
    partitions: int | None,
    size: str | None,
    where: str,
) -> list[list[bytes]]:
    """The rows of ``data`` in chunks: ``rows`` per chunk, ``partitions`` chunks (rows
    dealt round-robin) or chunks of at most ``size`` bytes (Kestra's three ways)."""
    lines = data.split(separator)
    if lines and lines[-1] == b"":
        lines.pop()
    if rows is not None:
        return [lines[i : i + rows] for i in range(0, len(lines), max(1, rows))]
    if partitions is not None:
        count = max(1, partitions)
        return [chunk for chunk in (lines[i::count] for i in range(count)) if chunk]
    limit = _parse_bytes(size or "", where)
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    used = 0
    for line in lines:
        if current and used + len(line) + len(separator) > limit:
            chunks.append(current)
            current, used = [], 0
        current.append(line)
        used += len(line) + len(separator)
    if current:
        chunks.append(current)
    return chunks


def _parse_bytes(text: str, where: str) -> int:
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[: -len(unit)].strip().isdigit():
            return int(upper[: -len(unit)]) * factor
    if upper.isdigit():
        return int(upper)
    raise TaskFailure(f"{where}: `bytes` must be a size such as 1024, 10KB or 5MB, got {text!r}")


class FilterType(enum.Enum):
    INCLUDE = "INCLUDE"
    EXCLUDE = "EXCLUDE"


class ErrorOrNullBehavior(enum.Enum):
    FAIL = "FAIL"
    INCLUDE = "INCLUDE"
    EXCLUDE = "EXCLUDE"


class FilterItems(RunnableTask, kw_only=True, frozen=True):
    from_: str = msgspec.field(name="from")
    filter_condition: str
    filter_type: FilterType = FilterType.INCLUDE
    error_or_null_behavior: ErrorOrNullBehavior = ErrorOrNullBehavior.FAIL

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.FilterItems"

    async def run(self, ctx: RunContext) -> Outputs:
        where = f"FilterItems {self.id!r}"
        items = _items(await _get(ctx, await ctx.render(self.from_), where), where)
        kept = []
        for item in items:
            try:
                verdict = await ctx.render(self.filter_condition, _item_variables(item))
                keep: bool | None = None if verdict in (None, "") else is_truthy(verdict)
            except TemplateError as exc:
                if self.error_or_null_behavior is ErrorOrNullBehavior.FAIL:
                    raise TaskFailure(f"{where}: the condition failed on {item!r}: {exc}") from None
                keep = None
            if keep is None:
                if self.error_or_null_behavior is ErrorOrNullBehavior.FAIL:
                    raise TaskFailure(f"{where}: the condition rendered nothing for {item!r}")
                if self.error_or_null_behavior is ErrorOrNullBehavior.INCLUDE:
                    kept.append(item)
                continue
            if keep == (self.filter_type is FilterType.INCLUDE):
                kept.append(item)
        uri = await _put(ctx, _lines(kept), ".ion")
        return {
            "uri": uri,
            "processedItemsTotal": len(items),
            "droppedItemsTotal": len(items) - len(kept),
        }


def _item_variables(item: Any) -> dict[str, Any]:
    # Kestra renders the condition with the item's own fields as variables.
    return dict(item) if isinstance(item, dict) else {"value": item}


class DeduplicateItems(RunnableTask, kw_only=True, frozen=True):
    from_: str = msgspec.field(name="from")
    expr: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.DeduplicateItems"

    async def run(self, ctx: RunContext) -> Outputs:
        """Keeps the last item of each key, where it stands in the file (Kestra's rule)."""
        where = f"DeduplicateItems {self.id!r}"
        items = _items(await _get(ctx, await ctx.render(self.from_), where), where)
        last: dict[str, int] = {}
        for position, item in enumerate(items):
            last[str(await ctx.render(self.expr, _item_variables(item)))] = position
        kept = [items[position] for position in sorted(last.values())]
        uri = await _put(ctx, _lines(kept), ".ion")
        return {
            "uri": uri,
            "numKeys": len(last),
            "processedItemsTotal": len(items),
            "droppedItemsTotal": len(items) - len(kept),
        }


STORAGE_TASKS: tuple[type[RunnableTask], ...] = (
    LocalFiles,
    Write,
    Concat,
    Size,
    Delete,
    Split,
    FilterItems,
    DeduplicateItems,
)
_ = anyio
