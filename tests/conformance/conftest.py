"""The object-store emulators of the storage conformance suite: each started once per
test session on free 127.0.0.1 ports (only when a test asks for it) and stopped at
the end. Each test then works in a bucket of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.testing import emulators


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.S3Server]:
    with emulators.seaweedfs(tmp_path_factory.mktemp("seaweedfs") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.S3Server]:
    with emulators.moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="session")
def azurite_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with emulators.azurite(tmp_path_factory.mktemp("azurite")) as connection_string:
        yield connection_string


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with emulators.fake_gcs(Path(tmp_path_factory.mktemp("fake-gcs"))) as endpoint:
        yield endpoint
