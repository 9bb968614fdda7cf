// Logs across executions: one page of `/api/v1/logs/search` (newest first, paged and
// filtered on the server: level, namespace and those below it, flow, text, date range).
import { h, clear, fmtDate, debounce, pager } from "../util.js";
import { get, qs, enc } from "../api.js";
import { setQuery, showError } from "../app.js";

const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
const SIZE = 100;

export async function render(main, _params, query) {
  const state = {
    q: query.q || "", namespace: query.namespace || "", flowId: query.flowId || "", minLevel: query.minLevel || "INFO",
    startDate: query.startDate || "", endDate: query.endDate || "", page: Number(query.page || 1),
  };
  const again = () => { state.page = 1; load(); };
  const reload = debounce(again, 300);
  const namespaceSelect = h("select", { "aria-label": "namespace", onchange: (e) => { state.namespace = e.target.value; again(); } },
    h("option", { value: "" }, "All"), state.namespace ? h("option", { value: state.namespace, selected: true }, state.namespace) : null);
  // filled while the first page loads, not before
  get("/api/v1/flows/distinct-namespaces").then((names) => namespaceSelect.append(
    ...names.filter((n) => n !== state.namespace).map((n) => h("option", { value: n }, n))), () => {});
  const local = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16) : "");
  const dateInput = (name, label) => h("input", { type: "datetime-local", name, "aria-label": label, value: local(state[name]),
    onchange: (e) => { state[name] = e.target.value ? new Date(e.target.value).toISOString() : ""; again(); } });
  const total = h("span.muted");
  const body = h("div");
  clear(main, h("header.page-head", h("h1", "Logs"), total),
    h("div.filters",
      h("label", "Search", h("input", { type: "search", value: state.q, "aria-label": "search logs", oninput: (e) => { state.q = e.target.value; reload(); } })),
      h("label", "Level", h("select", { "aria-label": "minimum level", onchange: (e) => { state.minLevel = e.target.value; again(); } }, LEVELS.map((l) => h("option", { value: l, selected: l === state.minLevel }, l)))),
      h("label", "Namespace", namespaceSelect),
      h("label", "Flow", h("input", { value: state.flowId, "aria-label": "flow", onchange: (e) => { state.flowId = e.target.value; again(); } })),
      h("label", "From", dateInput("startDate", "from")),
      h("label", "Before", dateInput("endDate", "before"))),
    body);
  let generation = 0;
  async function load() {
    const mine = ++generation;
    const params = { q: state.q, namespace: state.namespace, flowId: state.flowId, minLevel: state.minLevel,
      startDate: state.startDate, endDate: state.endDate };
    setQuery({ ...params, page: state.page > 1 ? state.page : "" });
    let found;
    try {
      found = await get(`/api/v1/logs/search${qs({ ...params, page: state.page, size: SIZE })}`);
    } catch (error) { clear(body); showError(body, error); return; }
    if (mine !== generation) return; // a newer load is under way
    total.textContent = `${found.total} line(s) match`;
    clear(body, h("div.log-list", { "aria-label": "logs" }, found.results.length ? found.results.map((l) => h("div.log-line", { "data-level": l.level },
      h("span.log-time", fmtDate(l.timestamp)), h("span.log-level", l.level),
      h("a.log-task", { href: `/ui/executions/${enc(l.executionId)}/logs` }, `${l.flowId}/${l.taskId || ""}`), h("span.log-msg", l.message)))
      : h("p.empty", "No log line matches.")),
    pager(found.total, state.page, SIZE, (page) => { state.page = page; load(); }));
  }
  await load();
}
