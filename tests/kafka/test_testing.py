"""The test-broker helpers themselves: how a missing broker is reported, what counts
as answering the Kafka protocol, and a graceful stop."""

import socket
import threading
from pathlib import Path

import pytest

from backends.kafka.testing import (
    NOIDA_DB,
    TANSU,
    BrokerProcess,
    BrokerUnavailable,
    answers_kafka,
    binary,
    free_port,
)


def test_a_missing_broker_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNTIME_CI_TOOLS", str(tmp_path))
    monkeypatch.delenv("RUNTIME_TEST_TANSU", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerUnavailable, match=r"bash \.ci/services\.d/kafka\.sh"):
        binary(TANSU)


def test_an_override_that_is_not_executable_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "noida-db"
    fake.write_text("not a broker")
    monkeypatch.setenv("RUNTIME_TEST_NOIDA_DB", str(fake))
    with pytest.raises(BrokerUnavailable, match="RUNTIME_TEST_NOIDA_DB"):
        binary(NOIDA_DB)


def test_a_listener_that_does_not_speak_kafka_does_not_answer() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def reply_garbage() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=reply_garbage)
        thread.start()
        try:
            assert not answers_kafka("127.0.0.1", port)
        finally:
            thread.join(5)
    assert not answers_kafka("127.0.0.1", free_port())


@pytest.mark.slow
@pytest.mark.parametrize("kind", [NOIDA_DB, TANSU])
def test_a_broker_answers_once_started_and_not_after_a_graceful_stop(
    kind: str, tmp_path: Path
) -> None:
    broker = BrokerProcess(kind, tmp_path)
    broker.start()
    try:
        assert answers_kafka(broker.host, broker.port)
    finally:
        code = broker.stop()
    assert code == 0, broker.log_tail()
    assert not answers_kafka(broker.host, broker.port)
