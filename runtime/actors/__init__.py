"""The actor kernel: actors, mailboxes, supervisors, the actor system, the process pool."""

from runtime.actors.actor import Actor, ActorCell, ActorRef, AskTimeoutError, actor_spec
from runtime.actors.clock import Clock, FakeClock, SystemClock
from runtime.actors.lifecycle import IllegalTransitionError, Lifecycle, ServiceState
from runtime.actors.mailbox import (
    Delivery,
    Inbox,
    Mailbox,
    MailboxClosedError,
    MailboxFullError,
    MailboxStatistics,
    OverflowPolicy,
    Postbox,
)
from runtime.actors.pool import (
    PoolClosedError,
    PoolError,
    ProcessPool,
    ProcessPoolStatistics,
    RemoteError,
    WorkerCrashedError,
)
from runtime.actors.registry import ActorNotFoundError, NameTakenError, Registry
from runtime.actors.supervisor import (
    Backoff,
    ChildContext,
    ChildSpec,
    ChildStartError,
    ChildState,
    Restart,
    RestartIntensity,
    Strategy,
    Supervisor,
    SupervisorEscalationError,
    supervisor_spec,
)
from runtime.actors.system import ActorSystem

__all__ = [
    "WorkerCrashedError",
    "RemoteError",
    "ProcessPoolStatistics",
    "ProcessPool",
    "PoolError",
    "PoolClosedError",
    "Actor",
    "ActorCell",
    "ActorNotFoundError",
    "ActorRef",
    "ActorSystem",
    "AskTimeoutError",
    "Backoff",
    "ChildContext",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "Clock",
    "Delivery",
    "FakeClock",
    "IllegalTransitionError",
    "Inbox",
    "Lifecycle",
    "Mailbox",
    "MailboxClosedError",
    "MailboxFullError",
    "MailboxStatistics",
    "NameTakenError",
    "OverflowPolicy",
    "Postbox",
    "Registry",
    "Restart",
    "RestartIntensity",
    "ServiceState",
    "Strategy",
    "Supervisor",
    "SupervisorEscalationError",
    "SystemClock",
    "actor_spec",
    "supervisor_spec",
]
