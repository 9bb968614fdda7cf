// One flow: YAML editor with located problems, topology, revisions with a diff,
// triggers, its executions, enable/disable, and the Execute form.
import { h, clear, fmtDate, toast, stateBadge } from "../util.js";
import { api, get, enc, qs } from "../api.js";
import { navigate, showError } from "../app.js";
import { executeForm } from "./execute_form.js";

const TEMPLATE = `id: hello
namespace: company.team

inputs:
  - id: name
    type: STRING
    defaults: world

tasks:
  - id: say_hello
    type: io.kestra.plugin.core.log.Log
    message: "Hello {{ inputs.name }}"
`;

const TABS = [["editor", "Editor"], ["topology", "Topology"], ["executions", "Executions"], ["revisions", "Revisions"], ["triggers", "Triggers"], ["execute", "Execute"]];

export async function render(main, params) {
  if (params.create) return editorPage(main, null, TEMPLATE);
  const base = `/api/v1/flows/${enc(params.namespace)}/${enc(params.id)}`;
  const flow = await get(`${base}?source=true`);
  const href = (tab) => `/ui/flows/${enc(flow.namespace)}/${enc(flow.id)}${tab === "editor" ? "" : `/${tab}`}`;
  const toggle = h("button", { onclick: async () => {
    const action = flow.disabled ? "enable" : "disable";
    try {
      await api("POST", `/api/v1/flows/${action}/by-ids`, { json: [{ namespace: flow.namespace, id: flow.id }] });
      toast(`Flow ${action}d`);
      navigate(location.pathname, { replace: true });
    } catch (error) { showError(null, error); }
  } }, flow.disabled ? "Enable" : "Disable");
  const remove = h("button", { onclick: async () => {
    if (!confirm(`Delete the flow ${flow.namespace}.${flow.id}? Its executions stay.`)) return;
    try {
      await api("DELETE", base);
      toast(`Flow ${flow.namespace}.${flow.id} deleted`);
      navigate("/flows");
    } catch (error) { showError(null, error); }
  } }, "Delete");
  const content = h("section.tab-body");
  clear(main,
    h("header.page-head",
      h("div", h("div.crumbs", h("a", { href: "/ui/flows" }, "Flows"), " / ", flow.namespace),
        h("h1", flow.id, flow.disabled ? h("span.tag", "disabled") : null),
        flow.description ? h("p.muted", flow.description) : null),
      h("div.actions", toggle, remove, h("a.button.primary", { href: href("execute") }, "Execute"))),
    h("nav.tabs", TABS.map(([tab, label]) => h("a", { href: href(tab), class: tab === params.tab ? "active" : "" }, label))),
    content);
  switch (params.tab) {
    case "topology":
      {
        const { renderTopology, loadLayout } = await import("../topology.js");
        await loadLayout();
        content.append(h("div.graph-box", renderTopology(flow)));
      }
      return;
    case "executions":
      return flowExecutions(content, flow);
    case "revisions":
      return revisions(content, base, flow);
    case "triggers":
      return triggers(content, flow);
    case "execute":
      return executeForm(content, flow);
    default:
      return editorPage(content, flow, flow.source);
  }
}

// CodeMirror is loaded by the pages that show an editor only.
async function editorPage(target, flow, source) {
  const { flowEditor } = await import("../editor.js");
  const problems = h("ul.problems", { "aria-label": "problems" });
  const status = h("span.muted", "");
  let text = source;
  const save = h("button.primary", { onclick: onSave }, flow ? "Save" : "Create");
  const host = h("div.editor-host");
  const error = h("div");
  const layout = h("div.editor-layout",
    h("div.editor-bar", save, status, h("span.spacer"), h("span.muted", "Problems are checked by the server as you type · Ctrl+S saves")),
    error, host, h("h3", "Problems"), problems);
  if (!flow) clear(target, h("header.page-head", h("h1", "New flow")), layout);
  else target.append(layout);
  const view = flowEditor(host, source, {
    onChange: (t) => { text = t; status.textContent = "unsaved changes"; },
    onSave: () => onSave(),
    onProblems: (list) => {
      clear(problems, list.length ? list.map((p) => h("li.problem", { "data-line": p.line },
        h("a", { href: "#", onclick: (e) => { e.preventDefault(); goto(p.line); } }, `line ${p.line}, column ${p.column}`), ": ",
        p.path ? h("code", p.path) : null, " ", p.message, p.hint ? h("span.muted", ` (${p.hint})`) : null))
        : h("li.ok", "No problems"));
    },
  });
  function goto(line) {
    const target = view.state.doc.line(Math.min(line, view.state.doc.lines));
    view.dispatch({ selection: { anchor: target.from }, scrollIntoView: true });
    view.focus();
  }
  async function onSave() {
    clear(error);
    try {
      const saved = flow
        ? await api("PUT", `/api/v1/flows/${enc(flow.namespace)}/${enc(flow.id)}`, { text })
        : await api("POST", "/api/v1/flows", { text });
      toast(`Saved ${saved.namespace}.${saved.id}, revision ${saved.revision}`);
      status.textContent = `saved revision ${saved.revision}`;
      if (!flow) navigate(`/flows/${enc(saved.namespace)}/${enc(saved.id)}`);
    } catch (e) {
      showError(error, e);
    }
  }
  return () => view.destroy();
}

async function flowExecutions(target, flow) {
  const found = await get(`/api/v1/executions/search${qs({ namespace: flow.namespace, flowId: flow.id, size: 25 })}`);
  target.append(
    h("p", h("a", { href: `/ui/executions?namespace=${enc(flow.namespace)}&flowId=${enc(flow.id)}` }, `All ${found.total} executions, with filters →`)),
    h("table.grid", h("thead", h("tr", ["Id", "State", "Start", "Revision"].map((t) => h("th", t)))),
      h("tbody", found.results.map((e) => h("tr",
        h("td", h("a", { href: `/ui/executions/${enc(e.id)}` }, e.id)), h("td", stateBadge(e.state.current)),
        h("td", fmtDate(e.state.histories?.[0]?.date)), h("td", e.flowRevision))))));
}

async function revisions(target, base, flow) {
  const list = (await get(`${base}/revisions`)).sort((a, b) => b.revision - a.revision);
  const pick = (name, selected) => h("select", { name, "aria-label": name },
    list.map((r) => h("option", { value: r.revision, selected: r.revision === selected }, `revision ${r.revision} · ${fmtDate(r.updated)}`)));
  const left = pick("left", list[Math.min(1, list.length - 1)].revision);
  const right = pick("right", list[0].revision);
  const box = h("div.diff-box");
  let view = null;
  async function show() {
    view?.destroy();
    clear(box);
    const a = list.find((r) => r.revision === Number(left.value));
    const b = list.find((r) => r.revision === Number(right.value));
    const { diffView } = await import("../editor.js");
    view = await diffView(box, a.source, b.source);
  }
  left.onchange = show;
  right.onchange = show;
  target.append(h("div.filters", "Compare ", left, " with ", right, h("span.muted", ` · ${list.length} revision(s), latest ${flow.revision}`)), box);
  await show();
  return () => view?.destroy();
}

async function triggers(target, flow) {
  const found = await get(`/api/v1/triggers/search${qs({ namespace: flow.namespace, flowId: flow.id, size: 100 })}`);
  const { triggersTable } = await import("./triggers.js");
  target.append((flow.triggers || []).length ? triggersTable(found.results, () => triggers(clear(target), flow))
    : h("p.empty", "This flow has no trigger."));
}
