"""Storage URIs and the rules that keep every path inside its namespace.

Every storage (local folder or object store) names a file ``kestra:///<namespace>/<path>``
and checks paths here, so a path refused by one is refused by all. The rules:
absolute paths, ``..`` segments, NUL and other control characters, backslashes and
percent-encoded separators (``%2F``, ``%5C``, ``%00``: a second decoding would turn
them into real ones), segments over 255 bytes and paths over 900 bytes are refused
with a ValueError naming the path and the rule. In a URI, a segment whose decoding
holds a ``/`` is refused too: one URI names one file.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Final
from urllib.parse import quote, unquote

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_SEGMENT_BYTES",
    "SCHEME",
    "check_namespace",
    "check_path",
    "check_prefix",
    "make_uri",
    "parse_uri",
]

SCHEME: Final = "kestra://"
#: a file or folder name: the common limit of file systems (ext4, xfs, APFS)
MAX_SEGMENT_BYTES: Final = 255
#: a whole path in its namespace; object stores cap keys at 1024 bytes, and the
#: namespace and the configured prefix need room too
MAX_PATH_BYTES: Final = 900
MAX_NAMESPACE_BYTES: Final = 100
_NAMESPACE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_SEPARATOR: Final = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def check_namespace(namespace: str) -> str:
    """``namespace`` if it is a valid namespace name, else ValueError."""
    if (
        not isinstance(namespace, str)
        or not _NAMESPACE.match(namespace)
        or len(namespace) > MAX_NAMESPACE_BYTES
    ):
        raise ValueError(
            f"invalid namespace {namespace!r}: use letters, digits, '_', '-' and '.', "
            f"starting with a letter, a digit or '_', at most {MAX_NAMESPACE_BYTES} "
            "characters (e.g. company.team)"
        )
    return namespace


def check_path(path: str, *, allow_empty: bool = False) -> PurePosixPath:
    """``path`` as a relative path that stays inside its namespace, else ValueError.

    Empty and ``.`` segments are dropped (``a//./b`` is ``a/b``)."""
    if not isinstance(path, str):
        raise ValueError(f"storage path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise ValueError(f"storage path {path!r} contains a NUL byte")
    if _CONTROL.search(path):
        raise ValueError(f"storage path {path!r} contains a control character")
    if "\\" in path:
        raise ValueError(f"storage path {path!r} contains a backslash: separate folders with '/'")
    if _ENCODED_SEPARATOR.search(path):
        raise ValueError(
            f"storage path {path!r} contains an encoded separator (%2F, %5C or %00); "
            "give the path decoded"
        )
    if path.startswith("/"):
        raise ValueError(
            f"storage path {path!r} is absolute: give a path relative to the namespace"
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"storage path {path!r} contains '..': a path cannot leave its namespace")
    if not parts and not allow_empty:
        raise ValueError(f"storage path {path!r} is empty: name a file in the namespace")
    for part in parts:
        if len(part.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise ValueError(
                f"storage path {_short(path)!r} has a name over {MAX_SEGMENT_BYTES} bytes"
            )
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ValueError(f"storage path {_short(path)!r} is over {MAX_PATH_BYTES} bytes")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"storage path {path!r} is not valid Unicode (a lone surrogate)") from None
    return PurePosixPath(*parts)


def check_prefix(prefix: str) -> str:
    """A listing prefix, normalised as paths are (``a//b/`` is ``a/b/``), else ValueError."""
    rel = check_path(prefix, allow_empty=True)
    text = "" if str(rel) == "." else str(rel)
    if prefix.endswith("/") and text:
        text += "/"
    return text


def make_uri(namespace: str, path: PurePosixPath) -> str:
    """The URI of ``path`` in ``namespace``."""
    return f"{SCHEME}/{namespace}/{quote(str(path), safe='/')}"


def parse_uri(uri: str) -> tuple[str, PurePosixPath]:
    """``(namespace, path)`` of a ``kestra:///namespace/path`` URI, else ValueError."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME + "/"):
        raise ValueError(
            f"not an internal storage URI: {_short(str(uri))!r}; "
            "expected kestra:///<namespace>/<path>"
        )
    namespace, _, rest = uri[len(SCHEME) + 1 :].partition("/")
    segments = [unquote(segment, errors="strict") for segment in rest.split("/")]
    for segment in segments:
        if "/" in segment or "\\" in segment:
            raise ValueError(
                f"storage URI {_short(uri)!r} holds an encoded separator in a name; refused"
            )
    return check_namespace(unquote(namespace)), check_path("/".join(segments))


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:100] + "..."


_METADATA_KEY: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: S3 caps user metadata at 2 KB, keys and values together
MAX_METADATA_BYTES: Final = 2000


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """``metadata`` as a plain dict if every store can keep it, else ValueError.

    Keys are lower-case identifiers (``content_type``): S3 lower-cases keys and Azure
    wants C# identifiers. Values are any text (object stores get them percent-encoded)."""
    if not metadata:
        return {}
    out: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise ValueError(
                f"storage metadata key {key!r}: use lower-case letters, digits and '_', "
                "starting with a letter, at most 63 characters"
            )
        if not isinstance(value, str):
            raise ValueError(f"storage metadata {key!r}: the value must be text")
        total += len(key) + len(quote(value, safe=""))
        out[key] = value
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"storage metadata is over {MAX_METADATA_BYTES} bytes once encoded")
    return out


def check_range(chunk_size: int, start: int, end: int | None) -> None:
    """ValueError unless ``chunk_size`` is positive and ``0 <= start <= end``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range [{start}, {end}): need 0 <= start <= end")
