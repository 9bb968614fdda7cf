"""The typed model of Kestra's flow YAML.

Property names follow Kestra (camelCase in YAML, snake_case here through msgspec's
``rename="camel"``). Unknown fields are errors. Task types are classes registered
in :mod:`runtime.flow.registry`; a flow's task tree is built by
:func:`runtime.flow.loader.build_flow`, which resolves each ``type``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from runtime.flow.scopes import Scope, ScopeBuilder
    from runtime.tasks.context import RunContext


class _Model(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True, frozen=True):
    """Base of every YAML-facing struct."""


# -- retries -------------------------------------------------------------------
class RetryBehavior(enum.Enum):
    RETRY_FAILED_TASK = "RETRY_FAILED_TASK"
    CREATE_NEW_EXECUTION = "CREATE_NEW_EXECUTION"


class _Retry(_Model, kw_only=True, frozen=True, tag_field="type"):
    max_attempt: int | None = None
    max_duration: timedelta | None = None
    warning_on_retry: bool = False
    behavior: RetryBehavior = RetryBehavior.RETRY_FAILED_TASK

    def delay(self, attempt: int, jitter: float) -> timedelta:
        """Delay before attempt ``attempt + 1`` after ``attempt`` attempts (1-based).
        ``jitter`` in [0, 1) stands in for randomness, so the engine stays pure."""
        raise NotImplementedError


class ConstantRetry(_Retry, kw_only=True, frozen=True, tag="constant"):
    interval: timedelta

    def delay(self, attempt: int, jitter: float) -> timedelta:
        return self.interval


class ExponentialRetry(_Retry, kw_only=True, frozen=True, tag="exponential"):
    interval: timedelta
    max_interval: timedelta
    delay_factor: float | None = None

    def delay(self, attempt: int, jitter: float) -> timedelta:
        # Kestra's rule: interval * factor * (attempt - 1), capped at maxInterval.
        factor = int(self.delay_factor) if self.delay_factor is not None else 2
        computed = self.interval * (factor * max(0, attempt - 1))
        return min(computed, self.max_interval) if computed else self.interval


class RandomRetry(_Retry, kw_only=True, frozen=True, tag="random"):
    min_interval: timedelta
    max_interval: timedelta

    def delay(self, attempt: int, jitter: float) -> timedelta:
        return self.min_interval + (self.max_interval - self.min_interval) * jitter


Retry = ConstantRetry | ExponentialRetry | RandomRetry


# -- tasks ---------------------------------------------------------------------
class TaskKind(enum.Enum):
    RUNNABLE = "runnable"  #: runs on a worker
    FLOWABLE = "flowable"  #: computed by the engine from its children
    SUBFLOW = "subflow"  #: creates another execution
    PAUSE = "pause"  #: waits for a resume or a delay, in the engine


class Task(_Model, kw_only=True, frozen=True):
    """Properties every task has. Subclasses add their own."""

    id: str
    type: str
    description: str | None = None
    retry: Retry | None = None
    timeout: timedelta | None = None
    disabled: bool = False
    log_level: str | None = None
    allow_failure: bool = False
    allow_warning: bool = False
    run_if: str | bool = "true"
    worker_group: dict[str, Any] | None = None
    log_to_file: bool = False
    # Accepted so existing flows validate; not acted on yet.
    version: str | None = None
    task_cache: dict[str, Any] | None = None
    #: raw values of the properties written as expressions where a typed value is
    #: expected, by YAML name (see runtime.flow.dynamic); not a YAML property
    dynamic: dict[str, Any] = msgspec.field(default_factory=dict, name="$dynamic")

    kind: ClassVar[TaskKind] = TaskKind.RUNNABLE
    #: the name Kestra documents for this type
    canonical_type: ClassVar[str] = ""
    #: older names that still resolve to this type
    aliases: ClassVar[tuple[str, ...]] = ()
    #: fields holding child tasks, and their shape: "list", "map" (of lists) or "dag"
    task_fields: ClassVar[dict[str, str]] = {}
    #: a runnable task that runs its children itself on the worker (WorkingDirectory)
    #: and reports them as outputs ``children: [{taskId, state, outputs}]``; the engine
    #: records them as child task runs, so ``outputs.<child>`` works as in Kestra
    reports_children: ClassVar[bool] = False

    def child_lists(self) -> Iterator[tuple[str, tuple[Task, ...]]]:
        """Every list of child tasks, named by its YAML path segment."""
        for field, shape in self.task_fields.items():
            value = getattr(self, field)
            name = _yaml_name(field)
            if shape == "list":
                yield name, value
            elif shape == "map":
                for key, tasks in value.items():
                    yield f"{name}.{key}", tasks
            elif shape == "dag":
                yield name, tuple(item.task for item in value)

    def walk(self) -> Iterator[Task]:
        """This task and every task below it, depth first."""
        yield self
        for _, tasks in self.child_lists():
            for task in tasks:
                yield from task.walk()


def _yaml_name(field: str) -> str:
    head, *rest = field.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


class RunnableTask(Task, kw_only=True, frozen=True):
    """A task a worker runs: ``run`` renders its properties through ``ctx``, does the
    work and returns its outputs (see runtime.tasks.context.RunContext)."""

    kind: ClassVar[TaskKind] = TaskKind.RUNNABLE

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        raise NotImplementedError(f"task type {self.type} cannot run on this worker")


class FlowableTask(Task, kw_only=True, frozen=True):
    """A task whose children and state the engine computes; it has its own errors/finally."""

    errors: tuple[Task, ...] = ()
    finally_: tuple[Task, ...] = msgspec.field(default=(), name="finally")

    kind: ClassVar[TaskKind] = TaskKind.FLOWABLE


class Sequential(FlowableTask, kw_only=True, frozen=True):
    tasks: tuple[Task, ...]

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Sequential"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Sequential",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        return build.scope([build.lane(self.tasks)])


class Parallel(FlowableTask, kw_only=True, frozen=True):
    tasks: tuple[Task, ...]
    concurrent: int = 0

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Parallel"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Parallel",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        return build.scope([build.lane(self.tasks, "par")], task_concurrency=self.concurrent)


class AllowFailure(FlowableTask, kw_only=True, frozen=True):
    """Deprecated in Kestra in favour of ``allowFailure: true``; still runs."""

    tasks: tuple[Task, ...]

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.AllowFailure"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.AllowFailure",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        return build.scope([build.lane(self.tasks)], allow_failure=True)


class If(FlowableTask, kw_only=True, frozen=True):
    condition: str | bool
    then: tuple[Task, ...]
    else_: tuple[Task, ...] = msgspec.field(default=(), name="else")

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.If"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.If",)
    task_fields: ClassVar[dict[str, str]] = {
        "then": "list",
        "else_": "list",
        "errors": "list",
        "finally_": "list",
    }

    def scope(self, build: ScopeBuilder) -> Scope:
        result = build.remembered("evaluationResult")
        if result is None:
            result = build.holds(self.condition)
            build.remember({"evaluationResult": result})
        return build.scope([build.lane(self.then if result else self.else_)])


class Switch(FlowableTask, kw_only=True, frozen=True):
    value: str | int | float | bool
    cases: dict[str, tuple[Task, ...]] = {}
    defaults: tuple[Task, ...] = ()

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Switch"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Switch",)
    task_fields: ClassVar[dict[str, str]] = {
        "cases": "map",
        "defaults": "list",
        "errors": "list",
        "finally_": "list",
    }

    def scope(self, build: ScopeBuilder) -> Scope:
        value = build.remembered("value")
        if value is None:
            value = str(build.render(self.value))
            build.remember({"value": value, "defaults": value not in self.cases})
        if value in self.cases:
            return build.scope([build.lane(self.cases[value])])
        if self.defaults:
            return build.scope([build.lane(self.defaults)])
        return build.fail(f"Switch {self.id!r}: no case for {value!r} and no defaults")


class ForEach(FlowableTask, kw_only=True, frozen=True):
    values: str | list[Any] | dict[str, Any]
    concurrency_limit: int = 1
    tasks: tuple[Task, ...]

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.ForEach"
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        values = build.loop_values(self.values)
        lanes = [build.lane(self.tasks, "seq", v, i) for i, v in enumerate(values)]
        return build.scope(lanes, lane_concurrency=self.concurrency_limit)


class EachSequential(FlowableTask, kw_only=True, frozen=True):
    """Deprecated in Kestra in favour of ForEach; still runs."""

    value: str | list[Any]
    tasks: tuple[Task, ...]

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.EachSequential"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.EachSequential",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        lanes = [build.lane(self.tasks, "seq", v) for v in build.loop_values(self.value)]
        return build.scope(lanes, lane_concurrency=1)


class EachParallel(FlowableTask, kw_only=True, frozen=True):
    """Deprecated in Kestra in favour of ForEach; still runs."""

    value: str | list[Any]
    concurrent: int = 0
    tasks: tuple[Task, ...]

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.EachParallel"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.EachParallel",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        lanes = [build.lane(self.tasks, "par", v) for v in build.loop_values(self.value)]
        return build.scope(lanes, task_concurrency=self.concurrent)


class DagTask(_Model, kw_only=True, frozen=True):
    task: Task
    depends_on: tuple[str, ...] = ()


class Dag(FlowableTask, kw_only=True, frozen=True):
    tasks: tuple[DagTask, ...]
    concurrent: int = 0

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Dag"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Dag",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "dag", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        deps = {item.task.id: item.depends_on for item in self.tasks}
        lane = build.lane([item.task for item in self.tasks], "dag", deps=deps)
        return build.scope([lane], task_concurrency=self.concurrent)


class CheckFrequency(_Model, kw_only=True, frozen=True):
    max_iterations: int = 100
    max_duration: timedelta = timedelta(hours=1)
    interval: timedelta = timedelta(seconds=1)


class WaitFor(FlowableTask, kw_only=True, frozen=True):
    """Runs ``tasks`` again and again until ``condition`` holds."""

    condition: str | bool
    tasks: tuple[Task, ...]
    check_frequency: CheckFrequency = CheckFrequency()
    fail_on_max_reached: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.WaitFor"
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        return build.wait_for(self)


class PauseBehavior(enum.Enum):
    RESUME = "RESUME"
    WARN = "WARN"
    FAIL = "FAIL"
    CANCEL = "CANCEL"


class Pause(Task, kw_only=True, frozen=True):
    """Pauses until resumed, or until ``pauseDuration`` (``delay``) has passed."""

    pause_duration: timedelta | None = None
    delay: timedelta | None = None  # deprecated name of pauseDuration
    behavior: PauseBehavior = PauseBehavior.RESUME
    on_resume: tuple[dict[str, Any], ...] = ()
    tasks: tuple[Task, ...] = ()  # deprecated: children run after the resume

    kind: ClassVar[TaskKind] = TaskKind.PAUSE
    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Pause"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Pause",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list"}

    def scope(self, build: ScopeBuilder) -> Scope:
        """Its (deprecated) children run in sequence after the resume."""
        return build.scope([build.lane(self.tasks)])

    @property
    def wait(self) -> timedelta | None:
        return self.pause_duration if self.pause_duration is not None else self.delay


class Subflow(Task, kw_only=True, frozen=True):
    namespace: str
    flow_id: str
    revision: int | None = None
    inputs: dict[str, Any] = {}
    labels: dict[str, str] | list[dict[str, str]] = {}
    wait: bool = True
    transmit_failed: bool = True
    inherit_labels: bool = False
    outputs: dict[str, Any] = {}
    schedule_date: str | None = None

    kind: ClassVar[TaskKind] = TaskKind.SUBFLOW
    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Subflow"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Subflow",)


FLOWABLE_TYPES: tuple[type[Task], ...] = (
    Sequential,
    Parallel,
    AllowFailure,
    If,
    Switch,
    ForEach,
    EachSequential,
    EachParallel,
    Dag,
    WaitFor,
    Pause,
    Subflow,
)


# -- flow ----------------------------------------------------------------------
class ConcurrencyBehavior(enum.Enum):
    QUEUE = "QUEUE"
    CANCEL = "CANCEL"
    FAIL = "FAIL"


class Concurrency(_Model, kw_only=True, frozen=True):
    limit: int
    behavior: ConcurrencyBehavior = ConcurrencyBehavior.QUEUE


class FlowOutput(_Model, kw_only=True, frozen=True):
    id: str
    type: str = "STRING"
    value: Any
    description: str | None = None
    display_name: str | None = None
    required: bool = True


class Label(_Model, kw_only=True, frozen=True):
    key: str
    value: str


class PluginDefault(_Model, kw_only=True, frozen=True):
    type: str
    values: dict[str, Any]
    forced: bool = False


class Input(_Model, kw_only=True, frozen=True):
    """A flow input. Which validation fields apply depends on ``type``."""

    id: str
    type: str = "STRING"
    description: str | None = None
    display_name: str | None = None
    required: bool = True
    defaults: Any = None
    depends_on: dict[str, Any] | None = None
    # STRING / SECRET / EMAIL
    validator: str | None = None
    # INT / FLOAT / DURATION
    min: Any = None
    max: Any = None
    # DATETIME / DATE / TIME
    after: Any = None
    before: Any = None
    # SELECT / MULTISELECT / ENUM
    values: list[Any] | None = None
    options: list[Any] | None = None
    allow_custom_value: bool = False
    expression: str | None = None
    # ARRAY
    item_type: str | None = None
    # FILE
    allowed_file_extensions: list[str] | None = None


class Trigger(_Model, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """A trigger as declared; its type-specific fields are checked by the scheduler's
    trigger types (Schedule ``cron`` is validated with the flow)."""

    id: str
    type: str
    description: str | None = None
    disabled: bool = False
    conditions: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {}
    cron: str | None = None
    timezone: str | None = None
    key: str | None = None
    with_seconds: bool = False
    recover_missed_schedules: str | None = None
    backfill: dict[str, Any] | None = None
    late_maximum_delay: timedelta | None = None
    preconditions: dict[str, Any] | None = None
    stop_after: list[str] | None = None
    #: Flow trigger: the upstream end states it fires on (default: every terminal state)
    states: list[str] | None = None
    #: Webhook: answer once the execution has ended (with it, or with its outputs only)
    wait: bool = False
    return_outputs: bool = False


class Flow(_Model, kw_only=True, frozen=True):
    id: str
    namespace: str
    revision: int | None = None
    description: str | None = None
    labels: dict[str, Any] | list[Label] = {}
    inputs: tuple[Input, ...] = ()
    variables: dict[str, Any] = {}
    tasks: tuple[Task, ...]
    errors: tuple[Task, ...] = ()
    finally_: tuple[Task, ...] = msgspec.field(default=(), name="finally")
    after_execution: tuple[Task, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    concurrency: Concurrency | None = None
    retry: Retry | None = None
    timeout: timedelta | None = None
    disabled: bool = False
    deleted: bool = False
    outputs: tuple[FlowOutput, ...] = ()
    plugin_defaults: tuple[PluginDefault, ...] = ()
    # Accepted so existing flows validate; not acted on yet (listeners are deprecated
    # in Kestra in favour of triggers and afterExecution).
    listeners: tuple[dict[str, Any], ...] = ()
    sla: tuple[dict[str, Any], ...] = ()
    checks: tuple[dict[str, Any], ...] = ()
    tenant_id: str | None = None

    def label_map(self) -> dict[str, str]:
        if isinstance(self.labels, dict):
            return {str(k): str(v) for k, v in self.labels.items()}
        return {label.key: label.value for label in self.labels}

    def all_tasks(self) -> Iterator[Task]:
        """Every task of the flow, depth first, in declaration order."""
        for group in (self.tasks, self.errors, self.finally_, self.after_execution):
            for task in group:
                yield from task.walk()

    def task_index(self) -> dict[str, Task]:
        """Task id -> task, over the whole tree (ids are unique in a valid flow)."""
        return {task.id: task for task in self.all_tasks()}

    @property
    def uid(self) -> str:
        return f"{self.namespace}.{self.id}"
