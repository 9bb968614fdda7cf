"""The ASGI app: routes, error handling, limits, authentication."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from backends.errors import Conflict, NotFound, OutOfRange, Transient
from backends.protocols import Backend, Storage
from runtime.config import WebserverConfig
from runtime.flow.loader import FlowError
from runtime.log import get_logger
from services import metrics
from services.flows import FlowCache, FlowNotFoundError
from services.webserver import (
    actions_api,
    executions_api,
    files_api,
    flows_api,
    flows_io_api,
    instance_api,
    logs_api,
    metrics_api,
    namespaces_api,
    stats_api,
    triggers_api,
    webhook,
)
from services.webserver import ui as web_ui
from services.webserver.http import ApiError, AppState, json_response
from services.webserver.middleware import BasicAuth, BodyLimit, RejectNul
from services.webserver.openapi import openapi_document
from services.webserver.tenants import with_tenant_routes

log = get_logger(__name__)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(exc.body(), status=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such endpoint", 405: "method not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    return json_response(
        {"message": f"{message}: {request.method} {request.url.path}", "status": exc.status_code},
        status=exc.status_code,
        headers=dict(exc.headers or {}),
    )


async def _backend_error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, NotFound | FlowNotFoundError) else 409
    if isinstance(exc, Transient):
        status = 503
    elif isinstance(exc, OutOfRange):
        status = 400
    return json_response({"message": str(exc), "status": status}, status=status)


async def _flow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowError)
    return _api_error_response(flows_api.invalid_flow(exc))


def _api_error_response(error: ApiError) -> Response:
    return json_response(error.body(), status=error.status)


async def _bug(request: Request, exc: Exception) -> Response:
    log.error("webserver.bug", path=request.url.path, error=repr(exc))
    return json_response(
        {"message": "internal error: this is a bug in runtime, please report it", "status": 500},
        status=500,
    )


def create_app(
    backend: Backend,
    storage: Storage,
    config: WebserverConfig | None = None,
    *,
    flows: FlowCache | None = None,
) -> Starlette:
    """The REST API over a started ``backend``; ``flows`` shares a parse cache."""
    config = config or WebserverConfig()
    routes: list[BaseRoute] = [
        *stats_api.routes,
        *webhook.routes,
        # before flows_api's: /flows/export/by-query is no /flows/{namespace}/{id}
        *flows_io_api.routes,
        *flows_api.routes,
        # before executions_api's: /executions/by-ids is no {executionId}
        *actions_api.routes,
        *files_api.routes,
        *executions_api.routes,
        *logs_api.routes,
        *metrics_api.routes,
        *triggers_api.routes,
        *namespaces_api.routes,
        *instance_api.routes,
        *web_ui.routes,
    ]
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return json_response(document)

    routes.append(Route("/api/v1/openapi.json", openapi, methods=["GET"]))
    routes.append(Route("/metrics", metrics.metrics_endpoint, methods=["GET"]))
    routes = with_tenant_routes(routes)
    middleware = [
        Middleware(RejectNul),
        Middleware(
            BodyLimit,
            max_body=config.max_body_bytes,
            max_upload=config.max_upload_bytes,
        ),
    ]
    if config.users:
        middleware.insert(
            0, Middleware(BasicAuth, users=config.users, webhooks=config.webhook_auth)
        )
    # outermost: refused requests are timed too
    middleware.insert(0, Middleware(metrics.RequestMetrics))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            NotFound: _backend_error,
            FlowNotFoundError: _backend_error,
            Conflict: _backend_error,
            Transient: _backend_error,
            OutOfRange: _backend_error,
            FlowError: _flow_error,
            Exception: _bug,
        },
    )
    app.state.metrics_backend = backend
    app.state.runtime = AppState(
        backend=backend, storage=storage, config=config, flows=flows or FlowCache(backend)
    )
    return app
