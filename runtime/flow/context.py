"""The variables templates see: ``inputs``, ``outputs``, ``vars``, ``execution``,
``flow``, ``task``, ``taskrun``, ``parent``/``parents``, ``labels``, ``trigger``,
``envs``, ``globals`` — shaped as Kestra shapes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runtime.flow.execution import Execution, TaskRun
from runtime.flow.model import Flow, Task


def iso(value: datetime | None) -> str | None:
    """An instant as Kestra's templates print it: UTC with a ``Z``, to the
    millisecond (its stored dates are), the fraction left out when it is zero (as
    java.time.Instant writes itself)."""
    if value is None:
        return None
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    millis = utc.microsecond // 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def label_variables(labels: tuple[dict[str, str], ...]) -> dict[str, Any]:
    """``labels`` as templates see them: by key, and a dotted key also nested
    (``labels.system.correlationId``), as Kestra nests them."""
    flat: dict[str, Any] = {label["key"]: label["value"] for label in labels}
    out: dict[str, Any] = dict(flat)
    for key, value in flat.items():
        head, *rest = key.split(".")
        if not rest:
            continue
        node = out.setdefault(head, {})
        if not isinstance(node, dict):
            continue  # a plain label of that name wins
        for part in rest[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(rest[-1], value)
    return out


def outputs_map(runs: tuple[TaskRun, ...] | list[TaskRun]) -> dict[str, Any]:
    """Every task run's outputs by task id; runs inside loops nest under the loop
    values of their ancestors (``outputs.t[value]``), as Kestra does."""
    by_id = {run.id: run for run in runs}
    result: dict[str, Any] = {}
    for run in runs:
        if run.outputs is None:
            continue
        values = []
        parent_id = run.parent_task_run_id
        while parent_id is not None:
            parent = by_id.get(parent_id)
            if parent is None:
                break
            if parent.value is not None:
                values.append(parent.value)
            parent_id = parent.parent_task_run_id
        values.reverse()
        if run.value is not None:
            values.append(run.value)
        node: Any = run.outputs
        for value in reversed(values):
            node = {value: node}
        _merge_into(result, {run.task_id: node})
    return result


#: the variables key listing the flow's SECRET inputs, masked in the task's logs
SECRET_INPUTS = "$secretInputs"


def tasks_map(runs: tuple[TaskRun, ...] | list[TaskRun]) -> dict[str, Any]:
    """``tasks``: each task's state (``tasks.t.state``), or for a run with a loop
    value, each value's (``tasks.t[value].state``), as Kestra's run variables."""
    result: dict[str, Any] = {}
    for run in runs:
        state = {"state": run.state.current.value}
        if run.value is None:
            result[run.task_id] = state
        else:
            entry = result.setdefault(run.task_id, {})
            entry[run.value] = state
    return result


def _merge_into(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value


def parents_of(run: TaskRun, runs_by_id: Mapping[str, TaskRun]) -> list[dict[str, Any]]:
    """``parents``: the closest parent first, each with its loop value and outputs."""
    out: list[dict[str, Any]] = []
    parent_id = run.parent_task_run_id
    while parent_id is not None:
        parent = runs_by_id.get(parent_id)
        if parent is None:
            break
        entry: dict[str, Any] = {}
        if parent.value is not None:
            entry["taskrun"] = {"value": parent.value}
        if parent.outputs:
            entry["outputs"] = parent.outputs
        if entry:
            out.append(entry)
        parent_id = parent.parent_task_run_id
    return out


#: the process's ``envs`` and ``globals`` (settings, set once at start-up by
#: :func:`configure`): the same for every execution, so renders stay repeatable
_PROCESS: dict[str, dict[str, Any]] = {"envs": {}, "globals": {}}


def configure(*, globals_: Mapping[str, Any], environ: Mapping[str, str], env_prefix: str) -> None:
    """Set what ``{{ globals.x }}`` and ``{{ envs.x }}`` read in this process."""
    envs = {
        key[len(env_prefix) :].lower(): value
        for key, value in environ.items()
        if env_prefix and key.startswith(env_prefix) and len(key) > len(env_prefix)
    }
    _PROCESS["envs"] = envs
    _PROCESS["globals"] = dict(globals_)


def variables(
    flow: Flow,
    execution: Execution,
    *,
    task: Task | None = None,
    task_run: TaskRun | None = None,
    outputs: dict[str, Any] | None = None,
    envs: Mapping[str, Any] | None = None,
    globals_: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables for rendering a template of ``task`` (or of the flow itself)."""
    runs = execution.task_run_list
    result: dict[str, Any] = {
        "flow": {
            "id": flow.id,
            "namespace": flow.namespace,
            "revision": flow.revision if flow.revision is not None else execution.flow_revision,
        },
        "execution": {
            "id": execution.id,
            "startDate": iso(execution.state.start_date),
            "originalId": execution.original_id or execution.id,
            "state": execution.state.current.value,
        },
        "inputs": execution.inputs,
        "vars": flow.variables,
        "labels": label_variables(execution.labels),
        "trigger": execution.trigger or {},
        "outputs": outputs if outputs is not None else outputs_map(runs),
        "tasks": tasks_map(runs),
        "envs": dict(envs if envs is not None else _PROCESS["envs"]),
        "globals": dict(globals_ if globals_ is not None else _PROCESS["globals"]),
    }
    secret_inputs = [i.id for i in flow.inputs if i.type.upper() == "SECRET"]
    if secret_inputs:
        # not a name a template can spell: tells the worker which values to mask
        result[SECRET_INPUTS] = secret_inputs
    if task is not None:
        result["task"] = {"id": task.id, "type": task.type}
    if task_run is not None:
        by_id = {run.id: run for run in runs}
        result["taskrun"] = {
            "id": task_run.id,
            "value": task_run.value,
            "iteration": task_run.iteration,
            "attemptsCount": task_run.attempt_count,
            "parentId": task_run.parent_task_run_id,
            "startDate": iso(task_run.state.start_date),
        }
        parents = parents_of(task_run, by_id)
        result["parents"] = parents
        if parents:
            result["parent"] = parents[0]
    return result


def is_truthy(rendered: Any) -> bool:
    """Kestra's truth rule for rendered conditions: false, 0, -0 and "" are false."""
    if isinstance(rendered, bool):
        return rendered
    if rendered is None:
        return False
    return str(rendered).strip() not in ("false", "0", "-0", "", "False")
