"""Test parameters for the Kafka tests."""

import pytest

from backends.kafka.testing import BROKERS


def on_brokers(lacks: dict[str, str] | None = None, *, strict: bool = True) -> list[object]:
    """Every broker kind as a parameter; a kind in ``lacks`` is xfail(strict) for the
    reason. ``strict=False`` only where the broker's fault shows by timing, not always."""
    lacks = lacks or {}
    unknown = set(lacks) - set(BROKERS)
    assert not unknown, f"unknown broker kind(s) {sorted(unknown)}"
    return [
        pytest.param(
            kind,
            id=kind,
            marks=[pytest.mark.xfail(strict=strict, reason=f"{kind}: {lacks[kind]}")]
            if kind in lacks
            else [],
        )
        for kind in BROKERS
    ]
