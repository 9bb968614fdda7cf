"""The benchmark harness runs at tiny sizes, and its report parses and adds up.

No timing is asserted: the machine is shared and the sizes are tiny. What is
asserted is what an operator relies on: every measure produces its figures, the
ratios divide by the floor measured in the same run, the JSON reads back, the
markdown and the plot are written, the capacity summary follows from the steps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from bench import actors, e2e, floor, harness, profiling, throughput
from bench.__main__ import main
from bench.model import Report, Result, Step, decode, encode, percentile
from bench.report import markdown, plot
from runtime.flow.states import State
from services.cli import cli
from services.dry_run import DryRun


@pytest.mark.asyncio
async def test_actor_benchmark_reports_figures_and_ratios() -> None:
    result = await actors.run(messages=2_000, rounds=200, mailbox=64)
    tell, ask = result["tell"], result["ask"]
    assert tell["messages_per_s"] > 0
    assert tell["ratio_to_baseline"] == pytest.approx(
        tell["messages_per_s"] / tell["baseline_queue_messages_per_s"]
    )
    assert ask["median_us"] > 0
    assert ask["ratio_to_baseline"] == pytest.approx(
        ask["median_us"] / ask["baseline_queue_future_median_us"]
    )


def test_percentiles_are_nearest_rank_for_every_measure() -> None:
    hundred = [float(n) for n in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(hundred, 0.99) == 99
    assert percentile(hundred, 0.50) == 50
    assert percentile([float(n) for n in range(1, 11)], 0.90) == 9  # 0.9 * 10 is 9.000...2
    # p99 of 50 samples is the largest (int(50 * 0.99) - 1 gave the second largest)
    assert percentile([float(n) for n in range(1, 51)], 0.99) == 50
    assert percentile([7.0], 0.99) == percentile([7.0], 0.01) == 7
    assert percentile([], 0.5) is None


def _step(rate: float, p99: float | None, sustained: bool) -> Step:
    return Step(
        offered_per_s=rate,
        seconds=1.0,
        sent=int(rate),
        accepted=int(rate),
        completed=int(rate) if p99 is not None else 0,
        failed=0,
        sent_per_s=rate,
        achieved_per_s=rate if sustained else rate / 2,
        p50_ms=None if p99 is None else p99 / 2,
        p95_ms=p99,
        p99_ms=p99,
        sustained=sustained,
        cpu_server=[0.5],
        cpu_generator=0.1,
    )


def _synthetic_report() -> Report:
    thr = Result(
        measure="throughput",
        backend="postgres",
        settings={"p99_bound_ms": 250.0, "step_seconds": 1.0, "processes": ["run --all"]},
        figures={"sustained_per_s": 100.0},
        floor_ms=0.5,
        steps=[_step(50, 40.0, True), _step(100, 90.0, True), _step(200, 900.0, False)],
    )
    skipped = Result(measure="throughput", backend="mysql", skipped="not available: testing")
    report = Report(started="2030-01-01T00:00:00+0000", results=[thr, skipped])
    report.capacity = harness.capacity(report)
    return report


def test_capacity_is_the_highest_sustained_rate_and_names_what_was_skipped() -> None:
    report = _synthetic_report()
    postgres, mysql = report.capacity
    assert (postgres.backend, postgres.sustained_per_s, postgres.p99_ms) == ("postgres", 100, 90)
    assert postgres.per_minute == 6000
    assert mysql.sustained_per_s == 0
    assert "not available" in mysql.note


def test_report_round_trips_through_json_and_renders(tmp_path: Path) -> None:
    report = _synthetic_report()
    again = decode(encode(report))
    assert again == report
    assert json.loads(encode(report))["capacity"][0]["sustained_per_s"] == 100
    page = markdown(report)
    assert "## Throughput on postgres" in page
    assert "| 200 |" in page
    assert "| no |" in page
    assert "## Capacity" in page
    assert "throughput on mysql: not available: testing" in page
    png = tmp_path / "latency.png"
    assert plot(report, png)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_no_plot_without_a_measured_step(tmp_path: Path) -> None:
    report = Report(started="x", results=[Result(measure="floor", backend="sqlite")])
    assert not plot(report, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_ratios_need_a_floor_above_zero() -> None:
    result = Result(measure="sequential", backend="sqlite", figures={"total_ms": 5.0})
    with pytest.raises(ValueError, match="floor"):
        result.add_ratios(0.0, ["total_ms"])
    result.add_ratios(2.0, ["total_ms"])
    assert result.ratios == {"total_ms_floors": 2.5}


def test_phase_split_adds_up_to_the_execution() -> None:
    final = DryRun(harness.engine.sequential_flow(3), execution_id="e1").run()
    # The simulation's dates are all one instant: each state change after the
    # execution's creation is moved 7 ms after the previous one, runs in order.
    created = final.state.histories[0].date
    steps = itertools.count(1)

    def spread(state: State, first: int = 0) -> State:
        moved = [
            msgspec.structs.replace(h, date=created + timedelta(milliseconds=7 * next(steps)))
            for h in state.histories[first:]
        ]
        return msgspec.structs.replace(state, histories=(*state.histories[:first], *moved))

    runs = [msgspec.structs.replace(r, state=spread(r.state)) for r in final.task_run_list]
    final = msgspec.structs.replace(final, task_run_list=runs)
    final = msgspec.structs.replace(final, state=spread(final.state, first=1))
    figures = e2e.phases(final)
    # per run: CREATED, RUNNING, SUCCESS, 7 ms apart; the execution ends 14 ms after
    assert figures["start_ms"] == 7
    assert (figures["assignment_total_ms"], figures["execution_total_ms"]) == (21, 21)
    assert figures["transition_total_ms"] == 14
    assert figures["end_ms"] == 14
    assert final.state.end_date is not None
    whole = (final.state.end_date - created).total_seconds() * 1e3
    parts = ("start_ms", "assignment_total_ms", "execution_total_ms", "transition_total_ms")
    assert sum(figures[p] for p in (*parts, "end_ms")) == pytest.approx(whole)


@pytest.mark.asyncio
async def test_sequential_ratio_divides_by_the_floor_measured_in_the_run() -> None:
    base = await floor.measure("sqlite", rounds=10)
    assert base.floor_ms is not None
    assert base.floor_ms > 0
    assert base.figures["hop_ms"] == base.floor_ms
    result = await e2e.sequential("sqlite", floor_ms=base.floor_ms, tasks=3, repeat=1)
    assert result.floor_ms == base.floor_ms
    assert result.ratios["per_task_ms_floors"] == pytest.approx(
        result.figures["per_task_ms"] / base.floor_ms
    )
    assert result.figures["total_ms"] == pytest.approx(result.figures["per_task_ms"] * 3)
    assert result.figures["assignment_total_ms"] >= 0


@pytest.mark.asyncio
async def test_postgres_floor_is_measured_on_the_server() -> None:
    result = await floor.measure("postgres", rounds=10)
    assert result.figures["hop_ms"] > 0
    assert result.settings["driver"] == "asyncpg"
    assert result.settings["server_version"]


@pytest.mark.asyncio
async def test_mysql_floor_is_measured_on_the_server() -> None:
    # CI runs a MariaDB (.ci/services): one that does not answer fails, as in the
    # MySQL backend's own tests, instead of skipping the measure unseen
    assert await e2e.mysql_unavailable(need_backend=False) is None
    result = await floor.measure("mysql", rounds=10)
    assert result.figures["hop_ms"] > 0
    assert "innodb_flush_log_at_trx_commit" in result.settings


@pytest.mark.asyncio
async def test_an_unavailable_backend_is_reported_not_dropped() -> None:
    report = await harness.run(["sequential"], ["nosuch"], size="tiny", say=lambda _: None)
    [skipped] = report.results
    assert skipped.skipped is not None
    assert "unknown backend" in skipped.skipped
    assert "sequential on nosuch" in markdown(report)


@pytest.mark.slow
def test_harness_writes_json_markdown_on_sqlite(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["floor", "sequential", "fib", "actors", "engine", "--size", "tiny",
                 "--backend", "sqlite", "--out", str(tmp_path)]) == 0  # fmt: skip
    [path] = tmp_path.glob("bench-*.json")
    report = decode(path.read_bytes())
    measures = {r.measure for r in report.results}
    assert measures == {"floor", "sequential", "fib", "actors", "engine"}
    [fib] = report.find("fib", "sqlite")
    assert set(fib.figures) == {
        "function_2x5_ms",
        "script_2x5_ms",
        "function_1x8_ms",
        "script_1x8_ms",
    }
    assert fib.ratios["function_2x5_ms_floors"] == pytest.approx(
        fib.figures["function_2x5_ms"] / report.find("floor", "sqlite")[0].figures["hop_ms"]
    )
    assert report.versions["sqlite"]
    assert report.machine["cpus"] >= 1
    assert (tmp_path / path.name.replace(".json", ".md")).exists()
    assert "## Sequential" in capsys.readouterr().out


@pytest.mark.slow
def test_runtime_bench_command_runs_the_harness(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        cli, ["bench", "floor", "--size", "tiny", "--backend", "postgres", "--out", str(tmp_path)]
    )
    assert outcome.exit_code == 0, outcome.output
    [path] = tmp_path.glob("bench-*.json")
    [result] = decode(path.read_bytes()).results
    assert (result.measure, result.backend) == ("floor", "postgres")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sequential_on_postgres_with_a_worker_process() -> None:
    base = await floor.measure("postgres", rounds=10)
    assert base.floor_ms is not None
    result = await e2e.sequential("postgres", floor_ms=base.floor_ms, tasks=3, repeat=1)
    assert result.settings["worker"] == "subprocess"
    assert result.ratios["per_task_ms_floors"] == pytest.approx(
        result.figures["per_task_ms"] / base.floor_ms
    )


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_throughput_through_the_webhook(backend: str) -> None:
    assert throughput.webserver_missing() is None  # the webserver is part of the project
    result = await throughput.throughput(backend, floor_ms=1.0, rates=(5,), step_seconds=1.0)
    [step] = result.steps
    assert (step.sent, step.accepted) == (5, 5), result
    assert step.completed == 5
    assert step.failed == 0
    assert step.p99_ms is not None
    assert step.p99_ms > 0
    assert result.ratios["p99_at_5_floors"] == pytest.approx(step.p99_ms / 1.0)


def test_server_processes_per_backend(tmp_path: Path) -> None:
    config, flows = tmp_path / "server.yml", tmp_path / "flows"
    [alone] = throughput.server_commands("sqlite", config, flows)
    assert alone[alone.index("run") :][:2] == ["run", "--all"]
    split = throughput.server_commands("postgres", config, flows)
    assert [c[c.index("run") + 1] for c in split] == ["executor", "worker", "webserver"]
    profiled = throughput.server_commands("postgres", config, flows, tmp_path)
    assert all("cProfile" in c for c in profiled)
    assert str(tmp_path / "profile-throughput-postgres-worker.prof") in profiled[1]


def test_profiled_block_leaves_a_profile_and_its_top_entries(tmp_path: Path) -> None:
    with profiling.profiled(tmp_path, "demo"):
        sum(i * i for i in range(10_000))
    assert (tmp_path / "profile-demo.prof").exists()
    text = (tmp_path / "profile-demo.txt").read_text()
    assert "by cumulative" in text
    assert "by tottime" in text
    with profiling.profiled(None, "nothing"):
        pass
    assert not (tmp_path / "profile-nothing.txt").exists()


@pytest.mark.asyncio
async def test_the_load_generator_reads_each_kind_of_answer() -> None:
    """bench.loadgen against a real socket: a sized body, a chunked one, an error, a
    closed connection; the connection is reused while the server keeps it."""
    from bench.loadgen import Outcome, Poster

    answers = [
        b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"id":"one"}',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'6\r\n{"id":\r\n6\r\n"two"}\r\n0\r\n\r\n',
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        b'HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{"id":"three"}',
    ]
    connections = 0
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            requests.append(head + await reader.readexactly(2))
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if b"close" in answer:
                break
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Poster(f"http://127.0.0.1:{port}/hook/ns/flow/key") as poster:
        got = [await poster.post() for _ in range(4)]
    assert got == [
        Outcome(id="one"),
        Outcome(id="two"),
        Outcome(cause="http 404"),
        Outcome(id="three"),
    ]
    assert connections == 1  # kept alive until the server said close
    assert requests[0].startswith(b"POST /hook/ns/flow/key HTTP/1.1\r\n")
    assert requests[0].endswith(b"\r\n\r\n{}")


@pytest.mark.asyncio
async def test_the_load_generator_resends_on_a_kept_alive_connection_the_server_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that closes an idle kept-alive connection (as uvicorn does after 5 s)
    makes the next request written on it get no answer: the generator sends it again on
    a new connection and counts it as retried, not failed; a connection idle longer than
    the expiry is not reused at all; answers cut short and refusals count by cause."""
    from bench import loadgen
    from bench.loadgen import Outcome, Poster

    served: list[int] = []

    def answer(writer: asyncio.StreamWriter) -> None:
        served.append(1)
        body = b'{"id":"e%d"}' % len(served)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        if b"/cut" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{")
        elif b"/busy" in head:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        elif b"/race" in head:
            # answers, then closes the kept-alive connection as the next request arrives
            answer(writer)
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
        else:
            answer(writer)
        await writer.drain()
        writer.close()  # no "Connection: close": the client believes it kept alive

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with Poster(f"http://127.0.0.1:{port}/hook") as poster:
            first = await poster.post()
            await asyncio.sleep(0.05)  # the server's close has arrived
            second = await poster.post()
        assert first == Outcome(id="e1")
        assert second == Outcome(id="e2")  # its kept-alive connection was seen closed
        async with Poster(f"http://127.0.0.1:{port}/race") as poster:
            await poster.post()
            # written on the kept-alive connection, which closes with no answer: sent
            # again on a new one
            again = await poster.post()
        assert again == Outcome(id="e4", retried=True)
        monkeypatch.setattr(loadgen, "IDLE_EXPIRY_S", 0.0)
        async with Poster(f"http://127.0.0.1:{port}/race") as poster:
            await poster.post()
            assert await poster.post() == Outcome(id="e6")  # not reused: no retry needed
            assert poster.expired == 1
        async with Poster(f"http://127.0.0.1:{port}/cut") as poster:
            assert await poster.post() == Outcome(cause="connection reset")
        async with Poster(f"http://127.0.0.1:{port}/busy") as poster:
            assert await poster.post() == Outcome(cause="http 503")
    async with Poster(f"http://127.0.0.1:{port}/hook") as poster:  # nobody listens now
        assert await poster.post() == Outcome(cause="connect failed")
