"""The metrics listener: ``GET /metrics`` for a process without a webserver (an
executor or a worker on its own host), on ``metrics.host``/``metrics.port``, with the
probes a service manager or Kubernetes asks: ``/health`` (the process answers) and
``/health/ready`` (its backend answers), never behind authentication."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backends.errors import BackendError
from backends.protocols import Backend
from runtime.actors import ChildContext
from runtime.config import MetricsConfig, WebserverUser
from runtime.log import get_logger
from services.metrics import metrics_endpoint
from services.webserver.middleware import BasicAuth
from services.webserver.server import _Uvicorn

log = get_logger(__name__)


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "UP"})


async def _ready(request: Request) -> Response:
    """UP once the backend answers; 503 while it does not."""
    backend: Backend | None = request.app.state.metrics_backend
    if backend is not None:
        try:
            await backend.executions.get("readiness-probe")
        except Exception as exc:  # a stopped or broken backend: not ready, whatever it raised
            message = str(exc) if isinstance(exc, BackendError) else repr(exc)
            return JSONResponse({"status": "DOWN", "message": message}, status_code=503)
    return JSONResponse({"status": "UP"})


def create_metrics_app(backend: Backend | None, users: tuple[WebserverUser, ...] = ()) -> Starlette:
    """``/metrics`` and the probes; the webserver's accounts guard the metrics when
    there are any (the probes stay public, as on the webserver)."""
    middleware = [Middleware(BasicAuth, users=users)] if users else []
    app = Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/health", _health, methods=["GET"]),
            Route("/health/ready", _ready, methods=["GET"]),
        ],
        middleware=middleware,
    )
    app.state.metrics_backend = backend
    return app


class MetricsListener:
    """Serves the process's metrics until stopped; ready once its socket listens
    (``port`` then holds the real port, which matters when the setting is 0)."""

    def __init__(
        self,
        backend: Backend | None,
        settings: MetricsConfig,
        users: tuple[WebserverUser, ...] = (),
    ) -> None:
        self.settings = settings
        self.app = create_metrics_app(backend, users)
        self.port: int | None = None

    async def run(self, ctx: ChildContext) -> None:
        host, port = self.settings.host, self.settings.port or 0
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"the metrics listener cannot listen on {host}:{port}: {exc.strerror} "
                "(setting `metrics.port`, or RUNTIME_METRICS_PORT)",
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False)
        server = _Uvicorn(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except SystemExit:
            sock.close()
            raise RuntimeError(f"the metrics listener could not start on {host}:{port}") from None

        def stop() -> None:
            server.should_exit = True

        ctx.on_stop_requested(stop)
        ctx.ready()
        log.info("metrics.listening", url=f"http://{host}:{self.port}/metrics")
        try:
            await server.main_loop()
        except asyncio.CancelledError:
            server.force_exit = True
            raise
        finally:
            await server.shutdown(sockets=[sock])
