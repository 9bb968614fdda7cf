"""``/api/v1/stats/executions/daily`` (execution counts per state per day, for
dashboards) and the health checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backends.errors import BackendError
from backends.protocols import ExecutionFilter
from runtime.flow.states import StateType
from services.webserver.http import (
    ApiError,
    decode_json,
    json_response,
    parse_datetime,
    state,
)

#: the longest range one request may ask for
MAX_DAYS = 366


class StatisticRequest(msgspec.Struct, frozen=True, rename="camel"):
    start_date: str | None = None
    end_date: str | None = None
    namespace: str | None = None
    flow_id: str | None = None


async def daily(request: Request) -> Response:
    """Every day of the range, each with a count for every state (zeros included)."""
    app = state(request)
    raw = await request.body()
    body = decode_json(raw, StatisticRequest) if raw.strip() else StatisticRequest()
    now = app.backend.clock().astimezone(UTC)
    end = parse_datetime(body.end_date, "endDate") if body.end_date else now
    try:
        start = (
            parse_datetime(body.start_date, "startDate")
            if body.start_date
            else end - timedelta(days=29)
        )
        first, last = start.date(), end.date()
        if last < first:
            raise ApiError(422, "endDate is before startDate")
        if (last - first).days + 1 > MAX_DAYS:
            raise ApiError(422, f"the range covers more than {MAX_DAYS} days: ask for less")
        where = ExecutionFilter(
            namespace=body.namespace,
            flow_id=body.flow_id,
            started_after=datetime(first.year, first.month, first.day, tzinfo=UTC),
            started_before=datetime(last.year, last.month, last.day, tzinfo=UTC)
            + timedelta(days=1),
        )
    except OverflowError:
        raise ApiError(422, "the range reaches past the dates this server handles") from None
    counts = await app.backend.executions.daily_counts(where)
    days = {
        first + timedelta(days=i): {s.value: 0 for s in StateType}
        for i in range((last - first).days + 1)
    }
    for count in counts:
        if count.day in days:
            days[count.day][count.state.value] += count.count
    return json_response(
        [{"startDate": day.isoformat(), "executionCounts": c} for day, c in days.items()]
    )


async def health(request: Request) -> Response:
    return json_response({"status": "UP"})


async def ready(request: Request) -> Response:
    """UP once the backend answers; 503 while it does not."""
    try:
        await state(request).backend.executions.get("readiness-probe")
    except BackendError as exc:
        return json_response({"status": "DOWN", "message": str(exc)}, status=503)
    except Exception as exc:  # a stopped or broken backend: not ready, whatever it raised
        return json_response({"status": "DOWN", "message": repr(exc)}, status=503)
    return json_response({"status": "UP"})


routes = [
    Route("/api/v1/stats/executions/daily", daily, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
]
