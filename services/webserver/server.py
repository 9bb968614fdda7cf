"""The webserver component: uvicorn serving the API inside the supervision tree."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from backends.protocols import Backend, Storage
from runtime.actors import ChildContext
from runtime.config import WebserverConfig
from runtime.log import get_logger
from services.flows import FlowCache
from services.webserver.app import create_app
from services.webserver.http import AppState

log = get_logger(__name__)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the actor system owns SIGINT/SIGTERM and
    stops this component like any other."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Webserver:
    """Serves the REST API on ``settings.host``/``settings.port`` until stopped.

    Ready once the socket listens (``port`` then holds the real port, which matters
    when the setting is 0). A graceful stop ends live follows at once, then waits up to
    ``shutdown_seconds`` for requests in progress.
    """

    def __init__(
        self, backend: Backend, storage: Storage, flows: FlowCache, settings: WebserverConfig
    ) -> None:
        self.settings = settings
        self.app = create_app(backend, storage, settings, flows=flows)
        self.port: int | None = None

    @property
    def state(self) -> AppState:
        found: AppState = self.app.state.runtime
        return found

    async def run(self, ctx: ChildContext) -> None:
        host, port = self.settings.host, self.settings.port
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"the webserver cannot listen on {host}:{port}: {exc.strerror} "
                "(setting `webserver.port`, or RUNTIME_WEBSERVER_PORT)",
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, round(self.settings.shutdown_seconds)),
        )
        server = _Uvicorn(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        self.state.stopping.clear()
        try:
            await server.startup(sockets=[sock])
        except SystemExit:
            sock.close()
            raise RuntimeError(f"the webserver could not start on {host}:{port}") from None

        def stop() -> None:
            self.state.stopping.set()
            server.should_exit = True

        ctx.on_stop_requested(stop)
        ctx.ready()
        log.info("webserver.listening", url=f"http://{host}:{self.port}")
        try:
            await server.main_loop()
        except asyncio.CancelledError:
            server.force_exit = True
            self.state.stopping.set()
            raise
        finally:
            await server.shutdown(sockets=[sock])
