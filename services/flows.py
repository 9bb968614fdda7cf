"""Flows for the services: parsed revisions cached by (namespace, id, revision), and
deployment of flow files."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

import msgspec

from backends.protocols import FlowRecord, FlowStore, Stores
from runtime.flow.loader import FlowError
from runtime.flow.model import Flow
from runtime.flow.parse import file_problems, parse_flow
from runtime.log import get_logger

log = get_logger(__name__)


class FlowNotFoundError(LookupError):
    """No such flow (or revision) is deployed."""


class FlowCache:
    """Parsed flows by revision. Revisions never change, so entries never go stale."""

    def __init__(self, backend: Stores, size: int = 512) -> None:
        self._backend = backend
        self._size = size
        self._cache: OrderedDict[tuple[str, str, int], Flow] = OrderedDict()

    async def get(self, namespace: str, flow_id: str, revision: int | None = None) -> Flow:
        if revision is not None:
            cached = self._cache.get((namespace, flow_id, revision))
            if cached is not None:
                self._cache.move_to_end((namespace, flow_id, revision))
                return cached
        record = await self._backend.flows.get(namespace, flow_id, revision)
        if record is None:
            which = f" revision {revision}" if revision is not None else ""
            raise FlowNotFoundError(f"flow {namespace}.{flow_id}{which} is not deployed")
        return self.parse(record)

    def remember(self, record: FlowRecord, flow: Flow) -> None:
        """Cache ``flow`` as the parsed form of ``record`` (a flow built in code)."""
        self._cache[(record.namespace, record.id, record.revision)] = flow

    def parse(self, record: FlowRecord) -> Flow:
        key = (record.namespace, record.id, record.revision)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        flow = parse_flow(record.source, f"{record.namespace}.{record.id}")
        flow = _with_revision(flow, record.revision)
        self._cache[key] = flow
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return flow


def _with_revision(flow: Flow, revision: int) -> Flow:
    return msgspec.structs.replace(flow, revision=revision)


async def deploy_source(store: FlowStore, source: str, file: str = "<flow>") -> FlowRecord:
    """Validate ``source`` and store it as the flow's next revision (FlowError if invalid)."""
    flow = parse_flow(source, file)
    return await store.deploy(flow.namespace, flow.id, source)


def flow_files(folder: Path) -> list[Path]:
    """Every ``*.yml``/``*.yaml`` under ``folder``, hidden folders skipped, sorted."""
    found = [*folder.rglob("*.yml"), *folder.rglob("*.yaml")]
    return sorted(
        p
        for p in found
        if p.is_file() and not any(x.startswith(".") for x in p.relative_to(folder).parts)
    )


async def deploy_folder(store: FlowStore, folder: Path) -> tuple[list[FlowRecord], list[str]]:
    """Deploy every ``*.yml``/``*.yaml`` under ``folder``; invalid files are reported
    (one line per problem) and skipped, valid ones deployed."""
    deployed: list[FlowRecord] = []
    problems: list[str] = []
    for path in await asyncio.to_thread(flow_files, folder):
        try:
            record = await deploy_file(store, path)
        except FlowError as exc:
            problems.extend(p.render(str(path)) for p in exc.problems)
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            # Reported where `runtime flow validate` reports it.
            found = await asyncio.to_thread(file_problems, path)
            problems.extend(p.render(str(path)) for p in found)
            continue
        deployed.append(record)
    return deployed, problems


async def deploy_file(store: FlowStore, path: Path) -> FlowRecord:
    source = await asyncio.to_thread(path.read_text, encoding="utf-8")
    flow = parse_flow(source, str(path))
    record = await store.deploy(flow.namespace, flow.id, source)
    log.info(
        "flows.deployed",
        flow=f"{flow.namespace}.{flow.id}",
        revision=record.revision,
        file=str(path),
    )
    return record
