"""Internal storage in Google Cloud Storage, on gcloud-aio-storage (the ``gcs`` extra)."""

from backends.storage_gcs.storage import GcsStorage

__all__ = ["GcsStorage"]
