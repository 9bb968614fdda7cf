"""Internal storage in S3 or an S3-compatible store (MinIO, SeaweedFS, ...), on
aiobotocore (the ``s3`` extra)."""

from backends.storage_s3.storage import S3Storage

__all__ = ["S3Storage"]
