"""Reads over the indices: the webserver's lists, searches, stats and log search.

Each repository answers like the SQL and memory stores' methods of the same name
(``backends/protocols.py``), so the API cannot tell which store it reads; the
shared search tests run the same cases against both.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from elasticsearch import AsyncElasticsearch

from backends.elasticsearch import documents, indices
from backends.elasticsearch.client import call
from backends.elasticsearch.settings import SearchSettings
from backends.errors import OutOfRange
from backends.memory.stores import level_floor
from backends.protocols import (
    DailyCount,
    ExecutionFilter,
    ExecutionSortField,
    FlowRecord,
    LogFilter,
    TriggerState,
)
from backends.sql.mapping import label_item
from backends.sql.search import SORT_COLUMNS
from runtime.flow.execution import Execution
from runtime.flow.states import StateType
from runtime.messages import LogEntry

#: Elasticsearch's default ``index.max_result_window``: from + size past it is refused
MAX_WINDOW = 10_000
#: page size of the reads that return everything (flows, triggers)
_PAGE = 1_000

Query = dict[str, Any]
_Filters = list[Query]

#: the API's sort fields are the SQL stores' column names, and the fields here
_SORT_FIELDS = SORT_COLUMNS


class PageTooDeep(OutOfRange):
    """A page past the search store's result window."""


def _window(limit: int, offset: int) -> tuple[int, int]:
    limit, offset = max(limit, 0), max(offset, 0)
    if offset >= MAX_WINDOW:
        raise PageTooDeep(
            f"page starts at result {offset}: the search store serves the first {MAX_WINDOW}"
            " results of a search only; narrow the search (namespace, dates, state)"
        )
    return min(limit, MAX_WINDOW - offset), offset


#: the characters Lucene's regular expressions (all flags on) give a meaning to
_REGEX_SPECIAL = frozenset('.?+*|{}[]()"\\#@&<>~^$')


def _contains(field: str, text: str) -> Query:
    """``field`` (lower-cased) holds ``text`` (lower-cased) anywhere. A regexp query
    with every character escaped, not a wildcard: noida-db ignores a wildcard's
    escapes, so a text with ``*`` or ``?`` would match other texts."""
    escaped = "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text.lower())
    return {"regexp": {field: {"value": f".*{escaped}.*", "flags": "NONE"}}}


def _namespace(field: str, namespace: str, below: bool = True) -> Query:
    exact: Query = {"term": {field: namespace}}
    if not below:
        return exact
    return {"bool": {"should": [exact, {"prefix": {field: namespace + "."}}]}}


def _bool(filters: list[Query]) -> Query:
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}


def _nothing() -> Query:
    return {"bool": {"must_not": [{"match_all": {}}]}}


def execution_query(where: ExecutionFilter) -> Query:
    found: list[Query] = []
    if where.namespace is not None:
        found.append(_namespace("namespace", where.namespace))
    if where.flow_id is not None:
        found.append({"term": {"flow_id": where.flow_id}})
    if where.states is not None:
        if not where.states:
            return _nothing()
        found.append({"terms": {"state": [s.value for s in where.states]}})
    dates: dict[str, str] = {}
    if where.started_after is not None:
        dates["gte"] = where.started_after.isoformat()
    if where.started_before is not None:
        dates["lt"] = where.started_before.isoformat()
    if dates:
        found.append({"range": {"start_date": dates}})
    for key, value in dict.fromkeys(where.labels):
        found.append({"term": {"labels": label_item(key, value)}})
    if where.query:
        found.append(_contains("text", where.query))
    return _bool(found)


def _execution_sort(sort: ExecutionSortField, descending: bool) -> list[Query]:
    field = _SORT_FIELDS.get(sort)
    if field is None:
        raise ValueError(
            f"cannot sort executions by {sort!r}: use one of {', '.join(_SORT_FIELDS)}"
        )
    order = "desc" if descending else "asc"
    if field == "id":
        return [{"id": {"order": order}}]
    first: Query = {"order": order}
    if field in ("start_date", "end_date"):
        # no date sorts as the earliest one
        first["missing"] = "_last" if descending else "_first"
    return [{field: first}, {"id": {"order": order}}]


class SearchExecutions:
    """``ExecutionStore``'s reads (``get``, ``search``, ``find``, ``daily_counts``)."""

    def __init__(self, es: AsyncElasticsearch, settings: SearchSettings) -> None:
        self._es, self._settings = es, settings
        self._index = indices.alias(settings, indices.EXECUTIONS)

    async def get(self, execution_id: str) -> Execution | None:
        if not execution_id:
            return None  # the client refuses an empty id; no document has one
        response = await call(
            self._settings,
            self._es.options(ignore_status=404).get(index=self._index, id=execution_id),
        )
        if not response.body.get("found"):
            return None
        return documents.execution_of(response.body["_source"])

    async def search(
        self,
        *,
        namespace: str | None = None,
        flow_id: str | None = None,
        states: Sequence[StateType] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Execution]:
        found: list[Query] = []
        if namespace is not None:
            found.append({"term": {"namespace": namespace}})
        if flow_id is not None:
            found.append({"term": {"flow_id": flow_id}})
        if states is not None:
            if not states:
                return []
            found.append({"terms": {"state": [s.value for s in states]}})
        page, _ = await self._page(_bool(found), _execution_sort("start_date", True), limit, offset)
        return page

    async def find(
        self,
        where: ExecutionFilter,
        *,
        sort: ExecutionSortField = "start_date",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Execution], int]:
        return await self._page(
            execution_query(where), _execution_sort(sort, descending), limit, offset
        )

    async def _page(
        self, query: Query, sort: list[Query], limit: int, offset: int
    ) -> tuple[list[Execution], int]:
        size, start = _window(limit, offset)
        response = await call(
            self._settings,
            self._es.search(
                index=self._index,
                query=query,
                sort=sort,
                size=size,
                from_=start,
                track_total_hits=True,
                source_includes=["raw"],
            ),
        )
        hits = response.body["hits"]
        return [documents.execution_of(h["_source"]) for h in hits["hits"]], int(
            hits["total"]["value"]
        )

    async def daily_counts(self, where: ExecutionFilter) -> list[DailyCount]:
        query = {"bool": {"filter": [execution_query(where), {"exists": {"field": "start_date"}}]}}
        response = await call(
            self._settings,
            self._es.search(
                index=self._index,
                query=query,
                size=0,
                aggs={
                    "day": {
                        "date_histogram": {
                            "field": "start_date",
                            "calendar_interval": "day",
                            "min_doc_count": 1,
                        },
                        "aggs": {"state": {"terms": {"field": "state", "size": len(StateType)}}},
                    }
                },
            ),
        )
        counts: list[DailyCount] = []
        for bucket in response.body["aggregations"]["day"]["buckets"]:
            day = datetime.fromtimestamp(bucket["key"] / 1000, UTC).date()
            for inner in bucket["state"]["buckets"]:
                counts.append(
                    DailyCount(
                        day=day, state=StateType(inner["key"]), count=int(inner["doc_count"])
                    )
                )
        counts.sort(key=lambda c: (c.day, c.state.name))
        return counts


class SearchFlows:
    """``FlowStore``'s reads: the latest revisions (``list``), ``revisions``, ``get``."""

    def __init__(self, es: AsyncElasticsearch, settings: SearchSettings) -> None:
        self._es, self._settings = es, settings
        self._index = indices.alias(settings, indices.FLOWS)

    async def list(self, namespace: str | None = None) -> builtins.list[FlowRecord]:
        found: list[Query] = [{"term": {"latest": True}}, {"term": {"deleted": False}}]
        if namespace is not None:
            found.append({"term": {"namespace": namespace}})
        return await self._all(found, [{"namespace": "asc"}, {"flow_id": "asc"}])

    async def revisions(self, namespace: str, flow_id: str) -> builtins.list[FlowRecord]:
        found: list[Query] = [{"term": {"namespace": namespace}}, {"term": {"flow_id": flow_id}}]
        return await self._all(found, [{"revision": "asc"}])

    async def get(
        self, namespace: str, flow_id: str, revision: int | None = None
    ) -> FlowRecord | None:
        found: list[Query] = [{"term": {"namespace": namespace}}, {"term": {"flow_id": flow_id}}]
        if revision is None:
            found += [{"term": {"latest": True}}, {"term": {"deleted": False}}]
        else:
            found.append({"term": {"revision": revision}})
        records = await self._all(found, [{"revision": "desc"}], limit=1)
        return records[0] if records else None

    async def _all(
        self, filters: _Filters, sort: _Filters, limit: int | None = None
    ) -> builtins.list[FlowRecord]:
        return [
            documents.flow_of(s)
            for s in await _every(self._es, self._settings, self._index, filters, sort, limit)
        ]


class SearchTriggers:
    """``TriggerStore``'s reads."""

    def __init__(self, es: AsyncElasticsearch, settings: SearchSettings) -> None:
        self._es, self._settings = es, settings
        self._index = indices.alias(settings, indices.TRIGGERS)

    async def list(self, namespace: str | None = None) -> builtins.list[TriggerState]:
        found: list[Query] = [] if namespace is None else [{"term": {"namespace": namespace}}]
        sort: list[Query] = [{"namespace": "asc"}, {"flow_id": "asc"}, {"trigger_id": "asc"}]
        sources = await _every(self._es, self._settings, self._index, found, sort)
        return [documents.trigger_of(s) for s in sources]

    async def get(self, namespace: str, flow_id: str, trigger_id: str) -> TriggerState | None:
        if not (namespace and flow_id and trigger_id):
            return None
        response = await call(
            self._settings,
            self._es.options(ignore_status=404).get(
                index=self._index, id=documents.trigger_id(namespace, flow_id, trigger_id)
            ),
        )
        if not response.body.get("found"):
            return None
        return documents.trigger_of(response.body["_source"])


_LIVE: Query = {"bool": {"must_not": [{"term": {"deleted": True}}]}}


def log_query(where: LogFilter) -> Query:
    found: list[Query] = [_LIVE]
    if where.namespace is not None:
        found.append(_namespace("namespace", where.namespace, where.below))
    for field, value in (
        ("flow_id", where.flow_id),
        ("execution_id", where.execution_id),
        ("task_id", where.task_id),
        ("task_run_id", where.task_run_id),
        ("attempt", where.attempt),
    ):
        if value is not None:
            found.append({"term": {field: value}})
    floor = level_floor(where.min_level)
    if floor is not None:
        found.append({"range": {"rank": {"gte": floor}}})
    if where.levels is not None:
        ranks = sorted({level_floor(name) for name in where.levels} - {None})  # type: ignore[type-var]
        found.append({"terms": {"rank": ranks}})
    dates: dict[str, str] = {}
    if where.after is not None:
        dates["gte"] = where.after.isoformat()
    if where.before is not None:
        dates["lt"] = where.before.isoformat()
    if dates:
        found.append({"range": {"timestamp": dates}})
    if where.query is not None:
        found.append(_contains("message", where.query))
    return _bool(found)


class SearchLogs:
    """``LogStore``'s reads (``query``, ``find``) and deletion by query."""

    def __init__(self, es: AsyncElasticsearch, settings: SearchSettings) -> None:
        self._es, self._settings = es, settings
        self._index = indices.alias(settings, indices.LOGS)

    async def query(
        self,
        execution_id: str,
        *,
        task_run_id: str | None = None,
        min_level: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[LogEntry]:
        floor = level_floor(min_level)
        if limit <= 0:
            return []
        found: list[Query] = [
            _LIVE,
            {"term": {"execution_id": execution_id}},
            {"range": {"seq": {"gt": after_seq}}},
        ]
        if task_run_id is not None:
            found.append({"term": {"task_run_id": task_run_id}})
        if floor is not None:
            found.append({"range": {"rank": {"gte": floor}}})
        response = await call(
            self._settings,
            self._es.search(
                index=self._index,
                query=_bool(found),
                sort=[{"seq": "asc"}],
                size=min(limit, MAX_WINDOW),
                source_includes=["raw", "seq"],
            ),
        )
        return [_log_with_seq(h["_source"]) for h in response.body["hits"]["hits"]]

    async def find(
        self, where: LogFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[LogEntry], int]:
        size, start = _window(limit, offset)
        response = await call(
            self._settings,
            self._es.search(
                index=self._index,
                query=log_query(where),
                sort=[{"timestamp": "desc"}, {"execution_id": "desc"}, {"seq": "desc"}],
                size=size,
                from_=start,
                track_total_hits=True,
                source_includes=["raw", "seq"],
            ),
        )
        hits = response.body["hits"]
        return [_log_with_seq(h["_source"]) for h in hits["hits"]], int(hits["total"]["value"])

    async def delete(self, where: LogFilter) -> int:
        """Mark the lines matching ``where`` deleted; how many were. A deleted line
        stays in the index, hidden: the numbering of its execution's later lines
        counts it (as the logs topic does)."""
        return await self.hide(log_query(where))

    async def hide(self, query: Query) -> int:
        hits = await _every_hit(
            self._es, self._settings, self._index, query, [{"execution_id": "asc"}, {"seq": "asc"}]
        )
        if not hits:
            return 0
        operations: list[dict[str, Any]] = []
        for hit in hits:
            meta = {
                "_index": self._index,
                "_id": hit["_id"],
                # the same version: replaces the line, while its redelivery
                # (an external version not above it) stays refused
                "version": hit["_version"],
                "version_type": "external_gte",
            }
            operations += [{"index": meta}, {**hit["_source"], "deleted": True}]
        await call(self._settings, self._es.bulk(operations=operations, refresh=True))
        return len(hits)

    async def count_before(self, execution_id: str, offset: int) -> int:
        """Lines of the execution indexed from before ``offset`` (deleted ones too)."""
        response = await call(
            self._settings,
            self._es.search(
                index=self._index,
                query=_bool(
                    [
                        {"term": {"execution_id": execution_id}},
                        {"range": {"offset": {"lt": offset}}},
                    ]
                ),
                size=0,
                track_total_hits=True,
            ),
        )
        return int(response.body["hits"]["total"]["value"])


def _log_with_seq(source: dict[str, Any]) -> LogEntry:
    entry = documents.log_of(source)
    seq = int(source.get("seq") or 0)
    if seq and entry.seq != seq:
        entry = msgspec.structs.replace(entry, seq=seq)
    return entry


async def _every_hit(
    es: AsyncElasticsearch,
    settings: SearchSettings,
    index: str,
    query: Query,
    sort: list[Query],
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Every matching hit (id, version, source) in ``sort`` order, paged with
    search_after, so past the result window too (``sort`` must be unique per
    document: Elasticsearch 8 does not sort on ``_id``); ``limit`` stops early."""
    found: list[dict[str, Any]] = []
    after: list[Any] | None = None
    while True:
        size = _PAGE if limit is None else min(_PAGE, limit - len(found))
        extra: dict[str, Any] = {} if after is None else {"search_after": after}
        response = await call(
            settings,
            es.search(index=index, query=query, sort=sort, size=size, version=True, **extra),
        )
        hits = response.body["hits"]["hits"]
        found += hits
        if len(hits) < size or (limit is not None and len(found) >= limit):
            return found
        after = hits[-1]["sort"]


async def _every(
    es: AsyncElasticsearch,
    settings: SearchSettings,
    index: str,
    filters: list[Query],
    sort: list[Query],
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The sources of ``_every_hit`` over ``filters``."""
    hits = await _every_hit(es, settings, index, _bool(filters), sort, limit)
    return [h["_source"] for h in hits]
