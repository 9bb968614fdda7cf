"""The storage conformance suite on the local folder storage."""

from __future__ import annotations

from pathlib import Path

from backends.storage_local import LocalStorage
from backends.testing import StorageConformance


class TestLocalStorage(StorageConformance):
    async def make_storage(self, tmp_path: Path) -> LocalStorage:
        return LocalStorage(tmp_path / "storage", fsync=False)
