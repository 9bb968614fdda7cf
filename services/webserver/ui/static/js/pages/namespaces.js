// Namespaces and their KV pairs: view, add, edit, delete.
import { h, clear, fmtDate, toast, pretty } from "../util.js";
import { api, get, enc } from "../api.js";
import { showError } from "../app.js";

export async function render(main, params) {
  if (!params.namespace) {
    const found = await get("/api/v1/namespaces/search?size=1000");
    const items = found.results || found;
    clear(main, h("header.page-head", h("h1", "Namespaces")),
      items.length ? h("table.grid", h("tbody", items.map((n) => { const id = n.id || n; return h("tr", h("td", h("a", { href: `/ui/namespaces/${enc(id)}` }, id))); })))
        : h("p.empty", "No namespace yet: deploy a flow."));
    return;
  }
  const ns = params.namespace;
  const errors = h("div");
  const body = h("div");
  const key = h("input", { name: "key", placeholder: "key", "aria-label": "key", required: true });
  const value = h("textarea", { name: "value", rows: 3, class: "mono", placeholder: 'a value: text, or JSON such as 42 or {"a": 1}', "aria-label": "value" });
  const ttl = h("input", { name: "ttl", placeholder: "PT1H (optional)", "aria-label": "ttl" });
  const form = h("form.card", { onsubmit: async (e) => {
    e.preventDefault();
    clear(errors);
    try {
      await api("PUT", `/api/v1/namespaces/${enc(ns)}/kv/${enc(key.value)}`, { text: value.value, headers: ttl.value ? { ttl: ttl.value } : {} });
      toast(`Saved ${key.value}`);
      load();
    } catch (error) { showError(errors, error); }
  } }, h("h3", "Add or edit a pair"), h("div.filters", h("label", "Key", key), h("label", "Value", value), h("label", "Expires after", ttl), h("button.primary", { type: "submit" }, "Save")));
  clear(main, h("header.page-head", h("div", h("div.crumbs", h("a", { href: "/ui/namespaces" }, "Namespaces")), h("h1", ns)),
    h("a.button", { href: `/ui/flows?namespace=${enc(ns)}` }, "Flows")), errors, form, h("h3", "Key-value pairs"), body);

  async function load() {
    const entries = await get(`/api/v1/namespaces/${enc(ns)}/kv`);
    const rows = await Promise.all(entries.map(async (e) => {
      const got = await get(`/api/v1/namespaces/${enc(ns)}/kv/${enc(e.key)}`).catch(() => null);
      return h("tr", { "data-key": e.key }, h("td.mono", e.key), h("td", got ? got.type : ""), h("td", h("code.kv-value", got ? pretty(got.value) : "(expired)")),
        h("td.muted", fmtDate(e.updateDate)), h("td.muted", fmtDate(e.expirationDate)),
        h("td", h("div.actions",
          h("button.small", { onclick: () => { key.value = e.key; value.value = got ? JSON.stringify(got.value) : ""; value.focus(); } }, "Edit"),
          h("button.small", { onclick: async () => {
            if (!confirm(`Delete ${e.key}?`)) return;
            try { await api("DELETE", `/api/v1/namespaces/${enc(ns)}/kv/${enc(e.key)}`); toast(`Deleted ${e.key}`); load(); } catch (error) { showError(errors, error); }
          } }, "Delete"))));
    }));
    clear(body, rows.length ? h("table.grid", h("thead", h("tr", ["Key", "Type", "Value", "Updated", "Expires", ""].map((x) => h("th", x)))), h("tbody", rows)) : h("p.empty", "No pair in this namespace."));
  }
  await load();
}
