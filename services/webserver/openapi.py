"""The OpenAPI document (placeholder until written)."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "runtime", "version": "1"}, "paths": {}}
