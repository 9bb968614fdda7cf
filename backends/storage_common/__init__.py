"""What every internal storage shares: URIs, path rules, and the object-store core."""

from backends.storage_common.paths import (
    SCHEME,
    check_metadata,
    check_namespace,
    check_path,
    check_prefix,
    check_range,
    make_uri,
    parse_uri,
)

__all__ = [
    "SCHEME",
    "check_metadata",
    "check_namespace",
    "check_path",
    "check_prefix",
    "check_range",
    "make_uri",
    "parse_uri",
]
