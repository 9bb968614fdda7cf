"""The flow pages in Chromium: write a flow with a mistake in the editor, see the
problem at its line, fix it, save it; execute it from the generated form (a FILE input
included); watch the execution go live to SUCCESS; download its output file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import Server, shot

pytestmark = pytest.mark.slow

FLOW = """id: greet
namespace: ui.test
description: Greets, waits, and writes a file.
inputs:
  - id: name
    type: STRING
    defaults: world
  - id: times
    type: INT
    min: 1
  - id: doc
    type: FILE
  - id: when
    type: DATE
    required: false
  - id: color
    type: SELECT
    values: [red, green]
    defaults: green
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    {message_line}
  - id: pause_a_bit
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT3S
  - id: write
    type: io.kestra.plugin.scripts.shell.Commands
    outputFiles:
      - report.txt
    commands:
      - echo "report for {{{{ inputs.name }}}} x{{{{ inputs.times }}}}" > report.txt
"""
BROKEN = FLOW.format(message_line="mesage: hi")
FIXED = FLOW.format(message_line='message: "Hello {{ inputs.name }}, {{ inputs.times }} times"')


def replace_editor_text(page: Any, text: str) -> None:
    page.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    # insert_text types no keys, so the editor's auto-indent leaves the YAML as it is
    page.keyboard.insert_text(text)


def test_write_execute_and_follow_a_flow(page: Any, server: Server, tmp_path: Path) -> None:
    page.goto("/ui/flows/new")
    expect(page.locator(".cm-content")).to_be_visible()
    replace_editor_text(page, BROKEN)
    wrong_line = BROKEN.splitlines().index("    mesage: hi") + 1
    problem = page.locator(f"li.problem[data-line='{wrong_line}']")
    expect(problem).to_contain_text("unknown field `mesage`")
    expect(problem).to_contain_text(f"line {wrong_line}, column 5")
    # the editor marks the same line
    expect(page.locator(".cm-lintRange-error").first).to_be_visible()
    shot(page, "flow-editor-problem")
    # saving an invalid flow is refused with the API's words, line and column
    page.get_by_role("button", name="Create").click()
    expect(page.locator(".error-box")).to_contain_text(f"line {wrong_line}, column 5")

    replace_editor_text(page, FIXED)
    expect(page.locator(".problems .ok")).to_have_text("No problems")
    page.get_by_role("button", name="Create").click()
    expect(page).to_have_url(re.compile(r"/ui/flows/ui\.test/greet$"))
    assert server.request("GET", "/api/v1/flows/ui.test/greet")["revision"] == 1

    # an edit saved with Ctrl+S is a new revision, and the revisions tab shows the diff
    expect(page.locator(".cm-content")).to_contain_text("Greets, waits")
    page.locator(".cm-line", has_text="description:").click()
    page.keyboard.press("End")
    page.keyboard.insert_text(" Twice.")
    page.keyboard.press("Control+s")
    expect(page.locator(".editor-bar")).to_contain_text("saved revision 2")
    page.get_by_role("link", name="Revisions").click()
    changed = page.locator(".cm-mergeView .cm-changedLine")
    expect(changed.filter(has_text="Twice.")).to_have_count(1)
    expect(changed.filter(has_text="writes a file.")).to_have_count(2)
    # disabled, a flow cannot run; enabled again, it can
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("h1 .tag")).to_have_text("disabled")
    assert server.request("GET", "/api/v1/flows/ui.test/greet")["disabled"] is True
    page.get_by_role("button", name="Enable").click()
    expect(page.locator("h1 .tag")).to_have_count(0)
    assert server.request("GET", "/api/v1/flows/ui.test/greet")["disabled"] is False

    page.get_by_role("link", name="Topology").click()
    for task in ("hello", "pause_a_bit", "write"):
        expect(page.locator(f"svg.topology g[data-task='{task}']")).to_be_visible()
    shot(page, "flow-topology")

    page.locator("nav.tabs").get_by_role("link", name="Execute").click()
    form = page.locator("form.execute-form")
    expect(form.locator("input[name=name]")).to_have_value("world")
    expect(form.locator("select[name=color]")).to_have_value("green")
    # a value the server refuses is shown by its field
    form.locator("input[name=times]").fill("0")
    upload = tmp_path / "notes.txt"
    upload.write_text("uploaded from the browser\n")
    form.locator("input[name=doc]").set_input_files(str(upload))
    form.get_by_role("button", name="Execute").click()
    expect(form.locator(".field-error[data-for=times]")).not_to_be_empty()
    shot(page, "flow-execute-form")
    form.locator("input[name=name]").fill("Ada")
    form.locator("input[name=times]").fill("3")
    form.get_by_role("button", name="Execute").click()

    expect(page).to_have_url(re.compile(r"/ui/executions/[^/]+$"))
    execution_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.__same_page = true")
    # live: the page sees the execution run, then end, without being reloaded
    expect(
        page.locator(".gantt-row[data-task='pause_a_bit'][data-state='RUNNING']")
    ).to_be_visible()
    shot(page, "execution-gantt-running")
    expect(page.locator("h1 .badge")).to_have_text("SUCCESS", timeout=30_000)
    expect(page.locator(".gantt-row[data-task='write'][data-state='SUCCESS']")).to_be_visible()
    assert page.evaluate("window.__same_page") is True
    shot(page, "execution-gantt")

    page.locator("nav.tabs").get_by_role("link", name="Logs").click()
    expect(page.locator(".log-list")).to_contain_text("Hello Ada, 3 times")
    shot(page, "execution-logs")
    page.get_by_label("minimum level").select_option("WARN")
    expect(page.locator(".log-list")).to_have_text("No log line yet.")
    page.get_by_label("minimum level").select_option("DEBUG")
    expect(page.locator(".log-list")).to_contain_text("Hello Ada, 3 times")

    page.locator("nav.tabs").get_by_role("link", name="Topology").click()
    expect(page.locator("svg.topology g[data-task='write'][data-state='SUCCESS']")).to_be_visible()

    page.locator("nav.tabs").get_by_role("link", name="Inputs & outputs").click()
    inputs = page.locator(".card", has_text="Inputs")
    expect(inputs.locator("tr[data-key=doc] a")).to_have_text("notes.txt")
    outputs = page.locator(".card", has_text="Task outputs")
    link = outputs.get_by_role("link", name="report.txt")
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "report.txt"
    download.value.save_as(saved)
    assert saved.read_text() == "report for Ada x3\n"
    outputs.get_by_role("button", name="Preview").click()
    expect(outputs.locator("pre.preview")).to_have_text("report for Ada x3\n")
    shot(page, "execution-outputs")
    assert server.request("GET", f"/api/v1/executions/{execution_id}")["inputs"]["times"] == 3


def test_a_gantt_of_hundreds_of_task_runs_draws_the_rows_in_view(page: Any, server: Server) -> None:
    values = ", ".join(str(i) for i in range(1, 201))
    server.deploy(
        f"""id: many
namespace: ui.test
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: [{values}]
    tasks:
      - id: echo
        type: io.kestra.plugin.core.debug.Return
        format: "{{{{ taskrun.value }}}}"
"""
    )
    created = server.request("POST", "/api/v1/executions/ui.test/many", b"")
    server.wait_execution(created["id"], {"SUCCESS"}, timeout=120)
    page.goto(f"/ui/executions/{created['id']}")
    gantt = page.locator(".gantt[data-rows='201']")
    expect(gantt).to_be_visible()
    drawn = gantt.locator(".gantt-row").count()
    assert 0 < drawn < 120, f"{drawn} rows drawn for 201 task runs"
    # the loop values show, and scrolling reaches the last one
    expect(gantt.locator(".gantt-row .value", has_text="200")).to_have_count(0)
    gantt.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    expect(gantt.locator(".gantt-row", has_text="200")).to_be_visible()
    shot(page, "execution-gantt-many")


EVERY_TYPE = """id: typed
namespace: ui.test
inputs:
  - {id: s, type: STRING}
  - {id: i, type: INT}
  - {id: f, type: FLOAT}
  - {id: b, type: BOOLEAN}
  - {id: dt, type: DATETIME}
  - {id: d, type: DATE}
  - {id: t, type: TIME}
  - {id: dur, type: DURATION}
  - {id: j, type: JSON}
  - {id: y, type: YAML}
  - {id: u, type: URI}
  - {id: e, type: EMAIL}
  - {id: secret, type: SECRET}
  - {id: sel, type: SELECT, values: [a, b]}
  - {id: en, type: ENUM, values: [x, y]}
  - {id: multi, type: MULTISELECT, values: [one, two, three]}
  - {id: arr, type: ARRAY, itemType: INT}
  - {id: file, type: FILE}
tasks:
  - id: ok
    type: io.kestra.plugin.core.debug.Return
    format: "{{ inputs.s }}"
"""


def test_the_execute_form_sends_every_input_type(page: Any, server: Server, tmp_path: Path) -> None:
    server.deploy(EVERY_TYPE)
    page.goto("/ui/flows/ui.test/typed/execute")
    form = page.locator("form.execute-form")
    form.locator("[name=s]").fill("text")
    form.locator("[name=i]").fill("42")
    form.locator("[name=f]").fill("2.5")
    form.locator("[name=b]").select_option("true")
    form.locator("[name=dt]").fill("2026-03-04T05:06:07")
    form.locator("[name=d]").fill("2026-03-04")
    form.locator("[name=t]").fill("13:45:30")
    form.locator("[name=dur]").fill("PT1H30M")
    form.locator("[name=j]").fill('{"k": [1, 2]}')
    form.locator("[name=y]").fill("k: v\nn: 3")
    form.locator("[name=u]").fill("https://example.com/x")
    form.locator("[name=e]").fill("ada@example.com")
    form.locator("[name=secret]").fill("hush")
    form.locator("[name=sel]").select_option("b")
    form.locator("[name=en]").select_option("y")
    form.locator("[name=multi]").select_option(["one", "three"])
    form.locator("[name=arr]").fill("1\n2\n3")
    upload = tmp_path / "data.csv"
    upload.write_text("a,b\n")
    form.locator("[name=file]").set_input_files(str(upload))
    form.get_by_role("button", name="Execute").click()
    expect(page).to_have_url(re.compile(r"/ui/executions/[^/?]+$"))
    execution_id = page.url.rsplit("/", 1)[1]
    inputs = server.request("GET", f"/api/v1/executions/{execution_id}")["inputs"]
    file_uri = inputs.pop("file")
    assert file_uri.startswith("kestra:///ui.test/")
    assert file_uri.endswith("/data.csv")
    assert inputs.pop("secret") not in (None, "")
    assert inputs == {
        "s": "text",
        "i": 42,
        "f": 2.5,
        "b": True,
        # the browser runs in UTC (the fixture's context), so local time is UTC
        "dt": "2026-03-04T05:06:07Z",
        "d": "2026-03-04",
        "t": "13:45:30",
        "dur": "PT1H30M",
        "j": {"k": [1, 2]},
        "y": {"k": "v", "n": 3},
        "u": "https://example.com/x",
        "e": "ada@example.com",
        "sel": "b",
        "en": "y",
        "multi": ["one", "three"],
        "arr": [1, 2, 3],
    }
