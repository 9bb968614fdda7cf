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


def test_file_uri_names_a_namespace_file_and_refuses_climbing_out() -> None:
    variables = {"flow": {"id": "f", "namespace": "team.data"}, "name": "in/a b.csv"}
    assert render("{{ fileURI(name) }}", variables) == "kestra:///team.data/_files/in/a%20b.csv"
    assert render("{{ fileURI('/x.sql') }}", variables) == "kestra:///team.data/_files/x.sql"
    with pytest.raises(TemplateError, match=r"must not contain '\.\./'"):
        render("{{ fileURI('sub/../../secret') }}", variables)


def test_tasks_with_state_lists_runs_and_loop_values_in_that_state() -> None:
    tasks = {
        "a": {"state": "FAILED"},
        "b": {"state": "SUCCESS"},
        "each": {"x": {"state": "FAILED"}, "y": {"state": "SUCCESS"}},
    }
    assert render("{{ tasksWithState() }}", {"tasks": tasks}) == (
        '[{"taskId":"a","state":"FAILED"},{"taskId":"each","state":"FAILED","value":"x"}]'
    )
    assert render("{{ tasksWithState('success') | length }}", {"tasks": tasks}) == "2"
    assert render("{{ tasksWithState('KILLED') }}", {"tasks": tasks}) == "[]"


def test_from_ion_reads_one_value_as_plain_data() -> None:
    source = "{{ fromIon(v) }}"
    ion = (
        '{at: 2024-04-21T23:00:00.000Z, name: "Main_Page", n: 109787, d: 2.50, s: sym, '
        "l: [a::1, null]}"
    )
    assert render(source, {"v": ion}) == (
        '{"at":"2024-04-21T23:00:00.000Z","name":"Main_Page","n":109787,"d":2.5,'
        '"s":"sym","l":[1,null]}'
    )
    assert render("{{ fromIon(null) }}", {}) == ""
    with pytest.raises(TemplateError, match="invalid Ion"):
        render("{{ fromIon('{not: ion') }}", {})
    with pytest.raises(TemplateError, match="expects an argument 'ion'"):
        render("{{ fromIon() }}", {})
    with pytest.raises(TemplateError, match="type string"):
        render("{{ fromIon(3) }}", {})
