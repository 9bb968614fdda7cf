"""Versioned bulk writes: what the indexer sends to Elasticsearch.

Every write carries an external version (the Kafka offset of the record it comes
from: records of one id share a partition, so a later state has a higher offset).
Elasticsearch keeps a document's highest version: an older state arriving after a
newer one, or the same record twice, is refused with a version conflict, which
here means "already newer" and counts as done. Any other refusal of one document
is logged with its reason and skipped (a bad record never stops the indexer);
an unreachable store fails the whole bulk (``Transient``) so the caller retries
without committing its offsets.
"""

from __future__ import annotations

from typing import Any

import msgspec
from elasticsearch import AsyncElasticsearch

from backends.elasticsearch.client import call
from backends.elasticsearch.settings import SearchSettings
from backends.errors import Transient
from runtime.log import get_logger

log = get_logger(__name__)


class Write(msgspec.Struct, frozen=True, kw_only=True):
    """One document to index (``source``) or delete (``source`` None) at ``version``."""

    index: str
    id: str
    version: int
    source: dict[str, Any] | None


class BulkResult(msgspec.Struct, kw_only=True):
    written: int = 0
    #: refused as older than (or the same as) what the index holds
    stale: int = 0
    #: refused for another reason (logged)
    rejected: int = 0


async def bulk(es: AsyncElasticsearch, settings: SearchSettings, writes: list[Write]) -> BulkResult:
    """Send ``writes`` in one bulk request (refresh: searches see them on return)."""
    result = BulkResult()
    if not writes:
        return result
    operations: list[dict[str, Any]] = []
    for w in writes:
        meta = {"_index": w.index, "_id": w.id, "version": w.version, "version_type": "external"}
        if w.source is None:
            operations.append({"delete": meta})
        else:
            operations.append({"index": meta})
            operations.append(w.source)
    response = await call(settings, es.bulk(operations=operations, refresh=True))
    for item in response.body["items"]:
        ((op, outcome),) = item.items()
        status = int(outcome.get("status", 500))
        if status < 300 or (op == "delete" and status == 404):
            result.written += 1
        elif status == 409:
            result.stale += 1
        elif status in (429, 502, 503, 504):
            # the store is overloaded or going down: the whole batch again, later
            raise Transient(
                f"Elasticsearch at {settings.where} could not take a document now"
                f" ({status}: {_reason(outcome)})"
            )
        else:
            result.rejected += 1
            log.error(
                "indexer.document_rejected",
                index=outcome.get("_index"),
                id=outcome.get("_id"),
                status=status,
                reason=_reason(outcome),
            )
    return result


def _reason(outcome: dict[str, Any]) -> str:
    error = outcome.get("error")
    if isinstance(error, dict):
        return str(error.get("reason") or error.get("type"))
    return str(error)
