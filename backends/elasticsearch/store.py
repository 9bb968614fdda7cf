"""The search store: one client, the repositories, ``migrate`` and the bulk writer."""

from __future__ import annotations

from backends.elasticsearch import indices, writer
from backends.elasticsearch.client import call, make_client
from backends.elasticsearch.repositories import (
    SearchExecutions,
    SearchFlows,
    SearchLogs,
    SearchTriggers,
)
from backends.elasticsearch.settings import SearchSettings


class SearchStore:
    """Elasticsearch as the API reads it and the indexer writes it."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.es = make_client(settings)
        self.executions = SearchExecutions(self.es, settings)
        self.flows = SearchFlows(self.es, settings)
        self.logs = SearchLogs(self.es, settings)
        self.triggers = SearchTriggers(self.es, settings)

    def index(self, spec: indices.IndexSpec) -> str:
        """The alias of ``spec``'s index."""
        return indices.alias(self.settings, spec)

    async def migrate(self) -> list[str]:
        """Create the indices and aliases of the current mapping versions."""
        return await indices.migrate(self.es, self.settings)

    async def bulk(self, writes: list[writer.Write]) -> writer.BulkResult:
        return await writer.bulk(self.es, self.settings, writes)

    async def delete_execution(self, execution_id: str) -> bool:
        """Remove an execution's document (the API deleted the execution); whether
        there was one."""
        if not execution_id:
            return False
        response = await call(
            self.settings,
            self.es.options(ignore_status=404).delete(
                index=self.index(indices.EXECUTIONS), id=execution_id, refresh=True
            ),
        )
        return bool(response.body.get("result") == "deleted")

    async def ping(self) -> None:
        """Raise Transient unless the store answers."""
        await call(self.settings, self.es.info())

    async def close(self) -> None:
        await self.es.close()
