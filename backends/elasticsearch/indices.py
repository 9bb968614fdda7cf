"""The indices, their versioned mappings, and their creation (``runtime migrate``).

Each kind of document lives in a concrete index ``<prefix><name>-v<version>``
reached through the alias ``<prefix><name>``; readers and the indexer only use the
alias. A mapping change is a new version: ``migrate`` creates the new index, copies
the old one's documents into it (their versions kept, so the indexer's versioned
writes stay ordered), and moves the alias in one atomic request, then deletes the
old index. Nothing about it is a manual step.
"""

from __future__ import annotations

from typing import Any

import msgspec
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk, async_scan

from backends.elasticsearch.client import SearchError, call
from backends.elasticsearch.settings import SearchSettings
from runtime.log import get_logger

log = get_logger(__name__)

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}
_LONG = {"type": "long"}
_BOOL = {"type": "boolean"}
#: the whole entity, returned as it was written, never searched
_RAW = {"type": "keyword", "index": False, "doc_values": False}
#: a lower-cased keyword for case-insensitive substring queries (wildcards)
#: (longer values are kept but not searchable: Lucene refuses terms over 32 kB)
_LOWER = {"type": "keyword", "normalizer": "lower", "ignore_above": 8000}
_SETTINGS = {
    "analysis": {"normalizer": {"lower": {"type": "custom", "filter": ["lowercase"]}}},
}


class IndexSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    #: bump it with any change of ``properties``: migrate moves the data to a new index
    version: int
    properties: dict[str, Any]


EXECUTIONS = IndexSpec(
    name="executions",
    version=1,
    properties={
        "id": _KEYWORD,
        "namespace": _KEYWORD,
        "flow_id": _KEYWORD,
        "state": _KEYWORD,
        "start_date": _DATE,
        "end_date": _DATE,
        # "key" U+001F "value", one per label
        "labels": _KEYWORD,
        # the lower-cased id, namespace and flow id (the API's text query)
        "text": _LOWER,
        "raw": _RAW,
    },
)
FLOWS = IndexSpec(
    name="flows",
    version=1,
    properties={
        "namespace": _KEYWORD,
        "flow_id": _KEYWORD,
        "revision": _LONG,
        "latest": _BOOL,
        "deleted": _BOOL,
        "raw": _RAW,
    },
)
LOGS = IndexSpec(
    name="logs",
    version=1,
    properties={
        "execution_id": _KEYWORD,
        "namespace": _KEYWORD,
        "flow_id": _KEYWORD,
        "task_id": _KEYWORD,
        "task_run_id": _KEYWORD,
        "attempt": _LONG,
        "level": _KEYWORD,
        # the level's severity (TRACE 0 .. ERROR 4), for "this level and above"
        "rank": _LONG,
        "timestamp": _DATE,
        "seq": _LONG,
        # where the line is in the logs topic's partition (its execution's lines
        # are numbered by it), and whether a purge removed it (kept: the numbering
        # of the lines after it counts it)
        "offset": _LONG,
        "deleted": _BOOL,
        "message": _LOWER,
        "raw": _RAW,
    },
)
TRIGGERS = IndexSpec(
    name="triggers",
    version=1,
    properties={
        "namespace": _KEYWORD,
        "flow_id": _KEYWORD,
        "trigger_id": _KEYWORD,
        "raw": _RAW,
    },
)
ALL = (EXECUTIONS, FLOWS, LOGS, TRIGGERS)


def alias(settings: SearchSettings, spec: IndexSpec) -> str:
    """The name readers and the indexer use."""
    return f"{settings.index_prefix}{spec.name}"


def concrete(settings: SearchSettings, spec: IndexSpec, version: int | None = None) -> str:
    return f"{alias(settings, spec)}-v{spec.version if version is None else version}"


def _body(spec: IndexSpec) -> dict[str, Any]:
    # dynamic "false": a field the mapping lacks is kept in _source, never mapped
    # by guesswork (one index per mapping version, as the module says)
    return {"dynamic": False, "properties": spec.properties}


async def _current(es: AsyncElasticsearch, settings: SearchSettings, spec: IndexSpec) -> list[str]:
    """The concrete indices the alias points at now."""
    name = alias(settings, spec)
    if not await call(settings, es.indices.exists_alias(name=name)):
        return []
    found = await call(settings, es.indices.get_alias(name=name))
    return sorted(found.body)


async def migrate(es: AsyncElasticsearch, settings: SearchSettings) -> list[str]:
    """Make every index of the current mapping versions, moving data and aliases from
    older versions; the concrete indices created."""
    created: list[str] = []
    for spec in ALL:
        target = concrete(settings, spec)
        before = await _current(es, settings, spec)
        if before == [target]:
            continue
        if await _create(es, settings, target, spec):
            created.append(target)
        for old in before:
            if old != target:
                await _copy(es, settings, old, target)
        actions: list[dict[str, Any]] = [
            {"remove": {"index": old, "alias": alias(settings, spec)}}
            for old in before
            if old != target
        ]
        actions.append({"add": {"index": target, "alias": alias(settings, spec)}})
        await call(settings, es.indices.update_aliases(actions=actions))
        for old in before:
            if old != target:
                # another process migrating at the same time may have deleted it
                await call(settings, es.options(ignore_status=404).indices.delete(index=old))
        log.info("search.index_ready", index=target, alias=alias(settings, spec), moved_from=before)
    return created


async def _create(
    es: AsyncElasticsearch, settings: SearchSettings, target: str, spec: IndexSpec
) -> bool:
    """Create ``target``; False if it exists (several indexers and webservers may
    migrate at once: the loser of the race finds it made)."""
    if await call(settings, es.indices.exists(index=target)):
        return False
    try:
        await call(
            settings, es.indices.create(index=target, mappings=_body(spec), settings=_SETTINGS)
        )
    except SearchError as exc:
        if "resource_already_exists_exception" not in str(exc):
            raise
        return False
    return True


async def _copy(es: AsyncElasticsearch, settings: SearchSettings, source: str, target: str) -> None:
    """Every document of ``source`` into ``target`` with its version (a newer one the
    indexer already wrote to ``target`` wins)."""

    async def actions() -> Any:
        async for hit in async_scan(
            es, index=source, query={"query": {"match_all": {}}}, version=True
        ):
            yield {
                "_op_type": "index",
                "_index": target,
                "_id": hit["_id"],
                "version": hit.get("_version", 1),
                "version_type": "external_gte",
                "_source": hit["_source"],
            }

    await call(
        settings,
        async_bulk(es, actions(), raise_on_error=False, refresh=True),
    )
