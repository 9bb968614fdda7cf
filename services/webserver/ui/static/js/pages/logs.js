// Logs across executions. The API reads logs per execution, so this page reads the
// executions matching the filters (newest first, a page at a time) and searches the
// logs of each, with a level filter applied by the server.
import { h, clear, fmtDate, debounce } from "../util.js";
import { get, qs, enc } from "../api.js";
import { setQuery, showError } from "../app.js";

const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
const EXECUTIONS = 20;

export async function render(main, _params, query) {
  const state = { q: query.q || "", namespace: query.namespace || "", flowId: query.flowId || "", minLevel: query.minLevel || "INFO" };
  const namespaces = await get("/api/v1/flows/distinct-namespaces").catch(() => []);
  const body = h("div");
  const reload = debounce(() => load(), 300);
  clear(main, h("header.page-head", h("h1", "Logs"), h("span.muted", `from the latest ${EXECUTIONS} executions matching the filters`)),
    h("div.filters",
      h("label", "Search", h("input", { type: "search", value: state.q, "aria-label": "search logs", oninput: (e) => { state.q = e.target.value; reload(); } })),
      h("label", "Level", h("select", { "aria-label": "minimum level", onchange: (e) => { state.minLevel = e.target.value; load(); } }, LEVELS.map((l) => h("option", { value: l, selected: l === state.minLevel }, l)))),
      h("label", "Namespace", h("select", { "aria-label": "namespace", onchange: (e) => { state.namespace = e.target.value; load(); } }, h("option", { value: "" }, "All"), namespaces.map((n) => h("option", { value: n, selected: n === state.namespace }, n)))),
      h("label", "Flow", h("input", { value: state.flowId, "aria-label": "flow", onchange: (e) => { state.flowId = e.target.value; load(); } }))),
    body);
  let generation = 0;
  async function load() {
    const mine = ++generation;
    setQuery(state);
    try {
      const found = await get(`/api/v1/executions/search${qs({ namespace: state.namespace, flowId: state.flowId, size: EXECUTIONS })}`);
      const lists = await Promise.all(found.results.map((e) => get(`/api/v1/logs/${enc(e.id)}${qs({ minLevel: state.minLevel })}`)));
      if (mine !== generation) return;
      const needle = state.q.toLowerCase();
      const lines = lists.flat().filter((l) => !needle || l.message.toLowerCase().includes(needle))
        .sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1)).slice(0, 2000);
      clear(body, h("div.log-list", { "aria-label": "logs" }, lines.length ? lines.map((l) => h("div.log-line", { "data-level": l.level },
        h("span.log-time", fmtDate(l.timestamp)), h("span.log-level", l.level),
        h("a.log-task", { href: `/ui/executions/${enc(l.executionId)}/logs` }, `${l.flowId}/${l.taskId || ""}`), h("span.log-msg", l.message)))
        : h("p.empty", "No log line matches.")));
    } catch (error) { clear(body); showError(body, error); }
  }
  await load();
}
