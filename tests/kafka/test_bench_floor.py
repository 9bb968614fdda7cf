"""The Kafka floor of bench/: measured on a broker with transactions, reported as not
measured (with the reason) without a configured broker or on one lacking them; the
sequential tasks end to end on Kafka, as multiples of that floor."""

import pytest

from backends.kafka.testing import TANSU, BrokerProcess
from bench import floor, harness, kafka
from bench.report import markdown

pytestmark = pytest.mark.asyncio


@pytest.mark.slow
async def test_kafka_floor_is_measured_on_a_transactional_broker(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(kafka.BOOTSTRAP_VARIABLE, broker.bootstrap_servers)
    result = await floor.measure("kafka", rounds=10)
    assert result.skipped is None
    assert result.settings["rounds"] == 10
    assert result.settings["isolation_level"] == "read_committed"
    assert 0 < result.figures["hop_ms"] <= result.figures["hop_p90_ms"]
    assert result.floor_ms == result.figures["hop_ms"]


@pytest.mark.slow
async def test_harness_measures_the_floor_and_sequential_tasks_on_kafka(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sequential measure runs the executor here and the worker in its own
    process on Kafka, reported as a multiple of the same run's floor."""
    monkeypatch.setenv(kafka.BOOTSTRAP_VARIABLE, broker.bootstrap_servers)
    report = await harness.run(["floor", "sequential"], ["kafka"], size="tiny", say=lambda _: None)
    [base] = report.find("floor", "kafka")
    assert base.skipped is None
    assert base.figures["hop_ms"] > 0
    [sequential] = report.find("sequential", "kafka")
    assert sequential.skipped is None, sequential.skipped
    assert sequential.figures["per_task_ms"] > 0
    assert sequential.ratios["per_task_ms_floors"] == pytest.approx(
        sequential.figures["per_task_ms"] / base.figures["hop_ms"]
    )
    assert "| kafka |" in markdown(report)


async def test_kafka_floor_without_a_broker_says_how_to_configure_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(kafka.BOOTSTRAP_VARIABLE, raising=False)
    result = await floor.measure("kafka", rounds=10)
    assert result.skipped is not None
    assert kafka.BOOTSTRAP_VARIABLE in result.skipped
    assert result.floor_ms is None


@pytest.mark.slow
@pytest.mark.parametrize("broker", [TANSU], indirect=True)
async def test_kafka_floor_on_a_broker_without_transactions_is_not_measured(
    broker: BrokerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(kafka.BOOTSTRAP_VARIABLE, broker.bootstrap_servers)
    result = await floor.measure("kafka", rounds=10)
    assert result.skipped is not None
    assert "refused a transactional hop" in result.skipped
    assert result.floor_ms is None
