"""``io.kestra.plugin.runtime.PythonFunction``: call an importable Python function in
the worker's process pool (this runtime's own task type; Kestra has no equivalent).

For CPU-bound Python work without starting an interpreter per task: the pool's
worker processes stay alive between calls, so a warm import costs nothing.

.. code-block:: yaml

    - id: score
      type: io.kestra.plugin.runtime.PythonFunction
      function: "mypackage.scoring:score_batch"   # module:callable (may be dotted)
      args: ["{{ inputs.batch }}"]
      kwargs: {threshold: 0.8}
      timeout: PT5M

Properties: ``function`` (``package.module:callable``), ``args`` (a list) and
``kwargs`` (a map), all rendered. The module is imported inside the pool's worker
process, never in the worker's event loop process; it must be importable there
(installed in the worker's environment). The return value must be JSON-serialisable
and becomes the ``value`` output (tuples become lists). The task's ``timeout`` is
passed to the pool, which kills the process running the call when it expires; a
kill does the same. An import error, an exception raised by the function, a value
that is not JSON and a crashed pool process each fail the task with a message
naming the function.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, ClassVar

from runtime.actors.pool import PoolError
from runtime.flow.model import RunnableTask
from runtime.tasks.context import RunContext, TaskFailure


class FunctionCallError(Exception):
    """The function could not be found or its result cannot leave the pool process.

    Raised in the pool process; its one-argument constructor lets it pickle back."""


class PythonFunction(RunnableTask, kw_only=True, frozen=True):
    """Call ``function`` with ``args`` and ``kwargs`` in the worker's process pool."""

    function: str
    args: list[Any] = []
    kwargs: dict[str, Any] = {}

    canonical_type: ClassVar[str] = "io.kestra.plugin.runtime.PythonFunction"

    async def run(self, ctx: RunContext) -> dict[str, Any] | None:
        where = f"task {self.id!r}"
        spec = str(await ctx.render(self.function)).strip()
        module, _, name = spec.partition(":")
        if not module or not name:
            raise TaskFailure(
                f"{where}: function must be written 'package.module:callable', got {spec!r}"
            )
        args = await ctx.render(list(self.args))
        kwargs = await ctx.render(dict(self.kwargs))
        timeout = self.timeout.total_seconds() if self.timeout is not None else None
        try:
            value = await ctx.pool.run(call_function, spec, args, kwargs, timeout=timeout)
        except FunctionCallError as exc:
            raise TaskFailure(f"{where}: {exc}") from None
        except TimeoutError:
            raise TaskFailure(f"{where}: {spec} did not finish within {timeout} s") from None
        except PoolError as exc:
            raise TaskFailure(f"{where}: {spec} could not complete: {exc}") from None
        except Exception as exc:
            for note in getattr(exc, "__notes__", ()):
                ctx.log.error(note)
            raise TaskFailure(f"{where}: {spec} raised {type(exc).__name__}: {exc}") from None
        return {"value": value}


def call_function(spec: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Import and call ``module:callable`` and return its result as plain JSON data.

    Runs in a pool process."""
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionCallError(
            f"cannot import module {module_name!r} for {spec}: {exc}; install it in the "
            "worker's environment or fix the name"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise FunctionCallError(
                f"module {module_name!r} has no attribute {attribute!r} (for {spec})"
            ) from None
    if not callable(target):
        raise FunctionCallError(f"{spec} is a {type(target).__name__}, not a callable")
    result = target(*args, **kwargs)
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError) as exc:
        raise FunctionCallError(
            f"{spec} returned a {type(result).__name__}, which is not JSON-serialisable: {exc}"
        ) from None
