"""Tenant paths: every route of the API under ``/api/v1/{tenant}/...`` too, as
Kestra's API has had since 1.0 (its clients, the official SDKs among them, speak
only that form). One tenant exists, ``main``; the paths without a tenant stay and
mean ``main`` as well. How a tenant would become part of every key is described in
docs/architecture.md (section "Tenants")."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from services.webserver.http import ApiError

#: the tenants this server knows; the first is the one the paths without one mean
TENANTS = ("main",)
DEFAULT_TENANT = TENANTS[0]
API = "/api/v1/"
#: served once, not per tenant: it describes both path forms
UNTENANTED = frozenset({"/api/v1/openapi.json"})


def tenant_of(request: Request) -> str:
    """The request's tenant: the one of its path, else the default."""
    tenant: str = request.path_params.get("tenant", DEFAULT_TENANT)
    return tenant


def unknown_tenant(tenant: str) -> ApiError:
    known = ", ".join(TENANTS)
    return ApiError(
        404,
        f"tenant {tenant!r} not found: this server has the tenant(s) {known} "
        f"(paths /api/v1/{DEFAULT_TENANT}/...)",
    )


class _TenantRoute(Route):
    """A route of the API under ``/api/v1/{tenant}``: 404 naming the tenant unless it
    is known, else the same handler as the route without a tenant."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = scope.get("path_params", {}).get("tenant", DEFAULT_TENANT)
        if tenant not in TENANTS:
            raise unknown_tenant(tenant)
        await super().handle(scope, receive, send)


def tenant_path(path: str) -> str:
    """``/api/v1/flows`` -> ``/api/v1/{tenant}/flows``."""
    return API + "{tenant}/" + path.removeprefix(API)


def with_tenant_routes(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """``routes`` and, after them, each API route again under ``/api/v1/{tenant}``.
    After, so that a path without a tenant never reaches a tenant route: the first
    segment of those is a resource word (flows, executions, ...), which is no tenant."""
    tenanted: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path.startswith(API) and route.path not in UNTENANTED:
            tenanted.append(
                _TenantRoute(
                    tenant_path(route.path),
                    route.endpoint,
                    methods=sorted(route.methods or ()),
                    name=None if route.name == route.endpoint.__name__ else route.name,
                )
            )
    return [*routes, *tenanted]


def tenant_path_used(request: Request) -> bool:
    """Whether the request came by a path with a tenant: where an answer's shape
    differs, those get Kestra 1.x's and the old paths keep the one their clients read."""
    return "tenant" in request.path_params
