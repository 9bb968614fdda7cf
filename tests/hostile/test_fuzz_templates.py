"""A fuzz test over the template grammar (hypothesis).

Expressions are built from Pebble's grammar: literals (some large), variables,
operators, filters and functions with large arguments, loops, ``set``, nested
``render()``, jq programs and regular expressions that blow up, and attempts on
Python internals. Each is rendered the way a component on an event loop renders
it (:func:`budget.evaluate`) while a ticker measures the loop. None may block the
loop past the budget, none may reach Python internals, and none may raise
anything but :class:`TemplateError`.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.flow import budget, template
from tests.hostile.conftest import heap_frozen

pytestmark = pytest.mark.slow

BUDGET = budget.Limits(cpu_seconds=0.2, memory_bytes=16 * 1024 * 1024)
#: the issue's words: none blocks the loop past the budget (the slice is 20 ms; the
#: rest is room for a shared machine's scheduling hiccups)
LOOP_STALL_S = BUDGET.cpu_seconds
#: an evaluation's end: the budget, a jq child's start, the machine's load
WITHIN_S = 3.0

VARIABLES = {
    "inputs": {"name": "Ada", "n": 12, "items": ["a", "b", "c"], "big": "x" * 100_000},
    "outputs": {"t": {"value": "{{ inputs.name }}"}},
    "execution": {"id": "e1"},
}

NUMBERS = st.sampled_from(["0", "1", "-7", "3.5", "999999999", "1000000", "99999999999999"])
STRINGS = st.sampled_from(
    ["'a'", "''", "'hello world'", "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'", "'{}'", "'[1,2]'"]
)
NAMES = st.sampled_from(
    [
        "inputs.name",
        "inputs.n",
        "inputs.items",
        "inputs.big",
        "outputs.t.value",
        "execution.id",
        "missing",
        "inputs.missing ?? 'x'",
        # the sandbox's business: none of these may reach Python
        "inputs.name.__class__",
        "inputs['__class__']",
        "inputs.items.__len__",
        "execution.__dict__",
        "inputs.name.upper",
        "self",
        "lipsum",
        "cycler",
        "range.__globals__",
        "inputs.items.pop",
        "printContext().__class__",
    ]
)
JQ = st.sampled_from(
    [".", ".a", "def f: f; f", "[range(100000000)]", '"x" * 100000000', "[.[]?]", ".[", "repeat(1)"]
)
REGEX = st.sampled_from(["a", "^(a|aa)+$", "(x+x+)+y", "[", "(a*)*b", "\\\\d+"])

ATOMS = st.one_of(NUMBERS, STRINGS, NAMES)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(
        inner, st.sampled_from(["+", "-", "*", "/", "%", "~", "??", "==", "<", "and", "or"]), inner
    ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    unary = st.tuples(
        inner,
        st.sampled_from(
            [
                "upper",
                "length",
                "reverse",
                "sort",
                "toJson",
                "json",
                "trim",
                "first",
                "last",
                "keys",
                "join(',')",
                "split(',')",
                "chunk(1)",
                "abbreviate(3)",
                "slice(0, 1000000)",
                "default('d')",
                "indent(1000)",
                "number",
                "base64encode",
                "sha256",
                "yaml",
                "distinct",
            ]
        ),
    ).map(lambda t: f"({t[0]} | {t[1]})")
    jq = st.tuples(inner, JQ).map(lambda t: f"({t[0]} | jq('{t[1]}'))")
    regex = st.tuples(inner, REGEX).map(
        lambda t: f"({t[0]} | replace({{'{t[1]}': 'z'}}, regexp=true))"
    )
    functions = st.one_of(
        st.tuples(NUMBERS, NUMBERS).map(lambda t: f"range({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"max({t[0]}, {t[1]})"),
        inner.map(lambda t: f"fromJson({t})"),
        inner.map(lambda t: f"render({t})"),
        st.just("range(1, 1000000)"),
        st.just("(1..1000000)"),
    )
    ternary = st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})")
    return st.one_of(binary, unary, jq, regex, functions, ternary)


EXPRESSIONS = st.recursive(ATOMS, _extend, max_leaves=6)

TEMPLATES = st.one_of(
    EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"),
    st.tuples(EXPRESSIONS, EXPRESSIONS).map(
        lambda t: f"{{% for x in {t[0]} %}}{{{{ {t[1]} }}}}{{% endfor %}}"
    ),
    st.tuples(EXPRESSIONS, EXPRESSIONS).map(
        lambda t: f"{{% set v = {t[0]} %}}{{% set v = v ~ v ~ v %}}{{{{ {t[1]} ~ v }}}}"
    ),
    st.tuples(EXPRESSIONS, EXPRESSIONS).map(
        lambda t: (
            f"{{% for a in {t[0]} %}}{{% for b in {t[0]} %}}{{{{ {t[1]} }}}}"
            "{% endfor %}{% endfor %}"
        )
    ),
)

LEAKS = ("<class", "<function", "<built-in", "<module", "<bound method", "__globals__")


async def _render_watching_the_loop(source: str) -> tuple[object, float, float]:
    """(outcome, seconds it took, the longest the loop was held meanwhile)."""
    began = time.perf_counter()
    work = asyncio.ensure_future(budget.evaluate(template.render, source, VARIABLES))
    worst = 0.0
    while not work.done():
        # the loop thread's CPU time between beats: what held the loop (a shared
        # machine pausing the thread is not the code blocking it), and the wall gap
        # beyond the budget (a blocking wait, which spends no CPU)
        cpu, wall = time.thread_time(), time.perf_counter()
        await asyncio.sleep(0.005)
        waited = time.perf_counter() - wall - 0.005
        worst = max(worst, time.thread_time() - cpu, waited - BUDGET.cpu_seconds)
    try:
        outcome: object = work.result()
    except BaseException as exc:
        outcome = exc
    return outcome, time.perf_counter() - began, worst


@pytest.fixture(scope="module")
def fuzz_budget() -> object:
    before = budget.limits()
    budget.configure(BUDGET)
    with heap_frozen():
        yield BUDGET
    budget.configure(before)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(source=TEMPLATES)
def test_no_template_blocks_the_loop_or_escapes(fuzz_budget: object, source: str) -> None:
    outcome, took, stall = asyncio.run(_render_watching_the_loop(source))
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, template.TemplateError), (source, repr(outcome))
    else:
        assert isinstance(outcome, str)
        assert not any(leak in outcome for leak in LEAKS), (source, outcome[:200])
    assert took < WITHIN_S, (source, took)
    assert stall < LOOP_STALL_S, (source, stall)
