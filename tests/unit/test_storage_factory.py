"""storage.type picks the storage; a driver left out of the install names its extra;
the settings reach the driver."""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import pytest

from backends.storage_local import LocalStorage
from runtime.config import Config, ConfigError, StorageConfig, load_config
from services import standalone

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("kind", "driver", "package"),
    [
        ("s3", "aiobotocore", "backends.storage_s3"),
        ("gcs", "gcloud", "backends.storage_gcs"),
        ("azure", "azure", "backends.storage_azure"),
    ],
)
def test_a_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, kind: str, driver: str, package: str
) -> None:
    for name in list(sys.modules):
        if name == driver or name.startswith((f"{driver}.", package)):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, driver, None)
    config = Config(storage=StorageConfig(type=kind, bucket="b", connection_string="x"))
    with pytest.raises(ConfigError) as caught:
        standalone.make_storage(config)
    assert f"pip install 'runtime[{kind}]'" in str(caught.value)
    assert driver in str(caught.value)


def test_the_medium_config_makes_an_s3_storage_under_its_prefix() -> None:
    from backends.storage_s3 import S3Storage

    storage = standalone.make_storage(load_config(ROOT / "config" / "medium-postgres.yml", {}))
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.region) == (
        "runtime-storage",
        "runtime/",
        "eu-west-1",
    )
    key = storage.key_of("company.team", PurePosixPath("a/b.txt"))
    assert key == "runtime/company.team/a/b.txt"


def test_local_is_the_default(tmp_path: Path) -> None:
    storage = standalone.make_storage(load_config(None, {"RUNTIME_DATA_DIR": str(tmp_path)}))
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "storage"


def test_bad_object_store_settings_name_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match=r"AZURE_STORAGE_CONNECTION_STRING"):
        standalone.make_storage(
            load_config(None, {"RUNTIME_STORAGE_TYPE": "azure", "RUNTIME_STORAGE_BUCKET": "c"})
        )
    with pytest.raises(ConfigError, match=r"part size"):
        standalone.make_storage(
            load_config(
                None,
                {
                    "RUNTIME_STORAGE_TYPE": "s3",
                    "RUNTIME_STORAGE_BUCKET": "b",
                    "RUNTIME_STORAGE_PART_SIZE_MB": "1",
                },
            )
        )
    with pytest.raises(ConfigError, match=r"prefix|storage path"):
        standalone.make_storage(
            load_config(
                None,
                {
                    "RUNTIME_STORAGE_TYPE": "s3",
                    "RUNTIME_STORAGE_BUCKET": "b",
                    "RUNTIME_STORAGE_PREFIX": "a/../b",
                },
            )
        )
