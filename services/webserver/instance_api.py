"""The instance page's endpoint: the live components and the queues' depths.

``GET /api/v1/instance`` answers every component that heartbeats (executors,
workers, schedulers) as the service registry holds it, with how long ago it last
did, plus the webserver answering (which does not heartbeat), and the number of
messages waiting in each queue.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE
from services.webserver.http import json_response, state

QUEUES = (EXECUTOR_QUEUE, WORKER_QUEUE)
_STARTED = datetime.now().astimezone()


async def instance(request: Request) -> Response:
    app = state(request)
    now = app.backend.clock()
    services = [
        {
            "id": s.id,
            "kind": s.kind,
            "state": s.state,
            "host": s.host,
            "pid": s.pid,
            "started": s.started,
            "heartbeat": s.heartbeat,
            "secondsSinceHeartbeat": round(max(0.0, (now - s.heartbeat).total_seconds()), 3),
            "info": s.info,
        }
        for s in await app.backend.services.list()
    ]
    services.sort(key=lambda s: (str(s["kind"]), str(s["id"])))
    services.append(
        {
            "id": f"webserver-{socket.gethostname()}-{os.getpid()}",
            "kind": "webserver",
            "state": "RUNNING",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _STARTED,
            "heartbeat": now,
            "secondsSinceHeartbeat": 0.0,
            "info": {"answering": True},
        }
    )
    queues = [{"name": q, "depth": await app.backend.queues.depth(q)} for q in QUEUES]
    return json_response({"date": now, "services": services, "queues": queues})


routes = [Route("/api/v1/instance", instance, methods=["GET"])]
