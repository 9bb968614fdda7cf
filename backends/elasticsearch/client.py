"""The one place the Elasticsearch client is made and its errors are translated.

Above this module nothing sees the driver: an unreachable store is ``Transient``
(the webserver answers 503, the indexer retries), a refused request is
``SearchError`` with the server's reason.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from elasticsearch import ApiError as EsApiError
from elasticsearch import AsyncElasticsearch, ConnectionTimeout, TransportError
from elasticsearch import ConnectionError as EsConnectionError

from backends.elasticsearch.settings import SearchSettings
from backends.errors import BackendError, Transient

T = TypeVar("T")


class SearchError(BackendError):
    """Elasticsearch refused a request (a bug or a broken index, not an outage)."""


def make_client(settings: SearchSettings) -> AsyncElasticsearch:
    """A client for ``settings``; it connects on its first request."""
    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout_seconds,
        # one retry, for a pooled connection the server closed (a restart); past it
        # the callers decide (the indexer backs off; the API answers 503)
        "max_retries": 1,
        "retry_on_timeout": False,
        # a node that failed is tried again within a second: the callers back off
        # themselves, and with one node a long quarantine only delays the recovery
        "max_dead_node_backoff": 1.0,
    }
    if settings.username is not None and settings.password is not None:
        options["basic_auth"] = (settings.username, settings.password)
    if settings.api_key:
        options["api_key"] = settings.api_key
    return AsyncElasticsearch(list(settings.hosts), **options)


def unreachable(settings: SearchSettings, exc: BaseException) -> Transient:
    return Transient(
        f"the search store (Elasticsearch at {settings.where}) is unreachable ({exc}); lists,"
        " searches and stats answer again once it is back (check `search.hosts`)"
    )


async def call(settings: SearchSettings, request: Awaitable[T]) -> T:
    """Await ``request``, with the driver's errors as the project's."""
    try:
        return await request
    except (EsConnectionError, ConnectionTimeout) as exc:
        raise unreachable(settings, exc) from exc
    except EsApiError as exc:
        if exc.meta.status in (429, 502, 503, 504):
            raise unreachable(settings, exc) from exc
        raise SearchError(
            f"Elasticsearch at {settings.where} refused a request: {exc.message}"
            f" ({exc.meta.status}): {_reason(exc.body)}"
        ) from exc
    except TransportError as exc:
        raise unreachable(settings, exc) from exc


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("reason") or error.get("type") or error)
        return str(error or body)
    return str(body)
