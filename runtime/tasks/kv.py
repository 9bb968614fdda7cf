"""The KV tasks (``io.kestra.plugin.core.kv.*``) and the state tasks
(``io.kestra.plugin.core.state.*``).

KV tasks go through ``ctx.kv``; ``namespace`` defaults to the flow's.

- **Set** stores the rendered ``value`` under ``key`` (converted by ``kvType`` when
  given: STRING, NUMBER, BOOLEAN, DATETIME, DATE, DURATION, JSON), with ``ttl``;
  ``overwrite: false`` fails when the key exists. No outputs. ``description`` is
  accepted and not stored (the KV store keeps no description).
- **Get** outputs ``value`` (null when the key is missing, or TaskFailure with
  ``errorOnMissing``).
- **Delete** outputs ``deleted`` (TaskFailure when missing with ``errorOnMissing``).

State tasks keep, as Kestra does, one JSON document per state name in internal
storage, under the flow's namespace: ``states/<flowId>/<name>.json``, or
``states/<name>.json`` with ``namespace: true`` (shared by the namespace's flows).
With ``taskrunValue: true`` (the default) and a loop value, each value has its own
document, ``.../<name>/<sha256 of the value>.json``.

- **Set** merges ``data`` into the document; outputs ``count`` (keys after the
  merge) and ``key`` (the document's URI). Not safe against concurrent executions,
  as in Kestra.
- **Get** outputs ``data`` and ``count`` (empty when missing, or TaskFailure with
  ``errorOnMissing``).
- **Delete** outputs ``deleted``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from runtime.flow.durations import DurationError, parse_duration
from runtime.tasks.context import RunContext, TaskFailure

if TYPE_CHECKING:
    from runtime.tasks.core import (
        KvDelete,
        KvGet,
        KvSet,
        StateDelete,
        StateGet,
        StateSet,
    )

KV_TYPES = ("STRING", "NUMBER", "BOOLEAN", "DATETIME", "DATE", "DURATION", "JSON")


# -- KV ---------------------------------------------------------------------------
async def _key_and_namespace(task: KvSet | KvGet | KvDelete, ctx: RunContext) -> tuple[str, str]:
    key = await ctx.render(task.key)
    if not isinstance(key, str) or not key:
        raise TaskFailure(f"task {task.id!r}: key must be a non-empty string, got {key!r}")
    namespace = await ctx.render(task.namespace) if task.namespace else None
    return key, str(namespace) if namespace else ctx.namespace


async def kv_set(task: KvSet, ctx: RunContext) -> dict[str, Any] | None:
    key, namespace = await _key_and_namespace(task, ctx)
    value = await ctx.render(task.value)
    if task.kv_type is not None:
        value = _convert(value, str(await ctx.render(task.kv_type)), key)
    if not task.overwrite and await ctx.kv.get(namespace, key) is not None:
        raise TaskFailure(
            f"Cannot set value for key '{key}' in namespace '{namespace}': the key already "
            "exists and `overwrite` is false"
        )
    ttl = task.ttl.total_seconds() if task.ttl is not None else None
    if ttl is not None and ttl <= 0:
        raise TaskFailure(f"task {task.id!r}: ttl must be a positive duration, got {task.ttl}")
    await ctx.kv.set(namespace, key, value, ttl_seconds=ttl)
    return None


async def kv_get(task: KvGet, ctx: RunContext) -> dict[str, Any] | None:
    key, namespace = await _key_and_namespace(task, ctx)
    entry = await ctx.kv.get(namespace, key)
    if entry is None and task.error_on_missing:
        raise TaskFailure(
            f"No value found for key '{key}' in namespace '{namespace}' and "
            "`errorOnMissing` is true"
        )
    return {"value": entry.value if entry is not None else None}


async def kv_delete(task: KvDelete, ctx: RunContext) -> dict[str, Any] | None:
    key, namespace = await _key_and_namespace(task, ctx)
    deleted = await ctx.kv.delete(namespace, key)
    if not deleted and task.error_on_missing:
        raise TaskFailure(
            f"No value found for key '{key}' in namespace '{namespace}' and "
            "`errorOnMissing` is true"
        )
    return {"deleted": deleted}


def _convert(value: Any, kv_type: str, key: str) -> Any:
    kind = kv_type.strip().upper()
    bad = f"key '{key}': value {value!r} is not a valid {kind}"
    if kind == "STRING":
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "NUMBER":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        try:
            number = float(str(value).strip())
        except ValueError:
            raise TaskFailure(bad) from None
        return int(number) if number.is_integer() and "." not in str(value) else number
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            raise TaskFailure(bad)
        return text == "true"
    if kind in ("DATETIME", "DATE"):
        text = str(value).strip()
        try:
            if kind == "DATE":
                date.fromisoformat(text)
            else:
                datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise TaskFailure(bad) from None
        return text
    if kind == "DURATION":
        try:
            parse_duration(str(value))
        except DurationError:
            raise TaskFailure(bad) from None
        return str(value)
    if kind == "JSON":
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise TaskFailure(bad) from None
    raise TaskFailure(f"key '{key}': unknown kvType {kv_type!r}; use one of {', '.join(KV_TYPES)}")


# -- state ------------------------------------------------------------------------
async def _state_path(task: StateSet | StateGet | StateDelete, ctx: RunContext) -> tuple[str, str]:
    """``(path in the flow's namespace, the name)`` of the task's state document."""
    name = str(await ctx.render(task.name))
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise TaskFailure(
            f"task {task.id!r}: invalid state name {name!r}; use a plain name without '/'"
        )
    base = f"states/{name}" if task.namespace else f"states/{ctx.flow_id}/{name}"
    value = (ctx.variables.get("taskrun") or {}).get("value")
    if task.taskrun_value and value is not None:
        digest = hashlib.sha256(str(value).encode()).hexdigest()
        return f"{base}/{digest}.json", name
    return f"{base}.json", name


def _uri(ctx: RunContext, path: str) -> str:
    return f"kestra:///{ctx.namespace}/{path}"


async def _read_state(ctx: RunContext, uri: str) -> dict[str, Any] | None:
    if not await ctx.storage.exists(uri):
        return None
    raw = await ctx.storage.get(uri)
    try:
        data = json.loads(raw)
    except ValueError:
        raise TaskFailure(f"the state document {uri} is not valid JSON") from None
    if not isinstance(data, dict):
        raise TaskFailure(f"the state document {uri} does not hold a JSON object")
    return data


async def state_set(task: StateSet, ctx: RunContext) -> dict[str, Any] | None:
    path, _ = await _state_path(task, ctx)
    data = await ctx.render(dict(task.data))
    merged = {**(await _read_state(ctx, _uri(ctx, path)) or {}), **data}
    try:
        payload = json.dumps(merged).encode()
    except (TypeError, ValueError) as exc:
        raise TaskFailure(f"task {task.id!r}: state data is not JSON-serialisable: {exc}") from None
    uri = await ctx.storage.put(ctx.namespace, path, payload)
    return {"count": len(merged), "key": uri}


async def state_get(task: StateGet, ctx: RunContext) -> dict[str, Any] | None:
    path, name = await _state_path(task, ctx)
    data = await _read_state(ctx, _uri(ctx, path))
    if data is None:
        if task.error_on_missing:
            raise TaskFailure(f"Unable to find the state file '{name}' ({_uri(ctx, path)})")
        data = {}
    return {"count": len(data), "data": data}


async def state_delete(task: StateDelete, ctx: RunContext) -> dict[str, Any] | None:
    path, name = await _state_path(task, ctx)
    deleted = await ctx.storage.delete(_uri(ctx, path))
    if not deleted and task.error_on_missing:
        raise TaskFailure(f"Unable to find the state file '{name}' ({_uri(ctx, path)})")
    return {"deleted": deleted}
