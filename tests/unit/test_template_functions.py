"""The Pebble functions of runtime.flow.template_functions, without a worker."""

from __future__ import annotations

import base64

import pytest

from runtime.flow.template import TemplateError, render

KEY = base64.b64encode(b"k" * 32).decode()


def test_current_each_output_walks_the_loop_values_outermost_first() -> None:
    variables = {
        "outputs": {"t": {"a": {"1": {"value": "a1"}, "2": {"value": "a2"}}}},
        "parents": [{"taskrun": {"value": "a"}}],
        "taskrun": {"value": "2"},
    }
    assert render("{{ currentEachOutput(outputs.t).value }}", variables) == "a2"


def test_current_each_output_refuses_a_non_map() -> None:
    with pytest.raises(TemplateError, match="currentEachOutput"):
        render("{{ currentEachOutput('x') }}", {})


def test_encrypt_then_decrypt_round_trips_with_a_fresh_iv() -> None:
    first = render("{{ encrypt(k, 'text') }}", {"k": KEY})
    second = render("{{ encrypt(k, 'text') }}", {"k": KEY})
    assert first != second  # a random IV each time, as Kestra
    assert len(base64.b64decode(first)) == 12 + 4 + 16
    assert render("{{ decrypt(k, v) }}", {"k": KEY, "v": first}) == "text"


def test_a_key_that_is_not_aes_is_named() -> None:
    with pytest.raises(TemplateError, match="base64-encoded AES key"):
        render("{{ encrypt('short', 'text') }}", {})


@pytest.mark.parametrize("call", ["errorLogs()", "fileSize('kestra:///n/x')"])
def test_functions_reading_the_execution_need_a_worker(call: str) -> None:
    with pytest.raises(TemplateError, match="needs a worker"):
        render("{{ " + call + " }}", {})
