"""The storage named by the settings (``storage.type``), its driver imported only when
chosen; a driver missing from a lean install is one error naming the extra."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from backends.protocols import Storage
from runtime.config import ConfigError, StorageConfig

__all__ = ["KNOWN", "make_storage"]

#: type -> (module, class, the driver's top-level modules, the extra adding them)
KNOWN: dict[str, tuple[str, str, frozenset[str], str]] = {
    "local": ("backends.storage_local", "LocalStorage", frozenset(), ""),
    "s3": (
        "backends.storage_s3",
        "S3Storage",
        frozenset({"aiobotocore", "botocore", "aiohttp"}),
        "s3",
    ),
    "gcs": ("backends.storage_gcs", "GcsStorage", frozenset({"gcloud", "aiohttp"}), "gcs"),
    "azure": ("backends.storage_azure", "AzureStorage", frozenset({"azure", "aiohttp"}), "azure"),
}


def make_storage(settings: StorageConfig, local_path: Path) -> Storage:
    """The storage of ``settings``, not started (``start()`` checks it can be used);
    ``local_path`` is the folder of ``type: local``."""
    kind = settings.type.lower()
    if kind not in KNOWN:
        raise ConfigError(
            f"setting `storage.type` (or RUNTIME_STORAGE_TYPE): unknown storage "
            f"{settings.type!r} (known: {', '.join(KNOWN)})"
        )
    module_name, class_name, drivers, extra = KNOWN[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in drivers:
            raise
        raise ConfigError(
            f"setting `storage.type`: the {kind} storage needs the driver {exc.name!r}, which "
            f"this install lacks; install it with: pip install 'runtime[{extra}]'"
        ) from None
    cls: Any = getattr(module, class_name)
    if kind == "local":
        local_path.mkdir(parents=True, exist_ok=True)
        return cls(local_path)  # type: ignore[no-any-return]
    if not settings.bucket:
        what = "container" if kind == "azure" else "bucket"
        raise ConfigError(
            f"setting `storage.bucket` (or RUNTIME_STORAGE_BUCKET) is required for the "
            f"{kind} storage: the {what} holding the files"
        )
    common: dict[str, Any] = {
        "prefix": settings.prefix,
        "part_size": settings.part_size_mb * 1024 * 1024,
        "parallel_parts": settings.parallel_parts,
    }
    try:
        if kind == "s3":
            return cls(  # type: ignore[no-any-return]
                settings.bucket,
                endpoint_url=settings.endpoint_url,
                region=settings.region,
                access_key_id=settings.access_key_id,
                secret_access_key=settings.secret_access_key,
                path_style=settings.path_style,
                **common,
            )
        if kind == "gcs":
            return cls(  # type: ignore[no-any-return]
                settings.bucket,
                endpoint_url=settings.endpoint_url,
                credentials_file=settings.credentials_file
                or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"),
                **common,
            )
        return cls(  # type: ignore[no-any-return]
            settings.bucket,
            connection_string=settings.connection_string
            or os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
            account_name=settings.account_name,
            account_key=settings.account_key,
            sas_token=settings.sas_token,
            endpoint_url=settings.endpoint_url,
            **common,
        )
    except ValueError as exc:
        raise ConfigError(f"storage settings: {exc}") from None
