"""Kestra (Pebble) compatible, sandboxed templating on Jinja2.

Flows keep their Pebble expressions (``{{ inputs.name }}``, ``{{ x ?? 'fallback' }}``,
``{{ outputs.t[taskrun.value].value }}``, ...). Each template is translated once into Jinja2 source
(:mod:`runtime.flow.template_pebble`), compiled in an ``ImmutableSandboxedEnvironment``
and cached (LRU, 4096 templates per environment). A string without ``{{`` or ``{%``
is returned as-is without touching Jinja.

Semantics (checked against Kestra's documentation and Pebble's operator table):

* Strict variables: reading a missing variable, key or index fails the render with
  the name that was missing. ``??`` treats missing *and* null as absent (chains and
  missing intermediates such as ``outputs.missing.value ?? 'x'`` work), ``???``
  only missing; ``| default(x)`` also replaces blank strings and empty collections;
  ``is defined`` / ``is null`` / ``is empty`` never fail.
* Operators keep Pebble's precedences: ``??``, ``???`` and ``..`` bind tighter than
  ``~``, which binds tighter than ``|`` (so ``a ?? b | upper`` upper-cases either
  side); ``not`` binds tightest. Also: ternary ``c ? a : b``, ``contains``,
  ``equals``, ``and``/``or`` (boolean results), ``is [not] <test>``, and ``/`` as
  true division (``10 / 4`` is ``2.5``, ``10 / 2`` prints ``5.0``); ``%`` keeps
  Java's sign rule.
* Printing: strings as-is, null as the empty string (Kestra writes nothing for
  null), booleans ``true``/``false``, integers plainly, floats like Java's
  ``Double.toString`` (``1.0``, ``1.0E10``, ``1.0E-4``), maps and lists as
  compact JSON (Kestra's JSON writer) wherever they are printed. ``~`` and
  ``join`` use the same conversion.
* Loops: ``{% for x in list %}``, maps iterate as entries with ``key`` and
  ``value``, ``loop.index`` and ``loop.revindex`` are zero-based as in Pebble,
  ``{% else %}`` runs for empty or null iterables. Also ``{% if %}`` /
  ``{% elseif %}`` / ``{% else %}``, ``{% set %}``, ``{% filter %}``,
  ``{% raw %}`` / ``{% verbatim %}``, comments, and ``{{-`` / ``-}}`` trimming.
* Dates (:mod:`runtime.flow.template_dates`): java.time patterns with English
  names; "the system zone" Kestra falls back to is UTC here.
* Methods: ``s.length()``, ``s.substring(a, b)``, ``list.size()``,
  ``map.get(k)``, ``map.keySet()`` and a few more Java methods are emulated on
  plain data; any other call is refused.

Filters: abbreviate, abs, base64decode, base64encode, capitalize, chunk, date,
dateAdd, default, distinct, endsWith, escapeChar, first, indent, join, jq, json,
keys, last, length, lower, md5, merge, nindent, number, numberFormat (0 # , .
only), replace (map of pairs, ``regexp=true``), reverse, rsort, sha1, sha256,
sha512, slice, slugify, sort, split (regex, limit), startsWith, string,
substringAfter, substringAfterLast, substringBefore, substringBeforeLast,
timestamp, timestampMilli, timestampMicro, timestampNano, title, toJson, trim,
upper, urldecode, urlencode, values, yaml.
Tests: defined, empty, even, iterable, json, map, null, odd.
Functions: now, fromJson (and the old ``json``), yaml, range (inclusive, at most
a million items, also ``a..b``), max, min, uuid, randomInt, printContext /
fetchContext, render (recursive; ``recursive=false``), renderOnce, and the
worker-backed secret, kv (``namespace=``, ``errorOnMissing=`` defaulting to
true) and read, which need :class:`TemplateServices` and ``render_async``;
:mod:`runtime.flow.template_functions` adds currentEachOutput, encrypt, decrypt,
fileURI, tasksWithState, fromIon and the worker-backed errorLogs, fileSize,
fileExists and isFileEmpty; :mod:`runtime.flow.template_http` the worker-backed
http (bounded in time and size).

Not supported (a template using them gets a syntax error naming them): the
``in`` operator, macros, blocks, includes and inheritance; filters className,
flatten, toIon, regex* and localized date styles; functions
fileEmpty, id, randomPort, credential, the calendar helpers
(isWeekend, dayOfWeek, ...) and the iteration-output helpers. String
interpolation (``"#{...}"``) is not performed and ``\\uXXXX`` escapes are not
decoded: that text stays literal.

Sandbox: templates see plain data only. Lookups never read Python attributes
(``''.__class__`` and friends are refused), no Jinja global is exposed, unknown
names fail at translation, arithmetic is numbers-only (no string repetition),
ranges are capped at a million items, loops at a million iterations per render,
built strings and output at 16 MiB, and nested ``render()`` at 8 levels.
Every evaluation (a top-level render, nested ``render()`` calls included) runs
under a CPU-time and memory budget (:mod:`runtime.flow.budget`); ``jq`` programs
run in a killable child process and regular expressions stop at the deadline.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

import jinja2
import msgspec
from jinja2 import pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runtime.flow import budget, template_http
from runtime.flow import template_filters as filters
from runtime.flow import template_functions as more_functions
from runtime.flow import template_operators as operators
from runtime.flow.template_pebble import HELPER, Names, TranslationError, translate
from runtime.flow.template_values import (
    MAX_TEXT,
    ExpressionFailure,
    Missing,
    SandboxViolation,
    is_missing,
    java_str,
    lookup,
    require,
)

__all__ = [
    "TemplateError",
    "TemplateServices",
    "TemplateSyntaxProblem",
    "has_expression",
    "render",
    "render_async",
    "render_value",
    "render_value_async",
    "syntax_errors",
]

_MAX_ITERATIONS = 1_000_000
_MAX_RENDER_DEPTH = 8
_MAX_RENDER_PASSES = 10
_MAX_PRODUCT_BITS = 65536
_STATE = f"{HELPER}state"
_MISSING_HINT = "check the name, or give a fallback with `?? 'value'` or `| default('value')`"


class TemplateSyntaxProblem(msgspec.Struct, frozen=True):
    """One syntax error of a template; `line` and `column` are 1-based within it."""

    message: str
    line: int
    column: int | None = None


class TemplateError(Exception):
    """A template could not be compiled or rendered.

    `reason` says what failed, `line`/`column` where (when known), `template` holds
    the source and `problems` every syntax error found.
    """

    def __init__(
        self,
        reason: str,
        template: str,
        *,
        line: int | None = None,
        column: int | None = None,
        problems: tuple[TemplateSyntaxProblem, ...] = (),
    ) -> None:
        self.reason = reason
        self.template = template
        self.line = line
        self.column = column
        self.problems = problems
        where = ""
        if line is not None:
            where = f" at line {line}" + (f", column {column}" if column is not None else "")
        snippet = template if len(template) <= 200 else template[:197] + "..."
        super().__init__(f"{reason}{where} in template {snippet!r}")


class TemplateServices(Protocol):
    """The I/O-backed template functions; the worker provides them."""

    async def secret(self, key: str) -> str: ...

    async def kv(self, key: str, namespace: str | None, error_on_missing: bool) -> Any: ...

    async def read(self, path: str) -> str: ...


@contextlib.contextmanager
def fixed_now(at: datetime) -> Iterator[None]:
    """Within the block, ``now()`` returns ``at``: the engine renders with its event's
    time, so the same event always renders the same way."""
    token = filters.FIXED_NOW.set(at)
    try:
        yield
    finally:
        filters.FIXED_NOW.reset(token)


def has_expression(value: str) -> bool:
    """True when `value` contains ``{{`` or ``{%`` and so needs rendering."""
    return "{{" in value or "{%" in value


def render(template: str, variables: Mapping[str, Any], meter: budget.Meter | None = None) -> str:
    """Render a template with plain-data `variables` (no secret/kv/read)."""
    if not has_expression(template):
        return template
    state = _RenderState(variables, None, meter or budget.new_meter())
    return _render_sync(template, state)


async def render_async(
    template: str, variables: Mapping[str, Any], services: TemplateServices | None = None
) -> str:
    """Render a template; secret(), kv() and read() await `services`."""
    if not has_expression(template):
        return template
    return await _render_async(template, _RenderState(variables, services, budget.new_meter()))


def render_value(
    value: Any, variables: Mapping[str, Any], meter: budget.Meter | None = None
) -> Any:
    """Render every string inside dicts and lists (keys too); other values unchanged.
    The whole value is one evaluation: its strings share one budget."""
    if isinstance(value, str):
        return render(value, variables, meter)
    if meter is None:
        meter = budget.new_meter()
    if isinstance(value, Mapping):
        return {
            (render(key, variables, meter) if isinstance(key, str) else key): render_value(
                item, variables, meter
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [render_value(item, variables, meter) for item in value]
    if isinstance(value, tuple):
        return tuple(render_value(item, variables, meter) for item in value)
    return value


async def render_value_async(
    value: Any,
    variables: Mapping[str, Any],
    services: TemplateServices | None = None,
    meter: budget.Meter | None = None,
) -> Any:
    """:func:`render_value` with worker services for secret(), kv() and read()."""
    if meter is None:
        meter = budget.new_meter()
    if isinstance(value, str):
        if not has_expression(value):
            return value
        return await _render_async(value, _RenderState(variables, services, meter))
    if isinstance(value, Mapping):
        rendered: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = (
                await render_value_async(key, variables, services, meter)
                if isinstance(key, str)
                else key
            )
            rendered[new_key] = await render_value_async(item, variables, services, meter)
        return rendered
    if isinstance(value, (list, tuple)):
        items = [await render_value_async(item, variables, services, meter) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def syntax_errors(template: str) -> list[TemplateSyntaxProblem]:
    """Every syntax error of a template (empty when it compiles), for flow validation."""
    if not has_expression(template):
        return []
    try:
        _compile(template, False)
    except TemplateError as error:
        return list(error.problems)
    return []


# ---- rendering ----------------------------------------------------------------------


@dataclass(slots=True)
class _RenderState:
    """What one render shares with the helpers: variables, services, limits."""

    variables: Mapping[str, Any]
    services: TemplateServices | None
    meter: budget.Meter
    stack: list[Any] = field(default_factory=list)
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    iterations: int = 0
    depth: int = 0


def _render_sync(source: str, state: _RenderState) -> str:
    template = _compile(source, False)
    try:
        text = _collect(template.generate(state.variables, **{_STATE: state}))
        state.meter.add(len(text))
        return text
    except TemplateError:
        raise
    except Exception as exc:
        raise _runtime_error(exc, source) from None


async def _render_async(source: str, state: _RenderState) -> str:
    template = _compile(source, True)
    try:
        chunks = cast(
            AsyncGenerator[str, None], template.generate_async(state.variables, **{_STATE: state})
        )
        async with contextlib.aclosing(chunks):
            parts: list[str] = []
            size = 0
            async for chunk in chunks:
                size = _check_output(size, chunk)
                parts.append(chunk)
        state.meter.add(size)
        return "".join(parts)
    except TemplateError:
        raise
    except Exception as exc:
        raise _runtime_error(exc, source) from None


def _collect(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    with contextlib.closing(cast(Generator[str, None, None], chunks)):
        for chunk in chunks:
            size = _check_output(size, chunk)
            parts.append(chunk)
    return "".join(parts)


def _check_output(size: int, chunk: str) -> int:
    size += len(chunk)
    if size > MAX_TEXT:
        raise ExpressionFailure(f"the rendered text exceeds {MAX_TEXT} characters")
    return size


def _runtime_error(exc: Exception, source: str) -> TemplateError:
    if isinstance(exc, jinja2.UndefinedError):
        reason = f"Unable to render: {exc.message}; {_MISSING_HINT}"
    elif isinstance(exc, (SandboxViolation, SecurityError)):
        reason = f"Refused by the template sandbox: {exc}"
    elif isinstance(exc, budget.OverBudget):
        reason = f"Over budget: {exc}"
    elif isinstance(exc, ExpressionFailure):
        reason = f"Unable to render: {exc}"
    elif isinstance(exc, jinja2.TemplateError):
        reason = f"Unable to render: {exc.message}"
    elif isinstance(exc, RecursionError):
        reason = "Unable to render: the template nests too deeply"
    else:
        reason = f"Unable to render: {type(exc).__name__}: {exc}"
    return TemplateError(reason, source, line=_template_line(exc))


def _template_line(exc: BaseException) -> int | None:
    """The template line Jinja's rewritten traceback points at, if any."""
    line = None
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename == "<template>":
            line = frame.tb_lineno
        frame = frame.tb_next
    return line


# ---- compilation --------------------------------------------------------------------


def _offset_position(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


def _syntax_error(source: str, problems: tuple[TemplateSyntaxProblem, ...]) -> TemplateError:
    first = problems[0]
    if len(problems) == 1:
        reason = f"Template syntax error: {first.message}"
    else:
        listed = "; ".join(f"{p.message} (line {p.line}, column {p.column})" for p in problems)
        reason = f"{len(problems)} template syntax errors: {listed}"
    return TemplateError(reason, source, line=first.line, column=first.column, problems=problems)


def _jinja_message(message: str | None) -> str:
    text = message or "invalid template"
    text = text.replace(
        "Unexpected end of template. Jinja was looking for the following tags:",
        "the template ended before",
    )
    text = text.replace("Jinja was looking for the following tags:", "expected")
    return text.replace("'elif'", "'elseif'")


@functools.lru_cache(maxsize=4096)
def _compile(source: str, is_async: bool) -> jinja2.Template:
    """Translate and compile a template once per (source, mode)."""
    try:
        translated = translate(source, _NAMES)
    except TranslationError as exc:
        problems = tuple(
            TemplateSyntaxProblem(p.message, *_offset_position(source, p.offset))
            for p in exc.problems
        )
        raise _syntax_error(source, problems) from None
    except RecursionError:
        problem = TemplateSyntaxProblem("the expression nests too deeply", 1, None)
        raise _syntax_error(source, (problem,)) from None
    environment = _ASYNC_ENVIRONMENT if is_async else _SYNC_ENVIRONMENT
    try:
        return environment.from_string(translated)
    except jinja2.TemplateSyntaxError as exc:
        problem = TemplateSyntaxProblem(_jinja_message(exc.message), exc.lineno or 1, None)
        raise _syntax_error(source, (problem,)) from None
    except (RecursionError, SyntaxError, ValueError) as exc:
        problem = TemplateSyntaxProblem(f"cannot compile: {exc}", 1, None)
        raise _syntax_error(source, (problem,)) from None


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox: plain-data lookups, numbers-only arithmetic, Pebble's names only."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, *, is_async: bool, functions: Mapping[str, Callable[..., Any]]) -> None:
        super().__init__(
            autoescape=False,
            undefined=Missing,
            finalize=java_str,
            keep_trailing_newline=True,
            enable_async=is_async,
            cache_size=0,
            auto_reload=False,
        )
        # Filters get the render's context (which also keeps Jinja from folding
        # constant calls at compile time: validation never evaluates anything).
        self.filters = {name: _metered(name, fn) for name, fn in filters.FILTERS.items()}
        self.tests = dict(filters.TESTS)
        self.globals = {**_HELPERS, **{f"{HELPER}f_{n}": fn for n, fn in functions.items()}}

    def getattr(self, obj: Any, attribute: str) -> Any:
        return lookup(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        return lookup(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        meter = _state(context).meter
        if operator == "*" and isinstance(left, int) and isinstance(right, int):
            # A product's size is known before it is computed, and computing a huge
            # one is a single uninterruptible call (x*x doubling runs away).
            bits = left.bit_length() + right.bit_length()
            if bits > _MAX_PRODUCT_BITS:
                raise ExpressionFailure(
                    f"the product would be a {bits}-bit number; integers here stop at "
                    f"{_MAX_PRODUCT_BITS} bits (Kestra's stop at 64)"
                )
            meter.charge(28 + bits // 8)
        result = operators.arithmetic(operator, left, right)
        meter.charge_value(result)
        return result


# ---- helpers the translated templates call ------------------------------------------


def _state(context: Context) -> _RenderState:
    state = context.get(_STATE)
    assert isinstance(state, _RenderState)
    return state


@pass_context
def _push(context: Context, value: Any) -> bool:
    _state(context).stack.append(value)
    return value is not None and not is_missing(value)


@pass_context
def _push_defined(context: Context, value: Any) -> bool:
    _state(context).stack.append(value)
    return not is_missing(value)


@pass_context
def _pop(context: Context) -> Any:
    return _state(context).stack.pop()


@pass_context
def _drop(context: Context, fallback: Any) -> Any:
    _state(context).stack.pop()
    return fallback


@pass_context
def _iterate(context: Context, value: Any) -> Iterator[Any]:
    state = _state(context)
    meter = state.meter
    for item in operators.iterate(value):
        meter.tick()
        state.iterations += 1
        if state.iterations > _MAX_ITERATIONS:
            raise ExpressionFailure(f"loops ran more than {_MAX_ITERATIONS} iterations")
        yield item


def _metered(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose result counts against the evaluation's budget."""

    @pass_context
    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        meter = _state(context).meter
        budget.activate(meter)
        result = function(*args, **kwargs)
        meter.charge_value(result)
        return result

    call.__name__ = name
    return call


def _charged(function: Callable[..., Any]) -> Callable[..., Any]:
    """A helper of the translated templates whose result counts against the budget."""

    @pass_context
    def call(context: Context, *args: Any) -> Any:
        meter = _state(context).meter
        budget.activate(meter)
        result = function(*args)
        meter.charge_value(result)
        return result

    return call


def _checked_range(start: Any, end: Any, increment: Any = 1) -> list[Any]:
    budget.check_range(start, end, increment)
    return operators.inclusive_range(start, end, increment)


_HELPERS: dict[str, Callable[..., Any]] = {
    f"{HELPER}push": _push,
    f"{HELPER}push_defined": _push_defined,
    f"{HELPER}pop": _pop,
    f"{HELPER}drop": _drop,
    f"{HELPER}iter": _iterate,
    f"{HELPER}truth": operators.truth,
    f"{HELPER}concat": _charged(operators.concat),
    f"{HELPER}contains": operators.contains,
    f"{HELPER}range": _charged(_checked_range),
    f"{HELPER}method": operators.method,
}


def _function(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Check a function's arguments are defined and report bad calls by name."""

    @pass_context
    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        for argument in (*args, *kwargs.values()):
            require(argument)
        meter = _state(context).meter
        budget.activate(meter)
        try:
            result = function(*args, **kwargs)
        except TypeError as exc:
            raise ExpressionFailure(f"wrong arguments for {name}(): {exc}") from None
        meter.charge_value(result)
        return result

    return call


_PLAIN_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "now": filters.now,
    "fromJson": filters.from_json,
    "json": filters.from_json,
    "yaml": filters.from_yaml,
    "range": _checked_range,
    "max": filters.extreme(max, "max"),
    "min": filters.extreme(min, "min"),
    "uuid": filters.new_uuid,
    "randomInt": filters.random_int,
}
_PURE_FUNCTIONS = {name: _function(name, fn) for name, fn in _PLAIN_FUNCTIONS.items()}


@pass_context
def _print_context(context: Context) -> dict[str, Any]:
    return dict(_state(context).variables)


def _needs_worker(name: str) -> ExpressionFailure:
    return ExpressionFailure(
        f"{name}() needs a worker context to reach its backend; it only works when the worker "
        "renders with render_async(..., services=...)"
    )


def _sync_service(name: str) -> Callable[..., Any]:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise _needs_worker(name)

    return unavailable


@contextlib.contextmanager
def _nested(state: _RenderState) -> Iterator[None]:
    """Count render() nesting so a template cannot recurse without bound."""
    if state.depth >= _MAX_RENDER_DEPTH:
        raise ExpressionFailure(f"render() is nested more than {_MAX_RENDER_DEPTH} levels deep")
    state.depth += 1
    try:
        yield
    finally:
        state.depth -= 1


def _render_function(context: Context, value: Any, recursive: bool = True) -> Any:
    state = _state(context)
    result = require(value)
    if not isinstance(result, str):
        return result
    with _nested(state):
        for _ in range(_MAX_RENDER_PASSES):
            if not has_expression(result):
                return result
            rendered = _render_sync(result, state)
            if rendered == result or not recursive:
                return rendered
            result = rendered
    raise ExpressionFailure(f"render() still had expressions after {_MAX_RENDER_PASSES} passes")


async def _render_function_async(context: Context, value: Any, recursive: bool = True) -> Any:
    state = _state(context)
    result = require(value)
    if not isinstance(result, str):
        return result
    with _nested(state):
        for _ in range(_MAX_RENDER_PASSES):
            if not has_expression(result):
                return result
            rendered = await _render_async(result, state)
            if rendered == result or not recursive:
                return rendered
            result = rendered
    raise ExpressionFailure(f"render() still had expressions after {_MAX_RENDER_PASSES} passes")


@pass_context
def _render(context: Context, value: Any, recursive: bool = True) -> Any:
    return _render_function(context, value, recursive)


@pass_context
def _render_once(context: Context, value: Any) -> Any:
    return _render_function(context, value, False)


@pass_context
async def _render_async_function(context: Context, value: Any, recursive: bool = True) -> Any:
    return await _render_function_async(context, value, recursive)


@pass_context
async def _render_once_async(context: Context, value: Any) -> Any:
    return await _render_function_async(context, value, False)


def _services(context: Context, name: str) -> tuple[_RenderState, TemplateServices]:
    state = _state(context)
    if state.services is None:
        raise _needs_worker(name)
    return state, state.services


async def _memoized(
    state: _RenderState, key: tuple[Any, ...], call: Callable[[], Awaitable[Any]]
) -> Any:
    """Await a service call once per render (loops and retries may ask again)."""
    if key not in state.memo:
        try:
            with state.meter.waiting():
                state.memo[key] = await call()
        except Exception as exc:
            arguments = ", ".join(map(repr, key[1:]))
            raise ExpressionFailure(f"{key[0]}({arguments}) failed: {exc}") from None
    return state.memo[key]


@pass_context
async def _secret(context: Context, key: Any) -> Any:
    state, services = _services(context, "secret")
    name = java_str(require(key))
    return await _memoized(state, ("secret", name), lambda: services.secret(name))


@pass_context
async def _kv(
    context: Context,
    key: Any,
    namespace: Any = None,
    errorOnMissing: Any = True,
) -> Any:
    state, services = _services(context, "kv")
    name = java_str(require(key))
    space = None if namespace is None else java_str(require(namespace))
    strict = bool(require(errorOnMissing))
    return await _memoized(
        state, ("kv", name, space, strict), lambda: services.kv(name, space, strict)
    )


@pass_context
async def _read(context: Context, path: Any) -> Any:
    state, services = _services(context, "read")
    location = java_str(require(path))
    return await _memoized(state, ("read", location), lambda: services.read(location))


@pass_context
async def _http(
    context: Context,
    uri: Any,
    method: Any = "GET",
    body: Any = None,
    contentType: Any = None,
    headers: Any = None,
) -> Any:
    state = _state(context)
    arguments = [require(a) for a in (uri, method, body, contentType, headers)]
    key = ("http", *(msgspec.json.encode(a).decode() for a in arguments))
    if key not in state.memo:  # once per render, as the other service calls
        left = state.meter.limits.memory_bytes - state.meter.memory
        with state.meter.waiting():
            state.memo[key] = await template_http.request(*arguments, memory_left=left)
        state.meter.charge_value(state.memo[key])
    return state.memo[key]


_CONTEXT_FUNCTIONS = {"printContext": _print_context, "fetchContext": _print_context}


def _with_state(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A runtime.flow.template_functions function, given the render's variables and
    services, its arguments checked as the other functions' are."""

    @pass_context
    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        state = _state(context)
        try:
            return function(state.variables, state.services, *args, **kwargs)
        except TypeError as exc:
            raise ExpressionFailure(f"wrong arguments for {name}(): {exc}") from None

    return call


def _with_state_async(name: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    @pass_context
    async def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        state = _state(context)
        try:
            return await function(state.variables, state.services, *args, **kwargs)
        except TypeError as exc:
            raise ExpressionFailure(f"wrong arguments for {name}(): {exc}") from None

    return call


_MORE_SYNC = {n: _with_state(n, f) for n, f in more_functions.SYNC_FUNCTIONS.items()}
_MORE_ASYNC = {n: _with_state_async(n, f) for n, f in more_functions.ASYNC_FUNCTIONS.items()}

_SYNC_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **_PURE_FUNCTIONS,
    **_CONTEXT_FUNCTIONS,
    "render": _render,
    "renderOnce": _render_once,
    "secret": _sync_service("secret"),
    "kv": _sync_service("kv"),
    "read": _sync_service("read"),
    "http": _sync_service("http"),
    **_MORE_SYNC,
    **{name: _sync_service(name) for name in _MORE_ASYNC},
}
_ASYNC_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **_PURE_FUNCTIONS,
    **_CONTEXT_FUNCTIONS,
    "render": _render_async_function,
    "renderOnce": _render_once_async,
    "secret": _secret,
    "kv": _kv,
    "read": _read,
    "http": _http,
    **_MORE_SYNC,
    **_MORE_ASYNC,
}

_NAMES = Names(
    filters=frozenset(filters.FILTERS),
    tests=frozenset(filters.TESTS),
    functions=frozenset(_SYNC_FUNCTIONS),
)
_SYNC_ENVIRONMENT = _Environment(is_async=False, functions=_SYNC_FUNCTIONS)
_ASYNC_ENVIRONMENT = _Environment(is_async=True, functions=_ASYNC_FUNCTIONS)
