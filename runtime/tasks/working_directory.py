"""``io.kestra.plugin.core.flow.WorkingDirectory``: runnable children, one after the
other, on one worker, in one shared working folder.

Here the whole WorkingDirectory is one task run: its children are not task runs of
their own (in Kestra they are). So:

- each child renders its templates with the outputs of the children before it
  (``{{ outputs.<child>.<name> }}``), and sees ``task.id`` as its own id;
- the WorkingDirectory's outputs are ``outputs`` (each child's outputs, keyed by
  child id; children without outputs are absent) and, when ``outputFiles`` is set,
  ``outputFiles`` (name -> URI), as in Kestra. Tasks after the WorkingDirectory read
  a child's outputs as ``outputs.<wdir>.outputs.<child>.<name>`` — in Kestra it is
  ``outputs.<child>.<name>``;
- a failing child fails the WorkingDirectory, unless that child has
  ``allowFailure: true`` (then it ends in WARNING and the next child runs);
- a child's ``disabled`` and ``runIf`` are honoured, its ``timeout`` too; its
  ``retry`` is not (retry the WorkingDirectory instead);
- only runnable children are allowed (as in Kestra: flowable ones fail it).

``inputFiles`` are written before the first child; after a child fails, ``errors``
run in the same folder (the run stays FAILED and keeps its children's outputs),
then ``finally`` in any case; ``namespaceFiles`` (``include``/``exclude`` globs) are
copied into the folder first; ``cache`` is not supported yet and is ignored with a
warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.actors.pool import ProcessPool
from runtime.flow import dynamic
from runtime.flow.context import is_truthy
from runtime.flow.model import RunnableTask, Task
from runtime.tasks import files
from runtime.tasks.context import RunContext, TaskFailure, TaskKV, TaskLogger, TaskStorage

if TYPE_CHECKING:
    from runtime.tasks.core import WorkingDirectory


async def run(task: WorkingDirectory, ctx: RunContext) -> dict[str, Any]:
    """Run the children in order and gather their outputs."""
    where = f"WorkingDirectory {task.id!r}"
    for child in (*task.tasks, *task.errors, *task.finally_):
        if not isinstance(child, RunnableTask):
            raise TaskFailure(
                f"{where}: child task {child.id!r} ({child.type}) is not a runnable task; "
                "a WorkingDirectory only runs runnable tasks (move flowable tasks outside it)"
            )
    if task.namespace_files:
        from runtime.tasks.namespace_files import copy_into

        await copy_into(ctx, task.namespace_files, ctx.workdir, where)
    if task.cache:
        ctx.log.warning(f"{where}: cache is not supported yet; ignored")
    await files.write_input_files(
        ctx, task.input_files, ctx.workdir, where=where, extra={"workingDir": str(ctx.workdir)}
    )

    results: dict[str, Any] = {}
    #: what the engine turns into the children's task runs (see Task.reports_children)
    children: list[dict[str, Any]] = []
    failure = await _run_children(task.tasks, ctx, results, children, where)
    if failure is not None and task.errors:
        await _run_children(task.errors, ctx, results, children, where)
    if task.finally_:
        await _run_children(task.finally_, ctx, results, children, where)
    gathered: dict[str, Any] = {"outputs": results, "children": children}
    if failure is not None:
        raise TaskFailure(str(failure), outputs=gathered) from failure
    if task.output_files:
        gathered["outputFiles"] = await files.upload_output_files(
            ctx, list(task.output_files), ctx.workdir, where=where
        )
    return gathered


async def _run_children(
    tasks: tuple[Task, ...],
    ctx: RunContext,
    results: dict[str, Any],
    children: list[dict[str, Any]],
    where: str,
) -> TaskFailure | None:
    """Run ``tasks`` in order until one fails (returned, not raised)."""
    for child in tasks:
        if child.disabled:
            continue
        child_ctx = _ChildContext(ctx, child, results)
        if not is_truthy(await child_ctx.render(child.run_if)):
            ctx.log.info(f"{where}: child task {child.id!r} skipped (runIf is false)")
            children.append({"taskId": child.id, "state": "SKIPPED"})
            continue
        try:
            outputs = await _run_child(child, child_ctx)
        except Exception as exc:
            message = f"{where}: child task {child.id!r} failed: {exc}"
            if not child.allow_failure:
                children.append({"taskId": child.id, "state": "FAILED"})
                failure = TaskFailure(message)
                failure.__cause__ = exc
                return failure
            ctx.log.error(message)
            ctx.warn(f"child task {child.id!r} failed and allowFailure is true")
            children.append({"taskId": child.id, "state": "WARNING"})
            continue
        if outputs is not None:
            results[child.id] = outputs
        children.append({"taskId": child.id, "state": "SUCCESS", "outputs": outputs})
    return None


async def _run_child(task: Task, ctx: RunContext) -> dict[str, Any] | None:
    assert isinstance(task, RunnableTask)
    child: RunnableTask = await dynamic.resolve_async(task, ctx.render)
    if child.timeout is None:
        return await child.run(ctx)
    limit = child.timeout.total_seconds()
    try:
        async with asyncio.timeout(limit):
            return await child.run(ctx)
    except TimeoutError:
        raise TaskFailure(f"timed out after {child.timeout}") from None


class _ChildContext:
    """The parent's RunContext as one child sees it: its own task id, and the
    outputs of the children before it."""

    def __init__(self, parent: RunContext, child: Task, earlier: dict[str, Any]) -> None:
        self._parent = parent
        outputs = {**(parent.variables.get("outputs") or {}), **earlier}
        self._extra: dict[str, Any] = {
            "outputs": outputs,
            "task": {"id": child.id, "type": child.type},
            # Kestra's name for the WorkingDirectory's own task run, seen by its children
            "workerTaskrun": parent.variables.get("taskrun") or {},
        }
        self.execution_id: str = parent.execution_id
        self.task_run_id: str = parent.task_run_id
        self.task_id: str = child.id
        self.attempt: int = parent.attempt
        self.namespace: str = parent.namespace
        self.flow_id: str = parent.flow_id
        self.variables: dict[str, Any] = {**parent.variables, **self._extra}
        self.workdir: Path = parent.workdir
        self.log: TaskLogger = parent.log
        self.storage: TaskStorage = parent.storage
        self.kv: TaskKV = parent.kv
        self.pool: ProcessPool = parent.pool

    async def render(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        return await self._parent.render(value, {**self._extra, **(extra or {})})

    def warn(self, reason: str) -> None:
        self._parent.warn(reason)

    def metric(
        self, name: str, type: str, value: float, tags: dict[str, str] | None = None
    ) -> None:
        self._parent.metric(name, type, value, tags)

    def on_kill(self, callback: Callable[[], None]) -> None:
        self._parent.on_kill(callback)
