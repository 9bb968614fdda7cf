"""``io.kestra.plugin.core.flow.ForEachItem``: a file's items in batches, each batch
one subflow execution.

As in Kestra, the task runs three children of its own, named after it:

- ``<id>_split`` (on a worker) splits the ``items`` file by ``batch`` (``rows``,
  default 1, ``bytes`` or ``partitions``; lines end with ``separator``) into files of
  internal storage; outputs ``splits`` (a file listing their URIs, as Kestra) and
  ``batches`` (the URIs, for the engine, which reads no storage);
- ``<id>_items`` (in the engine) creates one execution of ``namespace.flowId`` per
  batch, its ``inputs`` rendered with ``taskrun.items`` (the batch's URI) and
  ``taskrun.iteration`` (1-based); with ``wait`` it ends when they all have, FAILED
  if one failed and ``transmitFailed``; outputs ``numberOfBatches``, ``iterations``
  (end state -> count) and ``subflowOutputs`` (each execution's flow outputs, in
  iteration order);
- ``<id>_merge`` (on a worker) writes those outputs to a file, one JSON object per
  line; outputs ``subflowOutputs`` (its URI), as Kestra; no outputs when no
  subflow had any (without ``wait``, or children without flow outputs).

The engine calls :func:`start` and :func:`child_ended` for the ``_items`` run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from runtime.flow import template
from runtime.flow.context import outputs_map, variables
from runtime.flow.events import CreateSubflow, SubflowEnded
from runtime.flow.ids import derived_id
from runtime.flow.model import FlowableTask, RunnableTask, Task, TaskKind, _Model
from runtime.flow.states import StateType

if TYPE_CHECKING:
    from runtime.flow.execution import TaskRun
    from runtime.flow.scopes import Scope, ScopeBuilder
    from runtime.tasks.context import RunContext

S = StateType


class Batch(_Model, kw_only=True, frozen=True):
    rows: int | None = None
    bytes: str | None = None
    partitions: int | None = None
    separator: str = "\n"


class ForEachItem(FlowableTask, kw_only=True, frozen=True):
    items: str
    batch: Batch = Batch()
    namespace: str
    flow_id: str
    revision: int | None = None
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    labels: dict[str, str] | list[dict[str, str]] = msgspec.field(default_factory=dict)
    wait: bool = True
    transmit_failed: bool = True
    inherit_labels: bool = False
    schedule_date: str | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.ForEachItem"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.ForEachItem",)
    task_fields: ClassVar[dict[str, str]] = {"errors": "list", "finally_": "list"}

    def internal_tasks(self) -> tuple[Task, ...]:
        """The split, items and merge children, built from this task."""
        split = ForEachItemSplit(
            id=f"{self.id}_split",
            type=ForEachItemSplit.canonical_type,
            items=self.items,
            batch=self.batch,
            # a `batch` written with expressions is rendered when the split runs
            dynamic={k: v for k, v in self.dynamic.items() if k == "batch"},
        )
        items = ForEachItemExecutable(
            id=f"{self.id}_items",
            type=ForEachItemExecutable.canonical_type,
            namespace=self.namespace,
            flow_id=self.flow_id,
            revision=self.revision,
            inputs=self.inputs,
            labels=self.labels,
            wait=self.wait,
            transmit_failed=self.transmit_failed,
            inherit_labels=self.inherit_labels,
            # allowFailure/allowWarning stay on the ForEachItem itself, as in Kestra:
            # a failed _items fails the ForEachItem, which then ends WARNING (or SUCCESS)
        )
        merge = ForEachItemMerge(id=f"{self.id}_merge", type=ForEachItemMerge.canonical_type)
        return (split, items, merge)

    def child_lists(self) -> Iterator[tuple[str, tuple[Task, ...]]]:
        yield from super().child_lists()
        yield "tasks", self.internal_tasks()

    def scope(self, build: ScopeBuilder) -> Scope:
        return build.scope([build.lane(self.internal_tasks())])


class ForEachItemSplit(RunnableTask, kw_only=True, frozen=True):
    items: str
    batch: Batch = Batch()

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.ForEachItem$ForEachItemSplit"

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        from runtime.tasks.context import TaskFailure
        from runtime.tasks.storage_tasks import split_rows

        where = f"ForEachItem {self.id.removesuffix('_split')!r}"
        uri = str(await ctx.render(self.items))
        if not uri.startswith("kestra://"):
            raise TaskFailure(
                f"{where}: items must be a file of internal storage (kestra:///...), got {uri!r}"
            )
        data = await ctx.storage.get(uri)
        batch = self.batch
        rows = batch.rows if batch.rows is not None or batch.bytes or batch.partitions else 1
        separator = str(await ctx.render(batch.separator)).encode()
        chunks = split_rows(data, separator, rows, batch.partitions, batch.bytes, where)
        prefix = (
            f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"
        )
        batches = []
        for index, chunk in enumerate(chunks, start=1):
            body = b"".join(row + separator for row in chunk)
            batches.append(
                await ctx.storage.put(ctx.namespace, f"{prefix}/batch-{index}.ion", body)
            )
        listing = "\n".join(batches).encode()
        splits = await ctx.storage.put(ctx.namespace, f"{prefix}/splits.txt", listing)
        return {"splits": splits, "batches": batches}


class ForEachItemExecutable(Task, kw_only=True, frozen=True):
    namespace: str
    flow_id: str
    revision: int | None = None
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    labels: dict[str, str] | list[dict[str, str]] = msgspec.field(default_factory=dict)
    wait: bool = True
    transmit_failed: bool = True
    inherit_labels: bool = False

    kind: ClassVar[TaskKind] = TaskKind.SUBFLOW
    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.ForEachItem$ForEachItemExecutable"


class ForEachItemMerge(RunnableTask, kw_only=True, frozen=True):
    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.ForEachItem$ForEachItemMergeOutputs"

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        parent = self.id.removesuffix("_merge")
        items = (ctx.variables.get("outputs") or {}).get(f"{parent}_items") or {}
        produced = list(items.get("subflowOutputs") or [])
        if not any(produced):
            return None  # Kestra's merge has nothing to write either
        lines = "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in produced)
        prefix = (
            f"{ctx.flow_id}/executions/{ctx.execution_id}/tasks/{ctx.task_id}/{ctx.task_run_id}"
        )
        uri = await ctx.storage.put(ctx.namespace, f"{prefix}/outputs.ion", lines.encode())
        return {"subflowOutputs": uri}


# -- the engine's side of <id>_items -------------------------------------------------
def start(engine: Any, run: TaskRun, task: ForEachItemExecutable) -> None:
    """Create one subflow execution per batch (the split's ``batches``)."""
    split = outputs_map(engine.runs).get(task.id.removesuffix("_items") + "_split") or {}
    if run.value is not None:  # inside a loop: the split of this iteration
        split = split.get(run.value) or {}
    batches = list(split.get("batches") or [])
    flow, at = engine.flow, engine.at
    context = variables(
        flow, engine.execution(), task=task, task_run=run, outputs=outputs_map(engine.runs)
    )
    labels_raw = task.labels
    if isinstance(labels_raw, list):
        labels_raw = {item["key"]: item["value"] for item in labels_raw}
    own = {lb["key"]: lb["value"] for lb in engine.original.labels}
    children: dict[str, int] = {}
    commands = []
    try:
        with template.fixed_now(at):
            labels = {
                str(k): str(v) for k, v in template.render_value(dict(labels_raw), context).items()
            }
            if task.inherit_labels:
                labels = {**own, **labels}
            labels.setdefault(
                "system.correlationId", own.get("system.correlationId", engine.original.id)
            )
            for iteration, uri in enumerate(batches, start=1):
                taskrun = {**context.get("taskrun", {}), "items": uri, "iteration": iteration}
                inputs = template.render_value(dict(task.inputs), {**context, "taskrun": taskrun})
                child_id = derived_id(engine.original.id, run.id, run.attempt_count + 1, iteration)
                children[child_id] = iteration
                commands.append(
                    CreateSubflow(
                        at=at,
                        task_run_id=run.id,
                        execution_id=child_id,
                        namespace=task.namespace,
                        flow_id=task.flow_id,
                        revision=task.revision,
                        inputs=inputs,
                        labels=labels,
                        wait=task.wait,
                    )
                )
    except template.TemplateError as exc:
        engine.log("ERROR", f"ForEachItem {task.id!r}: {exc}", run)
        engine.move_run(engine.move_run(run, S.RUNNING), S.FAILED)
        return
    memo = {**(run.memo or {}), "children": children, "ended": {}}
    # without wait, each batch counts as done once its execution is created (Kestra)
    iterations = (
        {"CREATED": len(batches), "RUNNING": 0}
        if task.wait
        else {"RUNNING": 0, "SUCCESS": len(batches)}
    )
    outputs = {"numberOfBatches": len(batches), "iterations": iterations}
    run = msgspec.structs.replace(run, memo=memo, outputs=outputs)
    engine.set_run(run)
    run = engine.move_run(run, S.RUNNING)
    engine.commands.extend(commands)
    if not task.wait or not batches:
        engine.move_run(run, S.SUCCESS)


def child_ended(
    engine: Any, run: TaskRun, task: ForEachItemExecutable, event: SubflowEnded
) -> None:
    memo = dict(run.memo or {})
    children: dict[str, int] = memo.get("children") or {}
    if event.execution_id not in children:
        return  # the child of an earlier attempt
    ended: dict[str, Any] = dict(memo.get("ended") or {})
    if event.execution_id in ended:
        return  # a duplicate
    ended[event.execution_id] = {"state": event.state.value, "outputs": event.outputs or {}}
    memo["ended"] = ended
    running = len(children) - len(ended)
    # Kestra lists CREATED and RUNNING even at zero
    counts: dict[str, int] = {"CREATED": 0, "RUNNING": running}
    for item in ended.values():
        counts[item["state"]] = counts.get(item["state"], 0) + 1
    outputs = {**(run.outputs or {}), "iterations": counts}
    if running == 0:
        order = sorted(ended, key=lambda child: children[child])
        outputs["subflowOutputs"] = [ended[c]["outputs"] for c in order]
    run = msgspec.structs.replace(run, memo=memo, outputs=outputs)
    engine.set_run(run)
    if running:
        return
    failed = any(i["state"] in ("FAILED", "KILLED", "CANCELLED") for i in ended.values())
    warned = any(i["state"] == "WARNING" for i in ended.values())
    if failed and task.transmit_failed:
        state = S.FAILED
    elif warned and task.transmit_failed:
        state = S.WARNING
    else:
        state = S.SUCCESS
    engine.finish_attempt(run, state)


TYPES: tuple[type[Task], ...] = (
    ForEachItem,
    ForEachItemSplit,
    ForEachItemExecutable,
    ForEachItemMerge,
)
