"""``/api/v1/executions/webhook/{namespace}/{flowId}/{key}``: a request starts an
execution of a flow with a matching Webhook trigger.

This is the API's hot path (DESIGN §8 measures executions created per second through
it), so it does only what it must: one read of the flow's latest revision (its parse
is cached per revision by FlowCache), one read of the trigger's state (enabled or
not), and one transaction that stores the execution and queues its start.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.flow import budget, template
from runtime.flow.context import is_truthy
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.inputs import InputError
from runtime.flow.model import Flow, Trigger
from runtime.flow.rules import WEBHOOK_TYPES
from runtime.flow.template import TemplateError
from services.flows import FlowNotFoundError
from services.submit import submit
from services.triggers import _trigger_inputs
from services.webserver.executions_api import invalid_inputs
from services.webserver.http import ApiError, json_or_text, json_response, not_found, state
from services.webserver.shapes import execution_json
from services.webserver.sse import pause


def _body(raw: bytes) -> Any:
    """Parsed JSON when the body is JSON, else its text (None when empty), as Kestra."""
    return json_or_text(raw) if raw else None


def _multi(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name, []).append(value)
    return out


#: the condition types a webhook evaluates (on the request, before anything is stored)
EXPRESSION_CONDITIONS = frozenset(
    {
        "io.kestra.plugin.core.condition.Expression",
        "io.kestra.plugin.core.condition.ExpressionCondition",
        "io.kestra.core.models.conditions.types.VariableCondition",
    }
)


def _conditions_hold(flow: Flow, trigger: Trigger, variables: dict[str, Any]) -> bool:
    """Whether every Expression condition of the trigger renders truthy for this request
    (other condition types are about executions, which a webhook has none of yet)."""
    context = {
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
        "vars": flow.variables,
        "trigger": variables,
    }
    for condition in trigger.conditions:
        expression = condition.get("expression")
        if condition.get("type") not in EXPRESSION_CONDITIONS or not isinstance(expression, str):
            continue
        try:
            rendered = template.render(expression, context)
        except TemplateError as exc:
            raise ApiError(
                422, f"the condition {expression!r} of trigger {trigger.id!r} failed: {exc}"
            ) from None
        if not is_truthy(rendered):
            return False
    return True


def _key(flow: Flow, trigger: Trigger) -> str | None:
    """The trigger's key, rendered when it is a template (``{{ vars.key }}``), as Kestra."""
    key = trigger.key
    if key is None or not template.has_expression(key):
        return key
    variables = {
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
        "vars": flow.variables,
    }
    try:
        return template.render(key, variables).strip()
    except TemplateError:
        return None  # a key that cannot be rendered matches nothing


def _matching_trigger(flow: Flow, key: str) -> Trigger | None:
    return next(
        (
            t
            for t in flow.triggers
            if t.type in WEBHOOK_TYPES and not t.disabled and _key(flow, t) == key
        ),
        None,
    )


async def webhook(request: Request) -> Response:
    app = state(request)
    namespace = request.path_params["namespace"]
    flow_id = request.path_params["id"]
    key = request.path_params["key"]
    try:
        flow = await app.flows.get(namespace, flow_id)
    except FlowNotFoundError:
        raise not_found(f"flow {namespace}.{flow_id}") from None
    trigger: Trigger | None = None
    if not flow.disabled:
        # keys, conditions and inputs are expressions: budgeted, off the loop if heavy
        trigger = await budget.evaluate(_matching_trigger, flow, key)
    if trigger is not None:
        saved = await app.backend.triggers.get(namespace, flow_id, trigger.id)
        if saved is not None and saved.disabled:
            trigger = None
    if trigger is None:
        # A disabled flow or trigger and a wrong key look alike: nothing to find.
        raise not_found(f"webhook of flow {namespace}.{flow_id} with this key")
    headers = request.headers.items()
    if app.config.users:
        # With basic authentication on, this header carries the server's credentials,
        # nothing meant for the flow: kept, they would be stored in the execution and
        # shown to whoever reads it.
        headers = [(k, v) for k, v in headers if k != "authorization"]
    variables = {
        "body": _body(await request.body()),
        "headers": _multi(headers),
        "parameters": _multi(request.query_params.multi_items()),
    }
    if not await budget.evaluate(_conditions_hold, flow, trigger, variables):
        return Response(status_code=204)  # as Kestra: understood, nothing to start
    now = app.backend.clock()
    try:
        inputs = await budget.evaluate(_trigger_inputs, flow, trigger, {"trigger": variables}, now)
    except InputError as exc:
        raise invalid_inputs(exc) from None
    except TemplateError as exc:
        raise ApiError(422, f"the trigger's inputs cannot be rendered: {exc}") from None
    execution = new_execution(
        id=new_id(),
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=flow.revision,
        at=now,
        inputs=inputs,
        labels=flow.label_map(),
        trigger={"id": trigger.id, "type": trigger.type, "variables": variables, **variables},
    )
    await submit(app.backend, execution)
    if trigger.wait or trigger.return_outputs:
        ended = await _ended(app, execution.id)
        if ended is None:
            raise ApiError(503, "the server is stopping: the execution was started, not awaited")
        if trigger.return_outputs:
            return json_response(ended.outputs or {})
        execution = ended
    return json_response(execution_json(execution))


async def _ended(app: Any, execution_id: str) -> Execution | None:
    """The execution once it has ended (webhook `wait`), polled as live follows are;
    None when the server stops first."""
    while True:
        current = await app.backend.executions.get(execution_id)
        if current is not None and current.state.terminated:
            return current  # type: ignore[no-any-return]
        if not await pause(app, app.config.poll_seconds):
            return None


routes = [
    Route(
        "/api/v1/executions/webhook/{namespace}/{id}/{key}",
        webhook,
        methods=["GET", "POST", "PUT"],
    ),
]
