"""Every template evaluation has a CPU-time and a memory budget (issue 13)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from runtime.flow import budget, budgeted, template

ENDLESS_JQ = "{{ '{}' | jq('def f: f; f') }}"
GREEDY_JQ = """{{ '{}' | jq('"x" * 1000000000') }}"""
CATASTROPHIC = "{{ inputs.s | replace({'^(a|aa)+$': 'x'}, regexp=true) }}"
VARIABLES = {"inputs": {"s": "a" * 40 + "!"}}


def timed_failure(source: str) -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(template.TemplateError) as caught:
        template.render(source, VARIABLES)
    return str(caught.value), time.perf_counter() - started


@pytest.mark.slow
def test_an_endless_jq_program_stops_at_the_cpu_budget(small_budget: budget.Limits) -> None:
    message, took = timed_failure(ENDLESS_JQ)
    assert "CPU-time budget of 0.3 s" in message
    assert "template.cpu_seconds" in message
    # the budget, plus a child's start (its first use) and a loaded machine
    assert took < small_budget.cpu_seconds + 2.0


@pytest.mark.slow
def test_a_greedy_jq_program_stops_at_the_memory_budget(small_budget: budget.Limits) -> None:
    message, took = timed_failure(GREEDY_JQ)
    assert "memory budget of 32 MiB" in message
    assert took < 5.0


@pytest.mark.slow
def test_a_huge_jq_range_stops_at_one_budget_or_the_other(small_budget: budget.Limits) -> None:
    message, took = timed_failure("{{ '{}' | jq('[range(100000000)]') }}")
    assert message.startswith("Over budget:")
    assert took < small_budget.cpu_seconds + 2.0


@pytest.mark.slow
def test_jq_still_answers_after_its_child_was_killed(small_budget: budget.Limits) -> None:
    timed_failure(ENDLESS_JQ)
    assert template.render("{{ '{\"a\": [1, 2]}' | jq('.a[1]') }}", {}) == "[2]"


def test_a_catastrophic_regex_stops_at_the_cpu_budget(small_budget: budget.Limits) -> None:
    message, took = timed_failure(CATASTROPHIC)
    assert "CPU-time budget" in message
    # the regex library reads its clock now and then, and this machine is shared
    assert took < small_budget.cpu_seconds + 2.5


def test_intermediate_values_count_against_memory(small_budget: budget.Limits) -> None:
    # each range is under its own cap; together they are not under the budget
    source = "{% set a = range(1, 500000) %}{% set b = range(1, 500000) %}{{ a | length }}"
    message, _ = timed_failure(source)
    assert "memory budget of 32 MiB" in message


def test_a_runaway_product_is_refused_before_it_is_computed(
    small_budget: budget.Limits,
) -> None:
    source = "{% set x = 99999999999 %}" + "{% set x = x * x %}" * 40 + "{{ x }}"
    message, took = timed_failure(source)
    assert "integers here stop at 65536 bits" in message
    assert took < 0.3


def test_a_property_is_one_evaluation(small_budget: budget.Limits) -> None:
    big = "{{ range(1, 300000) | join(',') }}"
    template.render(big, {})  # alone, under the budget
    with pytest.raises(template.TemplateError, match="memory budget"):
        template.render_value([big] * 20, {})


def test_validation_does_not_evaluate_constant_expressions() -> None:
    started = time.perf_counter()
    assert template.syntax_errors(ENDLESS_JQ) == []
    assert (
        template.syntax_errors(
            "{{ 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!' | "
            "replace({'^(a|aa)+$': 'x'}, regexp=true) }}"
        )
        == []
    )
    assert time.perf_counter() - started < 0.5


async def _loop_stalls(work: asyncio.Future[object]) -> tuple[float, float]:
    """While ``work`` ran: the most CPU time the loop's thread spent between two beats
    of a 5 ms ticker (what held the loop; a shared machine pausing the thread does
    not count), and the longest wall-clock gap (a blocking wait shows only there)."""
    cpu = wall = 0.0
    while not work.done():
        cpu_before, wall_before = time.thread_time(), time.perf_counter()
        await asyncio.sleep(0.005)
        cpu = max(cpu, time.thread_time() - cpu_before)
        wall = max(wall, time.perf_counter() - wall_before - 0.005)
    return cpu, wall


@pytest.mark.asyncio
async def test_a_heavy_evaluation_leaves_the_loop(small_budget: budget.Limits) -> None:
    threads: list[int] = []

    def render() -> str:
        threads.append(threading.get_ident())
        return template.render(CATASTROPHIC, VARIABLES)

    work = asyncio.ensure_future(budget.evaluate(render))
    cpu, wall = await _loop_stalls(work)
    with pytest.raises(template.TemplateError, match="CPU-time budget"):
        await work
    assert cpu < 0.1
    assert wall < small_budget.cpu_seconds  # the regex did not wait on the loop
    assert threads[0] == threading.get_ident()  # tried in place first,
    assert threads[-1] != threading.get_ident()  # then run again in a thread


@pytest.mark.asyncio
async def test_a_cheap_evaluation_stays_on_the_loop() -> None:
    # a long slice: a shared machine's pause must not make this about timing
    before = budget.limits()
    budget.configure(budget.Limits(loop_slice_seconds=0.5))
    try:
        await _cheap_stays()
    finally:
        budget.configure(before)


async def _cheap_stays() -> None:
    threads: list[int] = []

    def render() -> str:
        threads.append(threading.get_ident())
        return template.render("hello {{ inputs.s | upper | length }}", VARIABLES)

    assert await budget.evaluate(render) == "hello 41"
    assert threads == [threading.get_ident()]


@pytest.mark.asyncio
@pytest.mark.slow
async def test_jq_on_a_loop_runs_off_it(small_budget: budget.Limits) -> None:
    work = asyncio.ensure_future(budget.evaluate(template.render, ENDLESS_JQ, {}))
    cpu, wall = await _loop_stalls(work)
    with pytest.raises(template.TemplateError, match="CPU-time budget"):
        await work
    assert cpu < 0.1
    assert wall < small_budget.cpu_seconds  # nobody waited for the child on the loop


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"template\.cpu_seconds"):
        budget.configure(budget.Limits(cpu_seconds=0))


@pytest.mark.asyncio
@pytest.mark.slow
async def test_a_pass_of_many_heavy_evaluations_is_bounded_too(
    small_budget: budget.Limits,
) -> None:
    """An engine pass renders many properties: together they get PASS_FACTOR budgets,
    then the rest fail at once (a hundred heavy runIf would hold a thread 100 s)."""

    def many() -> list[str]:
        errors = []
        for _ in range(20):
            try:
                template.render(CATASTROPHIC, VARIABLES)
            except template.TemplateError as exc:
                errors.append(str(exc))
        return errors

    started = time.perf_counter()
    errors = await budget.evaluate(many)
    took = time.perf_counter() - started
    assert len(errors) == 20
    assert "CPU-time budget" in errors[0]
    assert "expressions of this pass went over 1.5 s of CPU time together" in errors[-1]
    # at most the pass's worth ran to its own budget; the rest failed at once
    assert sum("CPU-time budget" in error for error in errors) <= budget.PASS_FACTOR + 1
    # CPU time, not wall time, is budgeted: room for a shared machine
    assert took < 3 * budget.PASS_FACTOR * small_budget.cpu_seconds + 4.0


class _Services:
    """secret() that records the thread it ran on (the component's loop, always)."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    async def secret(self, key: str) -> str:
        self.threads.append(threading.get_ident())
        return f"<{key}>"

    async def kv(self, key: str, namespace: str | None, error_on_missing: bool) -> object:
        raise LookupError(key)

    async def read(self, path: str) -> str:
        raise LookupError(path)


@pytest.mark.asyncio
async def test_a_worker_render_moved_off_the_loop_still_reaches_its_services() -> None:
    services = _Services()
    heavy = "{{ secret('k') ~ (inputs.s | replace({'^(a|aa)+$': 'x'}, regexp=true)) }}"
    variables = {"inputs": {"s": "a" * 26 + "!"}}  # about 0.1 s: more than the slice
    rendered = await budgeted.render_value_async({"v": heavy}, variables, services)
    assert rendered == {"v": "<k>" + "a" * 26 + "!"}
    # asked in place first, then again from the thread, each time on this loop
    assert services.threads == [threading.get_ident()] * 2


class _SlowServices(_Services):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled = asyncio.Event()

    async def secret(self, key: str) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return key


@pytest.mark.asyncio
async def test_an_abandoned_render_off_the_loop_lets_go_of_its_services() -> None:
    """A task's timeout abandons a render moved to a thread: the service call it waits
    for is cancelled, so the thread ends instead of waiting for ever."""
    services = _SlowServices()
    heavy = "{{ (inputs.s | replace({'^(a|aa)+$': 'x'}, regexp=true)) ~ secret('k') }}"
    variables = {"inputs": {"s": "a" * 26 + "!"}}
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await budgeted.render_value_async(heavy, variables, services)
    async with asyncio.timeout(5):
        await services.cancelled.wait()
