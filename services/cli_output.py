"""What the CLI prints: live task progress on a terminal, summaries, log lines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from runtime.flow.execution import Execution, TaskRun
from runtime.flow.states import State
from runtime.messages import LogEntry

_STYLE = {
    "SUCCESS": "green",
    "WARNING": "yellow",
    "FAILED": "red",
    "KILLED": "red",
    "RUNNING": "cyan",
    "CREATED": "dim",
    "PAUSED": "magenta",
    "RETRYING": "yellow",
    "SKIPPED": "dim",
}


class Progress:
    """A live table of task runs on a terminal; one line per change elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream)
        self.live: Live | None = None
        self._last: dict[str, str] = {}
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=8, transient=False)
            self.live.start()

    def update(self, execution: Execution) -> None:
        if self.live is not None:
            self.live.update(_table(execution))
            return
        # On a pipe: one plain line per change, with the duration once a run has ended.
        for run in execution.task_run_list:
            state = run.state.current.value
            key = run.id
            if self._last.get(key) != state:
                self._last[key] = state
                took = f" {duration(run.state)}" if run.state.terminated else ""
                self.console.print(f"{_label(run)} {state}{took}", highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _table(execution: Execution) -> Table:
    table = Table(
        title=f"{execution.namespace}.{execution.flow_id} {execution.id}", title_justify="left"
    )
    table.add_column("task")
    table.add_column("value")
    table.add_column("state")
    table.add_column("attempts", justify="right")
    table.add_column("duration", justify="right")
    for run in execution.task_run_list:
        state = run.state.current.value
        table.add_row(
            run.task_id,
            run.value or "",
            f"[{_STYLE.get(state, '')}]{state}",
            str(len(run.attempts)),
            duration(run.state),
        )
    state = execution.state.current.value
    table.caption = f"execution [{_STYLE.get(state, '')}]{state}"
    return table


def print_summary(execution: Execution, logs: list[LogEntry]) -> None:
    console = Console()
    for entry in logs:
        console.print(format_log(entry), highlight=False, markup=False)
    state = execution.state.current.value
    start, end = execution.state.start_date, execution.state.histories[-1].date
    seconds = (end - start).total_seconds() if start else 0.0
    console.print(
        f"[bold]{execution.namespace}.{execution.flow_id}[/] {execution.id}: "
        f"[{_STYLE.get(state, '')}]{state}[/] in {seconds:.2f}s, "
        f"{len(execution.task_run_list)} task run(s)"
    )
    if execution.outputs:
        console.print(f"outputs: {execution.outputs}", markup=False)


def format_log(entry: LogEntry) -> str:
    where = f" [{entry.task_id}]" if entry.task_id else ""
    when = entry.timestamp.isoformat(timespec="milliseconds")
    return f"{when} {entry.level:<5}{where} {entry.message}"


def duration(state: State, now: datetime | None = None) -> str:
    """How long a state has run: until its end, or until now while it runs."""
    start = state.start_date
    if start is None:
        return ""
    end = state.end_date or now or datetime.now(UTC)
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _label(run: TaskRun) -> str:
    return run.task_id if run.value is None else f"{run.task_id}[{run.value}]"


def print_executions(executions: Sequence[Execution], total: int, stream: TextIO) -> None:
    """The executions as a table (a terminal) or one tab-separated line each (a pipe)."""
    console = Console(file=stream)
    rows = [
        (
            e.id,
            f"{e.namespace}.{e.flow_id}",
            e.state.current.value,
            e.state.start_date.isoformat(timespec="seconds") if e.state.start_date else "",
            duration(e.state),
        )
        for e in executions
    ]
    _print_rows(console, ("id", "flow", "state", "started", "duration"), rows, state_column=2)
    if console.is_terminal:
        console.print(f"{len(rows)} of {total} execution(s)", style="dim")


def print_execution(execution: Execution, stream: TextIO) -> None:
    """One execution: its header, then its task runs with state and duration."""
    console = Console(file=stream)
    state = execution.state.current.value
    console.print(
        f"{execution.id} {execution.namespace}.{execution.flow_id} "
        f"revision {execution.flow_revision} {state} {duration(execution.state)}",
        highlight=False,
        markup=False,
    )
    rows = [
        (_label(run), run.state.current.value, str(len(run.attempts)), duration(run.state))
        for run in execution.task_run_list
    ]
    _print_rows(console, ("task", "state", "attempts", "duration"), rows, state_column=1)
    if execution.outputs:
        console.print(f"outputs: {execution.outputs}", markup=False, highlight=False)


def print_triggers(triggers: Sequence[dict[str, Any]], stream: TextIO) -> None:
    """Triggers in the API's shape (``abstractTrigger``, ``triggerContext``)."""
    console = Console(file=stream)
    rows = []
    for item in triggers:
        context, declared = item["triggerContext"], item["abstractTrigger"]
        rows.append(
            (
                f"{context['namespace']}.{context['flowId']}",
                str(context["triggerId"]),
                str(declared.get("type", "")).rsplit(".", 1)[-1],
                "disabled" if context.get("disabled") else "enabled",
                str(context.get("nextExecutionDate") or ""),
            )
        )
    _print_rows(console, ("flow", "trigger", "type", "status", "next"), rows, state_column=None)


def _print_rows(
    console: Console,
    header: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    state_column: int | None,
) -> None:
    if not console.is_terminal:
        # Written as is: rich would expand the tabs that `cut` and `awk` split on.
        console.file.write("".join("\t".join(row) + "\n" for row in rows))
        return
    table = Table(*header)
    for row in rows:
        cells = list(row)
        if state_column is not None:
            state = cells[state_column]
            cells[state_column] = f"[{_STYLE.get(state, '')}]{state}"
        table.add_row(*cells)
    console.print(table)
