// Executions list: filters (namespace, flow, state, date range, labels, text), paged on
// the server; the page re-reads itself while any execution shown is still going.
import { h, clear, fmtDate, fmtDuration, stateBadge, span, STATES, TERMINAL, pager } from "../util.js";
import { get, qs, enc } from "../api.js";
import { setQuery, showError } from "../app.js";

const SIZE = 25;
const LIVE_MS = 2000;

export async function render(main, _params, query) {
  const all = new URLSearchParams(location.search);
  const state = {
    namespace: query.namespace || "", flowId: query.flowId || "", q: query.q || "",
    state: all.getAll("state"), labels: all.getAll("labels"),
    startDate: query.startDate || "", endDate: query.endDate || "", page: Number(query.page || 1),
  };
  const input = (name, attrs) => h("input", { name, value: state[name], "aria-label": name, ...attrs,
    onchange: (e) => { state[name] = e.target.value; state.page = 1; load(); } });
  const states = h("select", { name: "state", multiple: true, size: 4, "aria-label": "state",
    onchange: (e) => { state.state = [...e.target.selectedOptions].map((o) => o.value); state.page = 1; load(); } },
  STATES.map((s) => h("option", { value: s, selected: state.state.includes(s) }, s)));
  const local = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : "");
  const dateInput = (name) => h("input", { type: "datetime-local", name, "aria-label": name, value: local(state[name]),
    onchange: (e) => { state[name] = e.target.value ? new Date(e.target.value).toISOString() : ""; state.page = 1; load(); } });
  const labels = h("input", { name: "labels", placeholder: "key:value, …", "aria-label": "labels", value: state.labels.join(", "),
    onchange: (e) => { state.labels = e.target.value.split(",").map((s) => s.trim()).filter(Boolean); state.page = 1; load(); } });
  const body = h("div");
  const namespaceSelect = h("select", { name: "namespace", "aria-label": "namespace", onchange: (e) => { state.namespace = e.target.value; state.page = 1; load(); } },
    h("option", { value: "" }, "All"), state.namespace ? h("option", { value: state.namespace, selected: true }, state.namespace) : null);
  // filled while the first page loads, not before
  get("/api/v1/flows/distinct-namespaces").then((names) => namespaceSelect.append(
    ...names.filter((n) => n !== state.namespace).map((n) => h("option", { value: n }, n))), () => {});
  clear(main,
    h("header.page-head", h("h1", "Executions")),
    h("div.filters",
      h("label", "Namespace", namespaceSelect),
      h("label", "Flow", input("flowId", { placeholder: "flow id" })),
      h("label", "Search", input("q", { type: "search", placeholder: "id, flow, namespace" })),
      h("label", "State", states),
      h("label", "Started after", dateInput("startDate")),
      h("label", "Started before", dateInput("endDate")),
      h("label", "Labels", labels)),
    body);

  let timer = null;
  let stopped = false;
  let generation = 0;
  async function load() {
    const mine = ++generation;
    clearTimeout(timer);
    const params = { namespace: state.namespace, flowId: state.flowId, q: state.q, state: state.state, labels: state.labels,
      startDate: state.startDate, endDate: state.endDate };
    setQuery({ ...params, page: state.page > 1 ? state.page : "" });
    let found;
    try {
      found = await get(`/api/v1/executions/search${qs({ ...params, page: state.page, size: SIZE })}`);
    } catch (error) {
      clear(body); showError(body, error); return;
    }
    if (mine !== generation) return; // a newer load is under way
    if (stopped) return;
    const rows = found.results.map((e) => {
      const { start, end } = span(e.state);
      return h("tr", { "data-execution": e.id },
        h("td", h("a.mono", { href: `/ui/executions/${enc(e.id)}` }, e.id)),
        h("td", h("a", { href: `/ui/flows/${enc(e.namespace)}/${enc(e.flowId)}` }, e.flowId)),
        h("td", e.namespace),
        h("td", stateBadge(e.state.current)),
        h("td", fmtDate(e.state.histories?.[0]?.date)),
        h("td", fmtDuration((Number.isNaN(end) ? Date.now() : end) - start)),
        h("td", (e.labels || []).map((l) => h("span.label", `${l.key}:${l.value}`))));
    });
    clear(body,
      found.total ? h("table.grid", h("thead", h("tr", ["Id", "Flow", "Namespace", "State", "Start", "Duration", "Labels"].map((t) => h("th", t)))), h("tbody", rows))
        : h("p.empty", "No execution matches these filters."),
      pager(found.total, state.page, SIZE, (page) => { state.page = page; load(); }));
    if (found.results.some((e) => !TERMINAL.has(e.state.current))) timer = setTimeout(load, LIVE_MS);
  }
  await load();
  return () => { stopped = true; clearTimeout(timer); };
}
