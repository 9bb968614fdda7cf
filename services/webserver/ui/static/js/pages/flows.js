// Flows list: search, namespace filter, paging on the server.
import { h, clear, fmtDate, debounce, pager } from "../util.js";
import { get, qs, enc } from "../api.js";
import { setQuery, showError } from "../app.js";

const SIZE = 25;

export async function render(main, _params, query) {
  const state = { q: query.q || "", namespace: query.namespace || "", page: Number(query.page || 1) };
  const body = h("div");
  const ns = h("select", { "aria-label": "namespace", onchange: (e) => { state.namespace = e.target.value; state.page = 1; load(); } },
    h("option", { value: "" }, "All namespaces"));
  // filled while the first page loads, not before
  get("/api/v1/flows/distinct-namespaces").then((names) => ns.append(...names.map((n) => h("option", { value: n, selected: n === state.namespace }, n))), () => {});
  const search = h("input", { type: "search", placeholder: "Search flows", value: state.q, "aria-label": "search flows",
    oninput: debounce((e) => { state.q = e.target.value; state.page = 1; load(); }, 250) });
  clear(main,
    h("header.page-head", h("h1", "Flows"), h("a.button.primary", { href: "/ui/flows/new" }, "Create a flow")),
    h("div.filters", search, ns), body);

  let generation = 0;
  async function load() {
    const mine = ++generation;
    setQuery({ q: state.q, namespace: state.namespace, page: state.page > 1 ? state.page : "" });
    let found;
    try {
      found = await get(`/api/v1/flows/search${qs({ q: state.q, namespace: state.namespace, page: state.page, size: SIZE, sort: "namespace:asc" })}`);
    } catch (error) {
      clear(body); showError(body, error); return;
    }
    if (mine !== generation) return; // a newer load is under way
    const rows = found.results.map((f) => h("tr", { "data-flow": `${f.namespace}.${f.id}` },
      h("td", h("a", { href: `/ui/flows/${enc(f.namespace)}/${enc(f.id)}` }, f.id)),
      h("td", f.namespace),
      h("td", (f.labels ? (Array.isArray(f.labels) ? f.labels.map((l) => `${l.key}:${l.value}`) : Object.entries(f.labels).map(([k, v]) => `${k}:${v}`)) : []).map((l) => h("span.label", l))),
      h("td", (f.triggers || []).length ? `${f.triggers.length}` : ""),
      h("td", f.disabled ? h("span.muted", "disabled") : "enabled"),
      h("td", `rev ${f.revision}`),
      h("td.muted", fmtDate(f.updated)),
      h("td", h("a.button.small", { href: `/ui/flows/${enc(f.namespace)}/${enc(f.id)}/execute` }, "Execute"))));
    clear(body,
      found.total ? h("table.grid", h("thead", h("tr", ["Id", "Namespace", "Labels", "Triggers", "Status", "Revision", "Updated", ""].map((t) => h("th", t)))), h("tbody", rows))
        : h("p.empty", "No flow matches. ", h("a", { href: "/ui/flows/new" }, "Create one")),
      pager(found.total, state.page, SIZE, (page) => { state.page = page; load(); }));
  }
  await load();
}
