"""The Logs page in Chromium: a server-side search over every execution's logs (more
executions than the page ever read one by one), paged, by level, namespace, flow, text
and date range, each line linked to its execution."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import Server, shot

pytestmark = pytest.mark.slow

RUNS = 25
CHATTY = (
    """id: chatty
namespace: ui.logs
tasks:
"""
    + "".join(
        f"""  - id: say{n}
    type: io.kestra.plugin.core.log.Log
    message: "line {n} of {{{{ execution.id }}}}"
"""
        for n in range(4)
    )
    + """  - id: worry
    type: io.kestra.plugin.core.log.Log
    level: WARN
    message: "careful in {{ execution.id }}"
"""
)
ELSEWHERE = """id: elsewhere
namespace: ui.other
tasks:
  - id: only
    type: io.kestra.plugin.core.log.Log
    message: from another namespace
"""


def test_logs_page_searches_every_execution_on_the_server(page: Any, server: Server) -> None:
    server.deploy(CHATTY)
    server.deploy(ELSEWHERE)
    ids = [
        server.request("POST", "/api/v1/executions/ui.logs/chatty", b"")["id"] for _ in range(RUNS)
    ]
    other = server.request("POST", "/api/v1/executions/ui.other/elsewhere", b"")["id"]
    for execution_id in [*ids, other]:
        server.wait_execution(execution_id, {"SUCCESS"})

    page.goto("/ui/logs")
    # 25 x 5 lines of INFO and above, plus one, plus each execution's "Flow started"
    # (26): two pages of 100
    expect(page.locator("header.page-head")).to_contain_text("152 line(s) match")
    expect(page.locator(".log-line")).to_have_count(100)
    expect(page.locator(".pager")).to_contain_text("Page 1 of 2 · 152 in all")
    shot(page, "logs-search")
    page.get_by_label("next page").click()
    expect(page.locator(".log-line")).to_have_count(52)
    expect(page).to_have_url(re.compile(r"page=2"))

    # the first execution's lines: past the 20 latest executions the page used to read
    page.get_by_label("search logs").fill(ids[0])
    expect(page.locator(".log-line")).to_have_count(5)
    expect(page.locator(".pager")).to_contain_text("Page 1 of 1 · 5 in all")
    page.get_by_label("minimum level").select_option("WARN")
    expect(page.locator(".log-line")).to_have_count(1)
    expect(page.locator(".log-line")).to_contain_text(f"careful in {ids[0]}")
    expect(page.locator(".log-line .log-level")).to_have_text("WARN")
    page.get_by_label("search logs").fill("")
    expect(page.locator(".log-line")).to_have_count(RUNS)

    # by namespace (and those below it), by flow
    page.get_by_label("minimum level").select_option("INFO")
    page.get_by_label("namespace").select_option("ui.other")
    expect(page.locator(".log-line")).to_have_count(2)
    expect(page.locator(".log-line", has_text="from another namespace")).to_have_count(1)
    page.get_by_label("namespace").select_option("")
    page.get_by_label("flow").fill("elsewhere")
    page.get_by_label("flow").dispatch_event("change")
    expect(page.locator(".log-line")).to_have_count(2)
    page.get_by_label("flow").fill("")
    page.get_by_label("flow").dispatch_event("change")
    expect(page.locator(".pager")).to_contain_text("152 in all")

    # a date range from the future holds nothing; one around now holds everything
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("from").fill(later)
    expect(page.locator(".log-list")).to_have_text("No log line matches.")
    earlier = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("from").fill(earlier)
    page.get_by_label("before").fill(later)
    expect(page.locator(".pager")).to_contain_text("152 in all")

    # a line opens its execution's logs
    page.get_by_label("search logs").fill("from another namespace")
    expect(page.locator(".log-line")).to_have_count(1)
    page.locator(".log-line a.log-task").click()
    expect(page).to_have_url(re.compile(rf"/ui/executions/{other}/logs$"))
