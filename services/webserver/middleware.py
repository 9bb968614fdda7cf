"""ASGI middleware of the API: request size limits, basic authentication, and the
refusal of NUL characters in URLs.

Both are plain ASGI (no per-request Request object) so they cost little on the
webhook path, and so the size limit sees the body as it streams in: a request past
its limit is refused without being read whole.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.config import WebserverUser
from services.webserver.http import ApiError, encode

#: reachable without credentials: load balancers and orchestrators probe these
PUBLIC_PATHS = frozenset({"/health", "/health/ready"})
#: where webhooks are called (with a tenant, or without); their key is their credential
#: unless webhook_auth is set
WEBHOOK_PREFIX = "/api/v1/executions/webhook/"
_TENANT_WEBHOOK = re.compile(r"^/api/v1/[^/]+/executions/webhook/")


async def send_error(
    send: Send, error: ApiError, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = encode(error.body())
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RejectNul:
    """400 for a NUL character in the URL's path or query: PostgreSQL cannot store or
    even compare text holding one (SQLite can), so without this the same request is a
    500 on one backend and not on the other."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope.get("query_string", b""))
        ):
            await send_error(send, ApiError(400, "the URL holds a NUL character (%00): remove it"))
            return
        await self.app(scope, receive, send)


#: the scope key of a request's body limit (a ``_Limit``), raised by ``allow_upload``
_LIMIT = "runtime.body_limit"


class _Limit:
    def __init__(self, limit: int, what: str, setting: str) -> None:
        self.limit, self.what, self.setting = limit, what, setting

    def error(self) -> ApiError:
        return ApiError(
            413, f"the {self.what} is larger than {self.limit} bytes (setting `{self.setting}`)"
        )


def allow_upload(scope: Scope) -> None:
    """Let this request's body reach ``webserver.max_upload_bytes``: for the routes that
    stream multipart uploads to storage. Every other route reads its body into memory,
    so it keeps ``webserver.max_body_bytes`` whatever the content type says."""
    limit: _Limit | None = scope.get(_LIMIT)
    upload: int | None = scope.get(_LIMIT + ".upload")
    if limit is not None and upload is not None:
        limit.limit, limit.what, limit.setting = upload, "upload", "webserver.max_upload_bytes"


class BodyLimit:
    """413 for a body past ``max_body`` (``max_upload`` for multipart uploads to the
    routes that call ``allow_upload``), counted as it arrives."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = b""
        length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        limit = _Limit(self.max_body, "request body", "webserver.max_body_bytes")
        scope[_LIMIT] = limit
        if content_type.lower().startswith(b"multipart/"):
            scope[_LIMIT + ".upload"] = self.max_upload
            # The route is not known yet: refuse at once only what no route takes.
            if self.max_upload > self.max_body:
                early = _Limit(self.max_upload, "upload", "webserver.max_upload_bytes")
            else:
                early = limit
        else:
            early = limit
        if length is not None and length.isdigit() and int(length) > early.limit:
            await send_error(send, early.error())
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.limit:
                    raise limit.error()
            return message

        await self.app(scope, limited, send)


class BasicAuth:
    """Every path but the health checks (and webhooks, unless ``webhooks`` is true)
    requires one of ``users``' credentials."""

    def __init__(
        self, app: ASGIApp, *, users: Iterable[WebserverUser], webhooks: bool = False
    ) -> None:
        self.app = app
        self.users = {u.username.encode(): u.password.encode() for u in users}
        self.webhooks = webhooks

    def _public(self, path: str) -> bool:
        if path in PUBLIC_PATHS:
            return True
        webhook = path.startswith(WEBHOOK_PREFIX) or _TENANT_WEBHOOK.match(path) is not None
        return not self.webhooks and webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope["path"]) or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send_error(
            send,
            ApiError(401, "authentication required: send HTTP basic credentials"),
            [(b"www-authenticate", b'Basic realm="runtime"')],
        )

    def _allowed(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is None or header[:6].lower() != b"basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, sep, password = decoded.partition(b":")
        expected = self.users.get(username)
        # compared even for an unknown user: the answer's timing tells nothing
        same = hmac.compare_digest(expected if expected is not None else b"", password)
        return bool(sep) and expected is not None and same
