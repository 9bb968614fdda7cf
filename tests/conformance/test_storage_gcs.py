"""The storage conformance suite on Google Cloud Storage, against fake-gcs-server;
each test in a bucket of its own."""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

import pytest

from backends.storage_gcs import GcsStorage
from backends.testing import StorageConformance


def new_bucket(endpoint: str) -> str:
    name = f"test-{secrets.token_hex(6)}"
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
    return name


class TestFakeGcs(StorageConformance):
    @pytest.fixture(autouse=True)
    def _server(self, gcs_endpoint: str) -> None:
        self.endpoint = gcs_endpoint

    async def make_storage(self, tmp_path: Path) -> GcsStorage:
        return GcsStorage(new_bucket(self.endpoint), endpoint_url=self.endpoint, prefix="rt")
