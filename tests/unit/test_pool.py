"""ProcessPool: calls run in worker processes, cancelling or timing out a call kills its
worker, crashes fail only their own call, and ``size`` bounds the processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pathlib
import pickle
import signal

import pytest

from runtime.actors.pool import (
    PoolClosedError,
    ProcessPool,
    ProcessPoolStatistics,
    RemoteError,
    WorkerCrashedError,
)
from tests.unit import pool_jobs
from tests.unit.helpers import eventually

# Generous: a spawned worker imports the interpreter's main module and the kernel.
STARTUP = 15.0


def alive(pid: int) -> bool:
    """Whether ``pid`` exists; a zombie counts, so False also means it was reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def pid_from(path: pathlib.Path) -> int:
    """The pid a ``write_pid_and_sleep`` job announced through ``path``."""
    await eventually(path.exists, STARTUP)
    return int(await asyncio.to_thread(path.read_text))


@pytest.mark.slow
@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_size_must_be_a_positive_integer(size: object) -> None:
    with pytest.raises(ValueError, match="size must be a positive integer"):
        ProcessPool(size)  # type: ignore[arg-type]


@pytest.mark.slow
def test_start_method_must_exist() -> None:
    with pytest.raises(ValueError, match="unknown start_method 'teleport'"):
        ProcessPool(1, start_method="teleport")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_run_needs_a_started_pool_and_a_picklable_callable() -> None:
    pool = ProcessPool(1, name="unstarted")
    with pytest.raises(RuntimeError, match="is not started"):
        await pool.run(pool_jobs.pid)
    async with pool:
        with pytest.raises((pickle.PicklingError, AttributeError)) as info:
            await pool.run(lambda: 1)
        assert any("must pickle" in note for note in info.value.__notes__)
        assert pool.statistics().submitted == 0
        assert pool.statistics().workers_alive == 0


@pytest.mark.slow
@pytest.mark.asyncio
async def test_calls_run_in_a_worker_process_which_stop_reaps() -> None:
    async with ProcessPool(2, name="basic") as pool:
        worker = await pool.run(pool_jobs.pid)
        assert worker != os.getpid()
        assert await pool.run(pool_jobs.add, 2, 3, scale=10) == 50
        assert pool.statistics() == ProcessPoolStatistics(
            size=2,
            workers_alive=1,  # the second call reused the idle worker
            busy=0,
            idle=1,
            waiting=0,
            submitted=2,
            completed=2,
            failed=0,
            timed_out=0,
            cancelled=0,
            crashed=0,
            replaced=0,
        )
        assert alive(worker)
    assert not alive(worker)
    assert pool.statistics().workers_alive == 0


@pytest.mark.slow
@pytest.mark.asyncio
async def test_exception_comes_back_as_itself_with_the_remote_traceback() -> None:
    async with ProcessPool(1, name="failing") as pool:
        worker = await pool.run(pool_jobs.pid)
        with pytest.raises(ValueError, match="bad input 42") as info:
            await pool.run(pool_jobs.fail, "bad input 42")
        assert str(info.value) == "bad input 42"  # the notes come on top, not inside
        notes = "\n".join(info.value.__notes__)
        assert f"Remote traceback (worker process {worker}" in notes
        assert 'pool_jobs.py", line' in notes
        assert "in fail" in notes
        # An exception does not cost the worker.
        assert await pool.run(pool_jobs.pid) == worker
        stats = pool.statistics()
        assert (stats.failed, stats.completed, stats.crashed) == (1, 2, 0)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_exception_that_does_not_unpickle_arrives_as_remote_error() -> None:
    async with ProcessPool(1, name="stubborn") as pool:
        with pytest.raises(RemoteError, match="StubbornError: code 7: does not round-trip") as info:
            await pool.run(pool_jobs.fail_stubbornly)
        assert info.value.type_name == "tests.unit.pool_jobs.StubbornError"
        assert "raise StubbornError(7" in info.value.remote_traceback
        assert pool.statistics().failed == 1


@pytest.mark.slow
@pytest.mark.asyncio
async def test_cancelling_the_caller_kills_only_its_worker(tmp_path: pathlib.Path) -> None:
    async with ProcessPool(2, name="cancel") as pool:
        doomed = asyncio.create_task(
            pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "doomed"), 60),
            name="test.doomed-call",
        )
        bystander = asyncio.create_task(
            pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "bystander"), 60),
            name="test.bystander-call",
        )
        doomed_pid = await pid_from(tmp_path / "doomed")
        bystander_pid = await pid_from(tmp_path / "bystander")
        assert alive(doomed_pid)

        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert not alive(doomed_pid)  # killed and reaped before the caller saw CancelledError
        assert alive(bystander_pid)
        stats = pool.statistics()
        assert (stats.cancelled, stats.busy, stats.workers_alive) == (1, 1, 1)

        # The capacity is back: a new worker takes the killed one's place.
        replacement = await pool.run(pool_jobs.pid)
        assert replacement not in {doomed_pid, bystander_pid}
        assert pool.statistics().replaced == 1

        bystander.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bystander
        assert not alive(bystander_pid)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_timeout_kills_the_worker_and_raises_timeout_error(tmp_path: pathlib.Path) -> None:
    async with ProcessPool(1, name="timeout") as pool:
        await pool.run(pool_jobs.pid)  # start the worker outside the timed call
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.5 s"):
            await pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "slow"), 60, timeout=0.5)
        assert not alive(await pid_from(tmp_path / "slow"))
        stats = pool.statistics()
        assert (stats.timed_out, stats.cancelled, stats.workers_alive) == (1, 0, 0)
        assert await pool.run(pool_jobs.add, 1, 1, timeout=STARTUP) == 2


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_crashed_worker_fails_its_call_and_is_replaced() -> None:
    async with ProcessPool(1, name="crash") as pool:
        with pytest.raises(WorkerCrashedError, match="exit code 3") as info:
            await pool.run(pool_jobs.exit_with, 3)
        assert info.value.exitcode == 3
        assert await pool.run(pool_jobs.add, 1, 1) == 2
        stats = pool.statistics()
        assert stats.crashed == 1
        assert stats.replaced >= 1
        assert (stats.completed, stats.workers_alive) == (1, 1)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_worker_killed_from_outside_reports_the_signal(tmp_path: pathlib.Path) -> None:
    async with ProcessPool(1, name="oom") as pool:
        call = asyncio.create_task(
            pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "victim"), 60),
            name="test.victim-call",
        )
        victim = await pid_from(tmp_path / "victim")
        os.kill(victim, signal.SIGKILL)  # what the OOM killer does
        with pytest.raises(WorkerCrashedError, match=r"exit code -9 \(killed by SIGKILL\)"):
            await call
        assert not alive(victim)
        assert pool.statistics().crashed == 1
        assert await pool.run(pool_jobs.pid) != victim


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_pool_never_runs_more_than_size_workers() -> None:
    size = 2
    samples: list[ProcessPoolStatistics] = []
    async with ProcessPool(size, name="bounded") as pool:
        calls = [
            asyncio.create_task(pool.run(pool_jobs.hold, 0.3), name=f"test.hold-{i}")
            for i in range(3 * size)
        ]
        while not all(call.done() for call in calls):
            samples.append(pool.statistics())
            await asyncio.sleep(0.005)
        results = [call.result() for call in calls]

    assert len({pid for pid, _, _ in results}) <= size
    # Calls that overlapped in time, from the workers' own clocks.
    edges = sorted([(start, 1) for _, start, _ in results] + [(end, -1) for _, _, end in results])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == size
    assert max(s.busy for s in samples) == size
    assert max(s.workers_alive for s in samples) <= size
    assert max(s.waiting for s in samples) == 2 * size
    assert pool.statistics().completed == 3 * size


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_killed_worker_is_reaped_before_its_replacement_starts(
    tmp_path: pathlib.Path,
) -> None:
    async with ProcessPool(1, name="handover") as pool:
        doomed = asyncio.create_task(
            pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "doomed"), 60),
            name="test.doomed-call",
        )
        doomed_pid = await pid_from(tmp_path / "doomed")
        successor = asyncio.create_task(pool.run(pool_jobs.pid), name="test.successor-call")
        await eventually(lambda: pool.statistics().waiting == 1)

        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:  # every loop iteration: the window between kill and reap is short
                peak = max(peak, pool.statistics().workers_alive)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch(), name="test.watch-workers")
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        successor_pid = await successor
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
    assert successor_pid != doomed_pid
    assert peak == 1


@pytest.mark.slow
@pytest.mark.asyncio
async def test_waiting_callers_are_served_first_come_first_served() -> None:
    async with ProcessPool(1, name="fifo") as pool:
        calls = [
            asyncio.create_task(pool.run(pool_jobs.hold, 0.02), name=f"test.fifo-{i}")
            for i in range(5)
        ]
        results = await asyncio.gather(*calls)
    starts = [start for _, start, _ in results]
    assert starts == sorted(starts)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_giving_up_while_waiting_kills_no_worker(tmp_path: pathlib.Path) -> None:
    async with ProcessPool(1, name="patience") as pool:
        blocker = asyncio.create_task(
            pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "blocker"), 60),
            name="test.blocker-call",
        )
        busy_pid = await pid_from(tmp_path / "blocker")

        waiter = asyncio.create_task(pool.run(pool_jobs.pid), name="test.waiter-call")
        await eventually(lambda: pool.statistics().waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(TimeoutError):
            await pool.run(pool_jobs.pid, timeout=0.2)

        assert alive(busy_pid)
        stats = pool.statistics()
        assert (stats.waiting, stats.busy, stats.cancelled, stats.timed_out) == (0, 1, 1, 1)
        blocker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocker


@pytest.mark.slow
@pytest.mark.asyncio
async def test_stop_kills_the_workers_and_fails_every_pending_call(
    tmp_path: pathlib.Path,
) -> None:
    pool = ProcessPool(1, name="stopping")
    await pool.start()
    running = asyncio.create_task(
        pool.run(pool_jobs.write_pid_and_sleep, str(tmp_path / "running"), 60),
        name="test.running-call",
    )
    worker = await pid_from(tmp_path / "running")
    waiting = [
        asyncio.create_task(pool.run(pool_jobs.pid), name=f"test.waiting-call-{i}")
        for i in range(2)
    ]
    await eventually(lambda: pool.statistics().waiting == 2)

    await pool.stop()

    assert not alive(worker)
    assert multiprocessing.active_children() == []
    for call in [running, *waiting]:
        with pytest.raises(PoolClosedError, match="'stopping' was stopped"):
            await call
    stats = pool.statistics()
    assert (stats.workers_alive, stats.busy, stats.idle, stats.waiting) == (0, 0, 0, 0)
    assert stats.crashed == 0
    with pytest.raises(PoolClosedError):
        await pool.run(pool_jobs.pid)
    await pool.stop()  # idempotent
