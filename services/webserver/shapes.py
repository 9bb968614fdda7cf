"""The answers in the shapes Kestra 1.x gives them (what its SDK's models parse):
the fields the engine's structs leave out or that Kestra added, computed here so the
stored structs stay as they are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.flow.execution import Execution, to_kestra_dict
from services.webserver.tenants import DEFAULT_TENANT


def iso_duration(span: timedelta) -> str:
    """As Java's ``Duration.toString`` writes it: ``PT1H2M3.5S``."""
    micros = max(0, round(span.total_seconds() * 1_000_000))
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = f"{rest / 1_000_000:.6f}".rstrip("0").rstrip(".")
    out = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if rest or out == "PT":
        out += f"{seconds}S"
    return out


def _state(state: dict[str, Any], now: datetime) -> None:
    """Kestra's ``startDate``, ``endDate`` and ``duration`` added to a state."""
    histories = state.get("histories") or []
    if not histories:
        return
    start = _date(histories[0]["date"])
    ended = state.get("current") in _TERMINAL
    end = _date(histories[-1]["date"]) if ended else None
    state["startDate"] = histories[0]["date"]
    state["endDate"] = histories[-1]["date"] if ended else None
    state["duration"] = iso_duration((end or now) - start)


def _date(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


_TERMINAL = frozenset({"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "RETRIED", "SKIPPED"})


def execution_json(execution: Execution, now: datetime | None = None) -> dict[str, Any]:
    """An execution as Kestra 1.x shows it; the fields of the old shape are all kept."""
    now = now or datetime.now(UTC)
    data = to_kestra_dict(execution)
    data["tenantId"] = DEFAULT_TENANT
    data.setdefault("labels", [])
    data["originalId"] = data.get("originalId") or execution.id
    data["deleted"] = False
    data["flowRevision"] = execution.flow_revision or 1
    metadata = data.setdefault("metadata", {})
    metadata.setdefault("attemptNumber", 1)
    if "originalCreatedDate" not in metadata and data["state"].get("histories"):
        metadata["originalCreatedDate"] = data["state"]["histories"][0]["date"]
    _state(data["state"], now)
    for run in data["taskRunList"]:
        run["tenantId"] = DEFAULT_TENANT
        _state(run["state"], now)
        for attempt in run.get("attempts", ()):
            _state(attempt["state"], now)
    return data
