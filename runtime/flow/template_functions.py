"""More of Kestra's Pebble functions: currentEachOutput, errorLogs, fileSize,
fileExists, isFileEmpty, encrypt, decrypt, fileURI, tasksWithState and fromIon.

Each function takes the render's variables and its services first (the template
module passes them); the I/O-backed ones need the worker's services
(:class:`ExecutionServices`) and fail with a clear message elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

from runtime.flow.template_values import ExpressionFailure, java_str, require

_SCHEME = "kestra:///"


@runtime_checkable
class ExecutionServices(Protocol):
    """What the worker gives the functions reading the execution's logs and files."""

    async def error_logs(self) -> list[dict[str, Any]]: ...

    async def file_size(self, uri: str) -> int | None:
        """The size of the file at ``uri``, None when there is none."""
        ...


def current_each_output(variables: Mapping[str, Any], services: Any, outputs: Any) -> Any:
    """The output of the current loop iteration in ``outputs`` (nested by loop value)."""
    if not isinstance(outputs, Mapping):
        raise ExpressionFailure(
            "currentEachOutput() expects the outputs of a task inside a loop, e.g. "
            f"currentEachOutput(outputs.my_task), got {java_str(outputs)!r}"
        )
    current: Any = outputs
    parents = variables.get("parents") or []
    values = [
        parent["taskrun"]["value"]
        for parent in reversed(parents)
        if isinstance(parent, Mapping) and isinstance(parent.get("taskrun"), Mapping)
    ]
    taskrun = variables.get("taskrun")
    if isinstance(taskrun, Mapping) and taskrun.get("value") is not None:
        values.append(taskrun["value"])
    for value in values:
        if not isinstance(current, Mapping) or value not in current:
            return None
        current = current[value]
    return current


def _execution_services(services: Any, name: str) -> ExecutionServices:
    if not isinstance(services, ExecutionServices):
        raise ExpressionFailure(
            f"{name}() reads the execution's logs or files, which only a worker can: "
            "use it in a runnable task's property"
        )
    return services


def _uri(path: Any, name: str, variables: Mapping[str, Any]) -> str:
    text = java_str(require(path))
    if not text.startswith(_SCHEME):
        raise ExpressionFailure(
            f"{name}() expects an internal storage URI (kestra:///...), got {text!r}: "
            "pass a task's file output, e.g. outputs.download.uri"
        )
    execution = variables.get("execution")
    execution_id = execution.get("id") if isinstance(execution, Mapping) else None
    trigger = variables.get("trigger")
    allowed = [execution_id]
    if isinstance(trigger, Mapping):
        allowed.append(trigger.get("executionId"))
    # Kestra's rule: only the files of this execution (or of the execution that
    # triggered it) can be looked at.
    if not any(f"/executions/{e}/" in text for e in allowed if e):
        raise ExpressionFailure(
            f"{name}(): the file {text!r} does not belong to this execution; only its "
            "own files (and those of the execution that triggered it) can be read"
        )
    return text


async def error_logs(variables: Mapping[str, Any], services: Any) -> list[dict[str, Any]]:
    """The ERROR log lines of this execution so far."""
    return await _execution_services(services, "errorLogs").error_logs()


async def file_size(variables: Mapping[str, Any], services: Any, path: Any) -> int:
    uri = _uri(path, "fileSize", variables)
    size = await _execution_services(services, "fileSize").file_size(uri)
    if size is None:
        raise ExpressionFailure(f"fileSize(): no file at {uri!r}")
    return size


async def file_exists(variables: Mapping[str, Any], services: Any, path: Any) -> bool:
    uri = _uri(path, "fileExists", variables)
    return await _execution_services(services, "fileExists").file_size(uri) is not None


async def is_file_empty(variables: Mapping[str, Any], services: Any, path: Any) -> bool:
    uri = _uri(path, "isFileEmpty", variables)
    size = await _execution_services(services, "isFileEmpty").file_size(uri)
    if size is None:
        raise ExpressionFailure(f"isFileEmpty(): no file at {uri!r}")
    return size == 0


def _aes_key(key: Any, name: str) -> bytes:
    try:
        raw = base64.b64decode(java_str(require(key)), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) not in (16, 24, 32):
        raise ExpressionFailure(
            f"{name}(): the key must be a base64-encoded AES key of 16, 24 or 32 bytes, "
            "e.g. the output of `openssl rand -base64 32`"
        )
    return raw


def encrypt(variables: Mapping[str, Any], services: Any, key: Any, plaintext: Any) -> Any:
    """AES-GCM as Kestra writes it: base64 of a 12-byte IV then the ciphertext and tag."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    text = require(plaintext)
    if text is None or text == "":
        return text
    iv = os.urandom(12)
    sealed = AESGCM(_aes_key(key, "encrypt")).encrypt(iv, java_str(text).encode(), None)
    return base64.b64encode(iv + sealed).decode()


def decrypt(variables: Mapping[str, Any], services: Any, key: Any, encrypted: Any) -> Any:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    text = require(encrypted)
    if text is None or text == "":
        return text
    try:
        data = base64.b64decode(java_str(text), validate=True)
        return AESGCM(_aes_key(key, "decrypt")).decrypt(data[:12], data[12:], None).decode()
    except (binascii.Error, ValueError, InvalidTag):
        raise ExpressionFailure(
            "decrypt(): the text was not encrypted with this key (or is not base64)"
        ) from None


def file_uri(variables: Mapping[str, Any], services: Any, path: Any = None) -> str:
    """The URI of a namespace file of the flow's namespace (``read()`` reads it).

    Kestra spells the namespace as folders (``kestra:///my/namespace/_files/x``);
    this storage keeps it as one folder (``kestra:///my.namespace/_files/x``), so the
    URI is the one ``namespace.UploadFiles`` gives for the same file."""
    if path is None:
        raise ExpressionFailure(
            "fileURI() expects an argument 'path' that is a path to a namespace file"
        )
    text = java_str(require(path)).lstrip("/")
    if "../" in text or text == ".." or text.endswith("/.."):
        raise ExpressionFailure(f"fileURI(): the path must not contain '../', got {text!r}")
    flow = variables.get("flow")
    namespace = flow.get("namespace") if isinstance(flow, Mapping) else None
    if not namespace:
        raise ExpressionFailure("fileURI() needs the flow's namespace (flow.namespace)")
    return f"{_SCHEME}{namespace}/_files/{quote(text, safe='/')}"


def tasks_with_state(variables: Mapping[str, Any], services: Any, state: Any = "FAILED") -> Any:
    """The task runs in ``state`` (default FAILED), as ``{taskId, state}`` maps; a
    run inside a loop also has its ``value`` (read from the ``tasks`` variable)."""
    wanted = java_str(require(state)).upper()
    found: list[dict[str, Any]] = []
    tasks = variables.get("tasks")
    for task_id, entry in (tasks or {}).items() if isinstance(tasks, Mapping) else ():
        if not isinstance(entry, Mapping):
            continue
        for key, detail in entry.items():
            if key == "state" and not isinstance(detail, Mapping):
                if str(detail).upper() == wanted:
                    found.append({"taskId": task_id, "state": wanted})
            elif isinstance(detail, Mapping) and str(detail.get("state", "")).upper() == wanted:
                found.append({"taskId": task_id, "state": wanted, "value": key})
    return found


def from_ion(variables: Mapping[str, Any], services: Any, *args: Any) -> Any:
    """One Ion value (Kestra's item files are Ion text) as plain data."""
    if not args:
        raise ExpressionFailure("fromIon() expects an argument 'ion'")
    value = require(args[0])
    if value is None:
        return None
    if not isinstance(value, str):
        raise ExpressionFailure("fromIon() expects an argument 'ion' with type string")
    from amazon.ion import simpleion

    try:
        return _plain_ion(simpleion.loads(value, single_value=True))
    except Exception as exc:  # the parser raises several kinds for bad text
        raise ExpressionFailure(f"fromIon(): invalid Ion: {exc}") from None


def _plain_ion(value: Any) -> Any:
    """Ion values as the plain data templates handle (Kestra's Jackson reading Ion
    into objects): decimals as numbers, symbols as text, timestamps as their Ion
    text, blobs as base64, annotations dropped."""
    from amazon.ion.core import IonType
    from amazon.ion.simple_types import IonPyNull
    from amazon.ion.simpleion import dumps

    kind = getattr(value, "ion_type", None)
    if value is None or isinstance(value, IonPyNull):
        return None
    if kind is IonType.BOOL:
        return bool(value)
    if kind is IonType.INT:
        return int(value)
    if kind in (IonType.FLOAT, IonType.DECIMAL):
        return float(value)
    if kind is IonType.SYMBOL:
        return str(value.text)
    if kind is IonType.TIMESTAMP:
        return str(dumps(value, binary=False)).removeprefix("$ion_1_0").strip()
    if kind in (IonType.BLOB, IonType.CLOB):
        return base64.b64encode(bytes(value)).decode()
    if kind is IonType.STRUCT:
        return {str(k): _plain_ion(v) for k, v in value.items()}
    if kind in (IonType.LIST, IonType.SEXP):
        return [_plain_ion(v) for v in value]
    return str(value)


#: name -> function(variables, services, *args), for sync and async renders
SYNC_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "currentEachOutput": current_each_output,
    "encrypt": encrypt,
    "decrypt": decrypt,
    "fileURI": file_uri,
    "tasksWithState": tasks_with_state,
    "fromIon": from_ion,
}
ASYNC_FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "errorLogs": error_logs,
    "fileSize": file_size,
    "fileExists": file_exists,
    "isFileEmpty": is_file_empty,
}
