"""Internal storage in a local folder (the small and medium sizes on one host)."""

from backends.storage_local.storage import LocalStorage, parse_uri

__all__ = ["LocalStorage", "parse_uri"]
