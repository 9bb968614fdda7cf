"""What the CLI prints: live task progress on a terminal, summaries, log lines."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from runtime.flow.execution import Execution
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
        for run in execution.task_run_list:
            state = run.state.current.value
            key = run.id
            if self._last.get(key) != state:
                self._last[key] = state
                label = run.task_id if run.value is None else f"{run.task_id}[{run.value}]"
                self.console.print(f"{label} {state}", highlight=False)

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
    for run in execution.task_run_list:
        state = run.state.current.value
        table.add_row(
            run.task_id,
            run.value or "",
            f"[{_STYLE.get(state, '')}]{state}",
            str(len(run.attempts)),
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
