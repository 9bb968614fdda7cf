"""The report as a markdown page and as a plot of latency against offered rate."""

from __future__ import annotations

from pathlib import Path

from bench.model import NO_BACKEND, Report, Result
from bench.targets import ACTORS, ENGINE, FIB, FLOOR, SEQUENTIAL, THROUGHPUT


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _ran(report: Report, measure: str) -> list[Result]:
    return [r for r in report.find(measure) if r.skipped is None]


def markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"# runtime benchmark, {report.started}"
        + (f" ({report.settings.get('size')} sizes)" if report.quick else ""),
        "",
        f"{m.get('cpus')} CPUs, {m.get('platform')}, Python {m.get('python')}; "
        + ", ".join(f"{k} {v}" for k, v in report.versions.items() if k != "python")
        + ".",
        "",
    ]
    lines += _floor(report) + _sequential(report) + _fib(report) + _throughput(report)
    lines += _capacity(report) + _micro(report) + _targets(report)
    skipped = [r for r in report.results if r.skipped]
    if skipped:
        lines += ["## Not measured", ""]
        lines += [f"- {r.measure} on {r.backend}: {r.skipped}" for r in skipped]
        lines.append("")
    return "\n".join(lines)


def _floor(report: Report) -> list[str]:
    results = _ran(report, FLOOR)
    if not results:
        return []
    rows = [
        [
            r.backend,
            _f(r.figures["hop_ms"], 3),
            _f(r.figures["hop_p90_ms"], 3),
            _f(r.figures["hops_per_s"], 0),
            f"{r.settings.get('driver')}, "
            f"{r.settings.get('server_version') or r.settings.get('library_version')}",
        ]
        for r in results
    ]
    return [
        "## Floor: one durable queue hop on a bare driver (claim, delete, insert, commit)",
        "",
        *_table(["backend", "median ms", "p90 ms", "hops/s", "driver, server"], rows),
    ]


def _sequential(report: Report) -> list[str]:
    results = _ran(report, SEQUENTIAL)
    if not results:
        return []
    rows = []
    for r in results:
        f, x = r.figures, r.ratios
        rows.append(
            [
                r.backend,
                str(r.settings["tasks"]),
                f"{_f(f['total_ms'], 0)} (best {_f(f['total_best_ms'], 0)})",
                f"{_f(f['per_task_ms'], 2)} ({_f(x['per_task_ms_floors'])}x)",
                f"{_f(f['assignment_median_ms'], 2)} ({_f(x['assignment_median_ms_floors'])}x)",
                _f(f["execution_median_ms"], 2),
                f"{_f(f['transition_median_ms'], 2)} ({_f(x['transition_median_ms_floors'])}x)",
                str(r.settings["worker"]),
            ]
        )
    return [
        "## Sequential: N no-op tasks, one execution, end to end",
        "",
        "Medians in ms; (nx) = multiples of the backend's floor. Assignment: dispatched "
        "→ running on a worker; execution: running → ended; transition: a task's end → "
        "the next one dispatched.",
        "",
        *_table(
            [
                "backend",
                "tasks",
                "total ms",
                "per task",
                "assignment",
                "execution",
                "transition",
                "worker",
            ],
            rows,
        ),
    ]


def _fib(report: Report) -> list[str]:
    results = _ran(report, FIB)
    if not results:
        return []
    keys = list(results[0].figures)
    header = ["backend", *(k.removesuffix("_ms").replace("_", " ") + " ms" for k in keys)]
    rows = [[r.backend, *(_f(r.figures.get(k), 0) for k in keys)] for r in results]
    first = results[0].settings
    return [
        f"## Fib: Windmill's flows, {first['light']} and {first['heavy']}, one after the other",
        "",
        "function: PythonFunction in the worker's process pool; script: a Python Script "
        "task (a new interpreter per task).",
        "",
        *_table(header, rows),
    ]


def _throughput(report: Report) -> list[str]:
    results = _ran(report, THROUGHPUT)
    lines: list[str] = []
    for r in results:
        lines += [
            f"## Throughput on {r.backend}: 2-task flow started through the webhook",
            "",
            f"{r.settings['step_seconds']:g} s per step; processes: "
            f"{'; '.join(r.settings['processes'])}. Latency: request sent → execution "
            "ended. Unanswered: requests that got no execution, by cause; retried: sent "
            "again after the server had closed the kept-alive connection they were written "
            "on (as a real client does). CPU: cores busy per process over the step and its "
            "drain; database: its processes serving the server's connections.",
            "",
        ]
        rows = [
            [
                f"{s.offered_per_s:g}",
                _f(s.sent_per_s, 0),
                _f(s.achieved_per_s, 0),
                f"{s.completed}/{s.sent}",
                str(s.failed),
                _causes(s.failures),
                str(s.retried),
                _f(s.p50_ms, 0),
                _f(s.p95_ms, 0),
                _f(s.p99_ms, 0),
                _f(s.p99_ms / r.floor_ms if s.p99_ms is not None and r.floor_ms else None, 0),
                " + ".join(f"{c:.2f}" for c in s.cpu_server) + f" / {s.cpu_generator:.2f}",
                _f(s.cpu_database, 2),
                "yes" if s.sustained else "no",
            ]
            for s in r.steps
        ]
        lines += _table(
            [
                "offered/s",
                "sent/s",
                "achieved/s",
                "ended",
                "failed",
                "unanswered",
                "retried",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "p99 xfloor",
                "CPU server / generator",
                "CPU database",
                "sustained",
            ],
            rows,
        )
    return lines


def _causes(failures: dict[str, int]) -> str:
    return ", ".join(f"{count} {cause}" for cause, count in failures.items()) or "0"


def _capacity(report: Report) -> list[str]:
    if not report.capacity:
        return []
    rows = [
        [
            c.backend,
            _f(c.sustained_per_s, 0),
            _f(c.per_minute, 0),
            _f(c.p99_ms, 0),
            _f(c.p99_bound_ms, 0),
            c.note,
        ]
        for c in report.capacity
    ]
    return [
        "## Capacity: what this deployment sustains within the latency bound",
        "",
        *_table(
            ["backend", "executions/s", "executions/min", "p99 ms", "p99 bound ms", "note"],
            rows,
        ),
    ]


def _micro(report: Report) -> list[str]:
    lines: list[str] = []
    for measure, title in ((ACTORS, "Actors (kernel)"), (ENGINE, "Engine (no I/O)")):
        for r in _ran(report, measure):
            rows = [[k, _f(v, 2)] for k, v in r.figures.items()]
            rows += [[k, f"{v:.2f}x"] for k, v in r.ratios.items()]
            lines += [f"## {title}", "", *r.notes, "", *_table(["figure", "value"], rows)]
    return lines


def _targets(report: Report) -> list[str]:
    rows = [
        [
            t.name,
            r.backend if r.backend != NO_BACKEND else "",
            f"{_f(t.value, 1)} {t.unit}",
            f"{'≤' if t.direction == 'at_most' else '≥'} {t.bound:g} {t.unit}",
            "met" if t.met else "missed",
        ]
        for r in report.results
        for t in r.targets
    ]
    if not rows:
        return []
    return [
        "## Targets (DESIGN §8)",
        "",
        *_table(["target", "backend", "measured", "bound", ""], rows),
    ]


def plot(report: Report, path: Path) -> bool:
    """Latency (p50 dashed, p99 solid) against offered rate, one colour per backend.

    False (and nothing written) when no throughput step was measured.
    """
    results = [r for r in _ran(report, THROUGHPUT) if r.steps]
    if not results:
        return False
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    bound = None
    for r in results:
        rates = [s.offered_per_s for s in r.steps if s.p99_ms is not None]
        p99 = [s.p99_ms for s in r.steps if s.p99_ms is not None]
        p50 = [s.p50_ms for s in r.steps if s.p50_ms is not None]
        (line,) = axes.plot(rates, p99, marker="o", label=f"{r.backend} p99")
        axes.plot(
            rates, p50, marker=".", linestyle="--", color=line.get_color(), label=f"{r.backend} p50"
        )
        bound = r.settings.get("p99_bound_ms", bound)
    if bound is not None:
        axes.axhline(float(bound), color="grey", linewidth=0.8, linestyle=":", label="p99 bound")
    axes.set_xlabel("offered executions/s (webhook)")
    axes.set_ylabel("latency, request sent → execution ended (ms)")
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.set_title(f"2-task flow, {report.machine.get('cpus')} CPUs, {report.started}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
