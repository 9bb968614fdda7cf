"""Liveness: notices workers that stopped heartbeating and hands their jobs back.

A worker silent for ``worker_timeout_seconds`` is presumed dead: every job leased
to it returns to the queue and it is removed from the registry. A late result from
it is harmless, the engine ignores results for attempts it no longer waits for.
Expired leases (an executor that died mid-batch) are released on the same beat, and
an executor or scheduler silent for ``STALE_FACTOR`` worker timeouts leaves the
registry (it has no jobs to hand back).

With ``exclusive`` (the embedded backend, one process by definition) every other
instance in the registry belongs to a previous process that is gone, so their
jobs are re-queued at start-up instead of after the timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from backends.errors import Transient
from backends.protocols import Backend
from runtime.actors import ChildContext
from runtime.config import LivenessConfig
from runtime.log import get_logger
from services import metrics
from services.common import sleep_or_stop

log = get_logger(__name__)


#: an executor or scheduler silent this many worker timeouts leaves the registry (more
#: than a worker's: they heartbeat less often, and nothing waits on their removal)
STALE_FACTOR = 4


class Liveness:
    def __init__(
        self,
        backend: Backend,
        *,
        settings: LivenessConfig | None = None,
        exclusive: bool = False,
        own_ids: Collection[str] = (),
    ) -> None:
        self.backend = backend
        self.settings = settings or LivenessConfig()
        self.exclusive = exclusive
        #: read, not copied: the server adds the ids of instances it (re)starts
        self.own_ids = own_ids
        self.requeued = 0

    async def run(self, ctx: ChildContext) -> None:
        stopping = asyncio.Event()
        ctx.on_stop_requested(stopping.set)
        if self.exclusive:
            await self.recover_previous_process()
        ctx.ready()
        while not stopping.is_set():
            try:
                await self.check()
            except Transient as exc:
                log.warning("liveness.backend_unavailable", error=str(exc))
            await sleep_or_stop(stopping, self.settings.interval_seconds)

    async def recover_previous_process(self) -> int:
        """Re-queue the jobs of every registered instance that is not ours."""
        count = 0
        for instance in await self.backend.services.list():
            if instance.id in self.own_ids:
                continue
            count += await self._release(instance.id, "left by a previous process")
        count += await self.backend.queues.requeue_expired()
        return count

    async def check(self) -> int:
        now = self.backend.clock()
        count = 0
        for instance in await self.backend.services.list():
            if instance.id in self.own_ids:
                continue
            silent = (now - instance.heartbeat).total_seconds()
            if instance.kind == "worker":
                if silent > self.settings.worker_timeout_seconds:
                    count += await self._release(instance.id, f"silent for {silent:.0f}s")
            elif silent > STALE_FACTOR * self.settings.worker_timeout_seconds:
                # An executor or scheduler that stopped beating long ago: only its entry
                # goes (the instance page lists it no more). It leases nothing for
                # long: its batch's events come back when their lease expires, and the
                # scheduler's lock when its TTL does.
                await self.backend.services.remove(instance.id)
                metrics.LIVENESS_EVENTS.labels("instance_dead").inc()
                log.warning(
                    "liveness.instance_gone",
                    instance=instance.id,
                    kind=instance.kind,
                    silent_seconds=round(silent),
                )
        expired = await self.backend.queues.requeue_expired()
        metrics.LIVENESS_EVENTS.labels("leases_expired").inc(expired)
        return count + expired

    async def _release(self, instance_id: str, reason: str) -> int:
        jobs = await self.backend.queues.requeue_consumer(instance_id)
        await self.backend.services.remove(instance_id)
        self.requeued += jobs
        metrics.LIVENESS_EVENTS.labels("instance_dead").inc()
        metrics.LIVENESS_EVENTS.labels("jobs_requeued").inc(jobs)
        log.warning("liveness.instance_dead", instance=instance_id, reason=reason, requeued=jobs)
        return jobs
