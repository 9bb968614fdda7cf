"""Logging through structlog, configured once per process.

Output is JSON lines when stderr is not a terminal (servers, systemd, CI) and
coloured console lines when it is (a person at a shell).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_configured = False


def configure_logging(
    level: str | int = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger. Later calls only change the level.

    ``json=None`` picks JSON when ``stream`` (default stderr) is not a terminal.
    """
    global _configured
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    _quiet_http_clients(numeric)
    if _configured:
        logging.getLogger().setLevel(numeric)
        return
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not out.isatty()

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    _configured = True


#: loggers that write each request's full URL at INFO: a token in a query string
#: (an HTTP task's ``uri``) would land in the server's log
_URL_LOGGERS = ("httpx", "httpcore")


def _quiet_http_clients(level: int) -> None:
    """Request lines of the HTTP clients only at DEBUG, where an operator asked for them."""
    for name in _URL_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )


def _identity(_logger: Any, _name: str, event: Any) -> Any:
    return event


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``; usable before configure_logging()."""
    return structlog.stdlib.get_logger(name)
