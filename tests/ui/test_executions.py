"""The execution actions and the other pages in Chromium: kill, restart, resume, replay
from a task run, the filtered executions list, a KV pair edited, a trigger disabled,
basic authentication; a screenshot of every page."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from tests.ui.conftest import Server, shot, start_server, stop_server

pytestmark = pytest.mark.slow

NS = "ui.ops"


def flow(flow_id: str, tasks: str, extra: str = "") -> str:
    return f"id: {flow_id}\nnamespace: {NS}\n{extra}tasks:\n{tasks}"


SLEEP = flow(
    "sleepy", "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT60S\n"
)
PAUSE = flow(
    "approval",
    """  - id: approve
    type: io.kestra.plugin.core.flow.Pause
    onResume:
      - id: reason
        type: STRING
  - id: after
    type: io.kestra.plugin.core.log.Log
    message: "approved because {{ outputs.approve.onResume.reason }}"
""",
)
TWO_STEPS = flow(
    "two_steps",
    """  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: one
  - id: second
    type: io.kestra.plugin.core.log.Log
    message: "second after {{ outputs.first.value }}"
""",
)
SCHEDULED = flow(
    "nightly",
    "  - id: noop\n    type: io.kestra.plugin.core.debug.Return\n    format: x\n",
    "triggers:\n  - id: every_night\n    type: io.kestra.plugin.core.trigger.Schedule\n"
    "    cron: '0 2 * * *'\n",
)


def fail_once(marker: Path) -> str:
    # fails the first time, succeeds once the marker exists: a restart then succeeds
    return flow(
        "flaky",
        f"""  - id: try_it
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - if [ -f {marker} ]; then echo fine; else touch {marker}; exit 3; fi
""",
    )


def start(server: Server, flow_id: str, **labels: str) -> str:
    query = "&".join(f"labels={k}:{v}" for k, v in labels.items())
    created = server.request("POST", f"/api/v1/executions/{NS}/{flow_id}?{query}", b"")
    execution_id: str = created["id"]
    return execution_id


def test_kill_restart_resume_replay(page: Any, server: Server, tmp_path: Path) -> None:
    for source in (SLEEP, PAUSE, TWO_STEPS, fail_once(tmp_path / "marker")):
        server.deploy(source)

    sleeping = start(server, "sleepy")
    server.wait_execution(sleeping, {"RUNNING"})
    page.goto(f"/ui/executions/{sleeping}")
    expect(page.locator("h1 .badge")).to_have_text("RUNNING")
    page.get_by_role("button", name="Kill").click()
    expect(page.locator("h1 .badge")).to_have_text("KILLED", timeout=20_000)

    flaky = start(server, "flaky")
    server.wait_execution(flaky, {"FAILED"})
    page.goto(f"/ui/executions/{flaky}")
    expect(page.locator("h1 .badge")).to_have_text("FAILED")
    shot(page, "execution-failed")
    page.get_by_role("button", name="Restart").click()
    expect(page.locator("h1 .badge")).to_have_text("SUCCESS", timeout=20_000)
    attempts = server.request("GET", f"/api/v1/executions/{flaky}")["taskRunList"][0]["attempts"]
    assert len(attempts) == 2
    # a task run's attempts are shown when its name is clicked
    page.locator(".gantt-row[data-task='try_it'] .gantt-name a").click()
    detail = page.locator(".run-detail")
    expect(detail.locator("ol").first.locator("li")).to_have_count(2)
    expect(detail.locator("ol").first.locator(".badge")).to_have_text(["FAILED", "SUCCESS"])
    shot(page, "execution-task-run")

    paused = start(server, "approval")
    server.wait_execution(paused, {"PAUSED"})
    page.goto(f"/ui/executions/{paused}")
    expect(page.locator("h1 .badge")).to_have_text("PAUSED")
    page.locator("form.resume input[name=reason]").fill("looks good")
    shot(page, "execution-paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("h1 .badge")).to_have_text("SUCCESS", timeout=20_000)
    page.locator("nav.tabs").get_by_role("link", name="Logs").click()
    expect(page.locator(".log-list")).to_contain_text("approved because looks good")

    done = start(server, "two_steps")
    source = server.wait_execution(done, {"SUCCESS"})
    page.goto(f"/ui/executions/{done}")
    expect(page.locator("h1 .badge")).to_have_text("SUCCESS")
    page.locator(".gantt-row[data-task='second']").get_by_role(
        "button", name="Replay from here"
    ).click()
    expect(page).not_to_have_url(re.compile(done))
    replayed = page.url.rsplit("/", 1)[1].split("?")[0]
    expect(page.locator("h1 .badge")).to_have_text("SUCCESS", timeout=20_000)
    # the copy links back to the execution it was replayed from
    expect(page.get_by_role("link", name=done)).to_be_visible()
    copy = server.request("GET", f"/api/v1/executions/{replayed}")
    assert copy["id"] != done
    first = next(r for r in copy["taskRunList"] if r["taskId"] == "first")
    original = next(r for r in source["taskRunList"] if r["taskId"] == "first")
    # replayed from `second`: `first` is carried over as it was, not run again
    assert first["outputs"] == original["outputs"] == {"value": "one"}

    expect(page.locator("form.labels-form")).to_be_hidden()
    page.get_by_role("button", name="Labels", exact=True).click()
    page.locator("form.labels-form input[name=labels]").fill("env:prod, team:ops")
    page.get_by_role("button", name="Save labels").click()
    expect(page.locator("header .label:not(.system)")).to_have_text(["env:prod", "team:ops"])
    # the correlation id every execution carries is shown apart, not editable
    expect(page.locator("header .label.system")).to_have_text(
        [re.compile(r"^system\.correlationId:")]
    )
    labels = server.request("GET", f"/api/v1/executions/{replayed}")["labels"]
    # saved once each: the form does not send the system label back
    assert [lb["key"] for lb in labels] == ["env", "team", "system.correlationId"]
    assert labels[:2] == [{"key": "env", "value": "prod"}, {"key": "team", "value": "ops"}]


def test_executions_list_filters(page: Any, server: Server) -> None:
    server.deploy(TWO_STEPS)
    server.deploy(
        flow("other", "  - id: x\n    type: io.kestra.plugin.core.debug.Return\n    format: y\n")
    )
    ids = [start(server, "two_steps", team="blue") for _ in range(3)]
    ids += [start(server, "other", team="red") for _ in range(2)]
    for execution_id in ids:
        server.wait_execution(execution_id, {"SUCCESS"})

    page.goto("/ui/executions")
    rows = page.locator("table.grid tbody tr")
    expect(rows).to_have_count(5)
    shot(page, "executions")
    page.locator("input[name=flowId]").fill("other")
    page.locator("input[name=flowId]").press("Enter")
    expect(rows).to_have_count(2)
    expect(page).to_have_url(re.compile(r"flowId=other"))
    page.locator("input[name=flowId]").fill("")
    page.locator("input[name=flowId]").press("Enter")
    expect(rows).to_have_count(5)
    page.locator("input[name=labels]").fill("team:blue")
    page.locator("input[name=labels]").press("Enter")
    expect(rows).to_have_count(3)
    page.locator("select[name=state]").select_option(["FAILED"])
    expect(page.locator("p.empty")).to_contain_text("No execution matches")
    page.locator("select[name=state]").select_option(["SUCCESS"])
    expect(rows).to_have_count(3)
    # the filters are in the address: a reload shows the same list
    page.reload()
    expect(rows).to_have_count(3)
    # a date range: none started after 2099, all of them before
    page.locator("input[name=startDate]").fill("2099-01-01T00:00")
    expect(page.locator("p.empty")).to_contain_text("No execution matches")
    page.locator("input[name=startDate]").fill("")
    page.locator("input[name=endDate]").fill("2099-01-01T00:00")
    expect(rows).to_have_count(3)
    expect(page).to_have_url(re.compile(r"endDate=2099-01-01T00%3A00%3A00"))

    # a running execution's state changes in the list without a reload
    server.deploy(
        flow(
            "brief", "  - id: nap\n    type: io.kestra.plugin.core.flow.Sleep\n    duration: PT4S\n"
        )
    )
    page.goto("/ui/executions?flowId=brief")
    brief = start(server, "brief")
    page.reload()
    row = page.locator(f"tr[data-execution='{brief}'] .badge")
    expect(row).to_have_text(re.compile("CREATED|RUNNING"))
    page.evaluate("window.__same_page = true")
    expect(row).to_have_text("SUCCESS", timeout=20_000)
    assert page.evaluate("window.__same_page") is True


def test_kv_triggers_and_every_page(page: Any, server: Server) -> None:
    server.deploy(SCHEDULED)
    server.deploy(TWO_STEPS)
    server.wait_execution(start(server, "two_steps"), {"SUCCESS"})
    server.request("PUT", f"/api/v1/namespaces/{NS}/kv/colour", b'"blue"')

    page.goto(f"/ui/namespaces/{NS}")
    row = page.locator("tr[data-key=colour]")
    expect(row.locator("code")).to_have_text("blue")
    row.get_by_role("button", name="Edit").click()
    expect(page.locator("input[name=key]")).to_have_value("colour")
    expect(page.locator("textarea[name=value]")).to_have_value('"blue"')
    # text that is not JSON is stored as the text itself
    page.locator("textarea[name=value]").fill("green")
    page.get_by_role("button", name="Save").click()
    expect(row.locator("code")).to_have_text("green")
    value = server.request("GET", f"/api/v1/namespaces/{NS}/kv/colour")
    assert value == {"type": "STRING", "value": "green"}
    page.locator("input[name=key]").fill("limit")
    page.locator("textarea[name=value]").fill("42")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("tr[data-key=limit]")).to_contain_text("NUMBER")
    shot(page, "namespace-kv")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr[data-key=limit]").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-key=limit]")).to_have_count(0)

    page.goto("/ui/triggers")
    trigger = page.locator(f"tr[data-trigger='{NS}.nightly.every_night']")
    expect(trigger).to_contain_text("enabled")
    trigger.get_by_label("backfill start").fill("2026-01-01T00:00")
    trigger.get_by_label("backfill end").fill("2026-01-03T23:00")
    trigger.get_by_role("button", name="Backfill").click()
    expect(page.locator(".toast").last).to_have_text("Backfill created 3 execution(s)")
    backfilled = server.request("GET", f"/api/v1/executions/search?namespace={NS}&flowId=nightly")
    assert backfilled["total"] == 3
    trigger.get_by_role("button", name="Disable").click()
    expect(trigger).to_contain_text("disabled")
    shot(page, "triggers")
    found = server.request("GET", f"/api/v1/triggers/search?namespace={NS}")
    assert found["results"][0]["triggerContext"]["disabled"] is True

    for path, name, ready in (
        ("/ui/", "dashboard", "canvas"),
        ("/ui/flows", "flows", "table.grid"),
        ("/ui/logs", "logs", ".log-line"),
        ("/ui/namespaces", "namespaces", "table.grid"),
        ("/ui/instance", "instance", "tr[data-service]"),
        (f"/ui/flows/{NS}/two_steps/revisions", "flow-revisions", ".cm-mergeView"),
    ):
        page.goto(path)
        expect(page.locator(ready).first).to_be_visible()
        shot(page, name)
    # logs across executions: searched, and linked to their execution
    page.goto("/ui/logs")
    page.get_by_label("search logs").fill("second after")
    expect(page.locator(".log-line").first).to_contain_text("second after one")
    page.get_by_label("search logs").fill("no such words")
    expect(page.locator(".log-list")).to_have_text("No log line matches.")
    # a flow deleted from its page is gone
    page.goto(f"/ui/flows/{NS}/two_steps")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/ui/flows$"))
    with pytest.raises(urllib.error.HTTPError) as gone:
        server.request("GET", f"/api/v1/flows/{NS}/two_steps")
    assert gone.value.code == 404
    gone.value.close()
    # the instance page lists the live components and the queues
    page.goto("/ui/instance")
    for kind in ("executor", "worker", "scheduler", "webserver"):
        expect(page.locator(f".card[data-kind={kind}] .stat")).to_have_text(re.compile(r"[1-9]"))
    expect(page.locator(".card[data-queue=worker] .stat")).to_have_text(re.compile(r"\d+"))


def test_basic_authentication(browser: Any, tmp_path: Path) -> None:
    users = '[{username: ada, password: "s3cret"}]'
    server = start_server(tmp_path, {"RUNTIME_WEBSERVER_USERS": users})
    try:
        # The browser is challenged (a person gets its credentials dialog); with nothing
        # to answer, the page is refused.
        refused = browser.new_context(base_url=server.url)
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            refused.new_page().goto("/ui/flows")
        answer = refused.request.get("/api/v1/flows/search")
        assert answer.status == 401
        assert answer.headers["www-authenticate"].startswith("Basic")
        assert "authentication required" in answer.json()["message"]
        refused.close()

        wrong = browser.new_context(
            base_url=server.url, http_credentials={"username": "ada", "password": "nope"}
        )
        denied = wrong.new_page()
        assert denied.goto("/ui/").status == 401
        # the API's own words, not a blank page
        expect(denied.locator("body")).to_contain_text("authentication required")
        wrong.close()

        allowed = browser.new_context(
            base_url=server.url, http_credentials={"username": "ada", "password": "s3cret"}
        )
        page = allowed.new_page()
        page.goto("/ui/executions")
        # the page's own API calls carry the credentials the browser was given
        expect(page.locator("h1")).to_have_text("Executions")
        expect(page.locator("p.empty")).to_contain_text("No execution matches")
        # the live follows (EventSource) and downloads carry them too
        server.auth = ("ada", "s3cret")
        server.deploy(TWO_STEPS)
        execution_id = start(server, "two_steps")
        page.goto(f"/ui/executions/{execution_id}/logs")
        expect(page.locator("h1 .badge")).to_have_text("SUCCESS", timeout=20_000)
        expect(page.locator(".log-list")).to_contain_text("second after one")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download").click()
        assert "second after one" in Path(download.value.path()).read_text()
        allowed.close()
        server.auth = None
        with pytest.raises(urllib.error.HTTPError) as refused_api:
            server.request("GET", "/api/v1/flows/search")
        assert refused_api.value.code == 401
        refused_api.value.close()
    finally:
        stop_server(server)
