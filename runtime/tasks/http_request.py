"""``io.kestra.plugin.core.http.Request``: one HTTP request, its response as outputs.

Runs in the worker's event loop with httpx. Properties, as Kestra reads them:
``uri`` (spaces become ``%20``), ``method`` (GET), ``headers``, ``body`` (a string,
or a map/list sent as JSON), ``formData`` (url-encoded, or multipart with
``contentType: multipart/form-data``, where a ``kestra://`` value or a
``{name, content}`` map uploads a file from internal storage), ``contentType``
(``application/json`` for a body), and ``options``: ``readTimeout`` (PT10S),
``connectTimeout``, ``followRedirects`` (true), ``allowFailed`` (false; the
top-level ``allowFailed`` is the deprecated spelling), ``maxContentLength``
(10 MB), ``defaultCharset``, ``auth`` (``{type: BASIC, username, password}`` or
``{type: BEARER, token}``; ``basicAuthUser``/``basicAuthPassword`` too) and
``ssl.insecureTrustAllCertificates``.

Outputs: ``uri``, ``code``, ``headers`` (name -> list of values, names as the
server sent them) and ``body`` (the text; JSON stays a string, as in Kestra; null
when empty). A status >= 400 fails the task unless ``allowFailed``, as in Kestra.
``encryptBody`` is not supported: the body is output in clear, with a warning.
"""

from __future__ import annotations

import json
import ssl
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import httpx

from runtime.tasks.context import RunContext, TaskFailure
from runtime.tasks.support import as_bool, seconds

if TYPE_CHECKING:
    from runtime.tasks.core import HttpRequest

DEFAULT_READ_TIMEOUT: Final = 10.0
DEFAULT_MAX_CONTENT: Final = 10 * 1024 * 1024
_BODY_SNIPPET: Final = 500

_ssl_context: ssl.SSLContext | None = None


def _default_ssl() -> ssl.SSLContext:
    # Building a context loads the CA bundle (tens of ms): once per process.
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


async def run(task: HttpRequest, ctx: RunContext) -> dict[str, Any]:
    """Send the request and return Kestra's outputs."""
    where = f"task {task.id!r}"
    uri = str(await ctx.render(task.uri)).replace(" ", "%20")
    if urlsplit(uri).scheme not in ("http", "https"):
        raise TaskFailure(f"{where}: uri must be an http:// or https:// URL, got {uri!r}")
    method = str(await ctx.render(task.method)).upper()
    options: dict[str, Any] = await ctx.render(dict(task.options))
    headers = {str(k): str(v) for k, v in (await ctx.render(dict(task.headers))).items()}
    content_type = await ctx.render(task.content_type) if task.content_type else None
    allow_failed = task.allow_failed or as_bool(
        options.get("allowFailed", False), where=f"{where} options.allowFailed"
    )
    max_length = int(options.get("maxContentLength") or DEFAULT_MAX_CONTENT)
    charset = str(options.get("defaultCharset") or "utf-8")
    if task.encrypt_body:
        ctx.log.warning(
            f"{where}: encryptBody is not supported by this runtime; the body is output in clear"
        )

    request_args: dict[str, Any] = {}
    if task.form_data:
        form = await ctx.render(dict(task.form_data))
        if content_type == "multipart/form-data":
            request_args["data"], request_args["files"] = await _multipart(form, ctx, where)
        else:
            request_args["data"] = {str(k): _form_text(v) for k, v in form.items()}
    elif task.body is not None:
        body = await ctx.render(task.body)
        if not isinstance(body, str):
            body = json.dumps(body)
        request_args["content"] = body.encode(charset)
        _set_default(headers, "Content-Type", content_type or "application/json")
    elif content_type:
        _set_default(headers, "Content-Type", content_type)

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(
            seconds(options.get("readTimeout"), where=f"{where} options.readTimeout")
            or DEFAULT_READ_TIMEOUT,
            connect=seconds(options.get("connectTimeout"), where=f"{where} options.connectTimeout"),
        ),
        follow_redirects=as_bool(options.get("followRedirects", True), where=where),
        verify=_verify(options),
        auth=_auth(options, where),
    )
    try:
        async with client, client.stream(method, uri, headers=headers, **request_args) as response:
            raw = await _read_limited(response, max_length, where)
    except httpx.TimeoutException as exc:
        raise TaskFailure(f"{where}: {method} {uri} timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise TaskFailure(f"{where}: {method} {uri} failed: {exc or type(exc).__name__}") from None

    text = raw.decode(response.encoding or charset, errors="replace") if raw else None
    if response.status_code >= 400 and not allow_failed:
        snippet = (text or "")[:_BODY_SNIPPET]
        raise TaskFailure(
            f"Failed http request with response code '{response.status_code}' from {method} "
            f"{uri}"
            + (f"; response body: {snippet}" if snippet else "")
            + " (set options.allowFailed: true to accept it)"
        )
    return {
        "uri": uri,
        "code": response.status_code,
        "headers": _headers(response),
        "body": text,
    }


def _set_default(headers: dict[str, str], name: str, value: str) -> None:
    if not any(key.lower() == name.lower() for key in headers):
        headers[name] = value


def _form_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


async def _multipart(
    form: dict[str, Any], ctx: RunContext, where: str
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    data: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for key, value in form.items():
        if isinstance(value, str) and value.startswith("kestra://"):
            files[str(key)] = (_file_name(value), await _read_uri(ctx, value, where))
        elif isinstance(value, dict) and "name" in value and "content" in value:
            content = str(value["content"])
            files[str(key)] = (str(value["name"]), await _read_uri(ctx, content, where))
        else:
            data[str(key)] = _form_text(value)
    return data, files


async def _read_uri(ctx: RunContext, uri: str, where: str) -> bytes:
    if not uri.startswith("kestra://"):
        raise TaskFailure(f"{where}: formData file content must be a kestra:// URI, got {uri!r}")
    try:
        return await ctx.storage.get(uri)
    except ValueError as exc:
        raise TaskFailure(f"{where}: {exc}") from None
    except Exception as exc:
        raise TaskFailure(f"{where}: cannot read {uri} from internal storage: {exc}") from None


def _file_name(uri: str) -> str:
    return PurePosixPath(unquote(urlsplit(uri).path)).name or "file"


def _verify(options: dict[str, Any]) -> ssl.SSLContext | bool:
    ssl_options = options.get("ssl") or {}
    if isinstance(ssl_options, dict) and as_bool(
        ssl_options.get("insecureTrustAllCertificates", False), where="options.ssl"
    ):
        return False
    return _default_ssl()


def _auth(options: dict[str, Any], where: str) -> httpx.Auth | None:
    auth = options.get("auth")
    if isinstance(auth, dict):
        kind = str(auth.get("type", "")).upper()
        if kind == "BASIC":
            return httpx.BasicAuth(str(auth.get("username", "")), str(auth.get("password", "")))
        if kind == "BEARER":
            return _Bearer(str(auth.get("token", "")))
        raise TaskFailure(
            f"{where}: options.auth.type {kind!r} is not supported; use BASIC or BEARER"
        )
    if options.get("basicAuthUser") is not None:
        return httpx.BasicAuth(
            str(options["basicAuthUser"]), str(options.get("basicAuthPassword", ""))
        )
    return None


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


async def _read_limited(response: httpx.Response, limit: int, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise TaskFailure(
                f"{where}: the response body is larger than {limit} bytes; raise "
                "options.maxContentLength or use the Download task"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _headers(response: httpx.Response) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for raw_name, raw_value in response.headers.raw:
        name = raw_name.decode("latin-1")
        key = names.setdefault(name.lower(), name)
        result.setdefault(key, []).append(raw_value.decode("latin-1"))
    return result
