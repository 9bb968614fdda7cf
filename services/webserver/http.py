"""What every route module shares: the app's state, JSON in and out, errors, and the
query-parameter readers that turn a bad value into a 400 naming the parameter."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from backends.protocols import Backend, Storage
from runtime.config import WebserverConfig
from runtime.flow.problems import Problem
from services.flows import FlowCache

JSON = "application/json"


@dataclass
class AppState:
    """What the routes work with; one per app, on ``app.state.runtime``."""

    backend: Backend
    storage: Storage
    config: WebserverConfig
    flows: FlowCache
    #: set when the server stops: live follows end instead of holding the stop up
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def state(request: Request) -> AppState:
    found: AppState = request.app.state.runtime
    return found


class ApiError(Exception):
    """An error the client caused (or may retry), sent as JSON with its status."""

    def __init__(self, status: int, message: str, errors: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = list(errors)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "status": self.status}
        if self.errors:
            out["errors"] = self.errors
        return out


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def flow_problems(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    """Each problem of a flow with its place, for 422 bodies and validation results."""
    return [
        {
            "path": p.path,
            "message": p.message,
            "hint": p.hint,
            "line": p.line or 1,
            "column": p.column or 1,
        }
        for p in problems
    ]


_encoder = msgspec.json.Encoder()


def encode(data: Any) -> bytes:
    return _encoder.encode(data)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(encode(data), status_code=status, media_type=JSON, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)


def too_deep(what: str = "the request body") -> ApiError:
    return ApiError(400, f"{what} is JSON nested too deeply: flatten it")


def decode_json(raw: bytes, type_: Any = Any) -> Any:
    """``raw`` decoded as JSON into ``type_`` (400 naming what is wrong). The names and
    labels these bodies carry cannot hold a NUL character, which PostgreSQL refuses
    (a raw one is not valid JSON already)."""
    if b"\\u0000" in raw:
        raise ApiError(400, "the request body holds a NUL character (\\u0000): remove it")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"the request body is not what this endpoint takes: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec recurses per level of nesting (even to skip an unknown field)
        raise too_deep() from None


def json_or_text(raw: bytes | str) -> Any:
    """Parsed JSON when ``raw`` is JSON, else its text, as Kestra reads webhook bodies
    and KV values (400 for JSON nested too deeply to be handled)."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:
        raise too_deep() from None


async def json_body(request: Request, type_: Any = Any) -> Any:
    """The request body decoded as JSON into ``type_`` (400 naming what is wrong)."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON document")
    return decode_json(raw, type_)


async def text_body(request: Request) -> str:
    raw = await request.body()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None


# -- query parameters -------------------------------------------------------------------
def q_str(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value not in (None, "") else None


def q_int(request: Request, name: str, default: int, lo: int = 0, hi: int = 10**9) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter `{name}`: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query parameter `{name}`: {value} is not within {lo}..{hi}")
    return value


def q_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ApiError(400, f"query parameter `{name}`: {raw!r} is not true or false")


def q_datetime(request: Request, name: str) -> datetime | None:
    raw = q_str(request, name)
    if raw is None:
        return None
    return parse_datetime(raw, f"query parameter `{name}`")


def parse_datetime(raw: str, what: str) -> datetime:
    """An ISO-8601 date-time (``Z`` or an offset; none means UTC)."""
    try:
        value = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError:
        raise ApiError(
            400, f"{what}: {raw!r} is not an ISO-8601 date-time (e.g. 2024-05-01T10:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(400, f"{what}: {raw!r} is out of range") from None


def q_labels(request: Request, name: str = "labels") -> tuple[tuple[str, str], ...]:
    """``labels=key:value`` parameters (repeatable)."""
    out = []
    for item in request.query_params.getlist(name):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ApiError(400, f"query parameter `{name}`: {item!r} is not key:value")
        out.append((key, value))
    return tuple(out)


def paging(request: Request) -> tuple[int, int]:
    """Kestra's ``page`` (from 1) and ``size``: the (limit, offset) to fetch."""
    page = q_int(request, "page", 1, lo=1, hi=1_000_000)
    size = q_int(request, "size", 10, lo=1, hi=1000)
    return size, (page - 1) * size


def paged(results: list[Any], total: int) -> dict[str, Any]:
    return {"results": results, "total": total}


# -- Kestra 1.x search filters ------------------------------------------------------------
_FILTER = re.compile(r"^filters\[([^\]\[]+)\]\[([A-Z_]+)\](?:\[([^\]]*)\])?$")


@dataclass(frozen=True)
class QueryFilter:
    """One ``filters[field][OPERATION]`` (``[key]`` for a map value such as labels)."""

    field: str
    operation: str
    value: str
    key: str | None = None


class Filters:
    """The ``filters[...]`` query parameters of a Kestra 1.x search, checked against
    what the endpoint supports (400 naming the filter and what it takes)."""

    def __init__(self, request: Request, supported: Mapping[str, Sequence[str]]) -> None:
        self.items: list[QueryFilter] = []
        for name, value in request.query_params.multi_items():
            if not name.startswith("filters["):
                continue
            found = _FILTER.match(name)
            if found is None:
                raise ApiError(
                    400,
                    f"query parameter `{name}`: not a filter this server reads; use "
                    "filters[field][OPERATION]=value (groups of `or` are not supported)",
                )
            field, operation, key = found.groups()
            ops = supported.get(field)
            if ops is None:
                known = ", ".join(supported) or "none"
                raise ApiError(
                    400, f"query parameter `{name}`: no filter on `{field}` here (filters: {known})"
                )
            if operation not in ops:
                raise ApiError(
                    400,
                    f"query parameter `{name}`: `{field}` takes the operation(s) "
                    f"{', '.join(ops)}, not {operation}",
                )
            self.items.append(QueryFilter(field, operation, value, key))

    def of(self, field: str) -> list[QueryFilter]:
        return [f for f in self.items if f.field == field]

    def value(self, field: str, *operations: str) -> str | None:
        """The value of the last filter on ``field`` with one of ``operations``."""
        found = [f.value for f in self.of(field) if not operations or f.operation in operations]
        return found[-1] if found else None

    def values(self, field: str) -> list[str]:
        """Every value of ``field``'s filters, comma-separated lists split (IN)."""
        out: list[str] = []
        for item in self.of(field):
            out.extend(v for v in item.value.split(",") if v)
        return out

    def labels(self) -> tuple[tuple[str, str], ...]:
        """``filters[labels][EQUALS][key]=value`` (or ``key:value`` without a key)."""
        out = []
        for item in self.of("labels"):
            if item.key is not None:
                out.append((item.key, item.value))
                continue
            key, sep, value = item.value.partition(":")
            if not sep or not key:
                raise ApiError(
                    400, f"filter on labels: {item.value!r} is not key:value (or use [key])"
                )
            out.append((key, value))
        return tuple(out)

    def date(self, field: str, *operations: str) -> datetime | None:
        raw = self.value(field, *operations)
        return None if raw is None else parse_datetime(raw, f"filter on `{field}`")


#: the operations a namespace filter takes, and what each keeps
NAMESPACE_OPS = ("EQUALS", "NOT_EQUALS", "PREFIX", "STARTS_WITH", "CONTAINS", "IN")


def _namespace_holds(operation: str, value: str, namespace: str) -> bool:
    match operation:
        case "EQUALS":
            return namespace == value
        case "NOT_EQUALS":
            return namespace != value
        case "PREFIX":  # the namespace or one below it, as the old `namespace` parameter
            return namespace == value or namespace.startswith(value + ".")
        case "STARTS_WITH":
            return namespace.startswith(value)
        case "CONTAINS":
            return value.lower() in namespace.lower()
        case "IN":
            return namespace in value.split(",")
    return False


def namespace_matcher(request: Request, filters: Filters) -> Callable[[str], bool]:
    """Which namespaces a search keeps: the old ``namespace`` parameter (that
    namespace or one below it) and each ``filters[namespace][...]``."""
    tests = [(f.operation, f.value) for f in filters.of("namespace")]
    legacy = q_str(request, "namespace")
    if legacy is not None:
        tests.append(("PREFIX", legacy))
    return lambda ns: all(_namespace_holds(op, value, ns) for op, value in tests)
