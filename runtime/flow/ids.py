"""Identifiers in Kestra's style: 22 base62 characters from 128 bits.

``derived_id`` makes the ids the engine assigns deterministic, so applying the same
event to the same execution always yields the same task run ids (the engine is a
pure function, and replays of an event must not invent new runs).
"""

from __future__ import annotations

import hashlib
import uuid

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(number: int) -> str:
    out = []
    while number:
        number, rest = divmod(number, 62)
        out.append(_ALPHABET[rest])
    return "".join(reversed(out)).rjust(22, "0")


def new_id() -> str:
    """A random id (for executions created from outside the engine)."""
    return _base62(uuid.uuid4().int)


def derived_id(*parts: object) -> str:
    """A stable id from ``parts``: the same parts always give the same id."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()
    return _base62(int.from_bytes(digest, "big"))
