// The single-page app: a router from /ui/... paths to page modules. A page is
// `async render(main, params, query)` and may return a cleanup function (closes live
// follows) that runs when the user leaves it.
import { h, clear, toast } from "./util.js";
import { ApiError } from "./api.js";

const ROUTES = [
  [/^\/?$/, "dashboard", "./pages/dashboard.js"],
  [/^\/flows\/?$/, "flows", "./pages/flows.js"],
  [/^\/flows\/new$/, "flows", "./pages/flow.js", () => ({ create: true })],
  [/^\/flows\/([^/]+)\/([^/]+)(?:\/([a-z]+))?$/, "flows", "./pages/flow.js",
    (m) => ({ namespace: m[1], id: m[2], tab: m[3] || "editor" })],
  [/^\/executions\/?$/, "executions", "./pages/executions.js"],
  [/^\/executions\/([^/]+)(?:\/([a-z]+))?$/, "executions", "./pages/execution.js",
    (m) => ({ id: m[1], tab: m[2] || "gantt" })],
  [/^\/logs\/?$/, "logs", "./pages/logs.js"],
  [/^\/namespaces\/?$/, "namespaces", "./pages/namespaces.js"],
  [/^\/namespaces\/([^/]+)$/, "namespaces", "./pages/namespaces.js", (m) => ({ namespace: m[1] })],
  [/^\/triggers\/?$/, "triggers", "./pages/triggers.js"],
  [/^\/instance\/?$/, "instance", "./pages/instance.js"],
];

let cleanup = null;
let generation = 0;

export function navigate(path, { replace = false } = {}) {
  const url = path.startsWith("/ui") ? path : `/ui${path.startsWith("/") ? "" : "/"}${path}`;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

/** Replaces the query of the current page without a new history entry or re-render. */
export function setQuery(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const item of Array.isArray(v) ? v : [v]) if (item !== "" && item != null) search.append(k, item);
  }
  const s = search.toString();
  history.replaceState(null, "", location.pathname + (s ? `?${s}` : ""));
}

export function showError(target, error) {
  const lines = (error instanceof ApiError ? error.errors : []).map((e) =>
    h("li", [e.line ? `line ${e.line}, column ${e.column}: ` : "", e.input ? `${e.input}: ` : "", e.path ? `${e.path}: ` : "", e.message || JSON.stringify(e)]));
  const box = h("div.error-box", { role: "alert" },
    h("strong", error instanceof ApiError ? `Error ${error.status}` : "Error"), " ", error.message,
    lines.length ? h("ul", lines) : null);
  if (target) target.prepend(box);
  else toast(error.message, "error");
  return box;
}

async function route() {
  const mine = ++generation;
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup must not block the next */ } }
  cleanup = null;
  const path = decodeURI(location.pathname.replace(/^\/ui/, "")) || "/";
  const main = document.getElementById("app");
  for (const [pattern, nav, module, params] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a[data-nav]")) {
      link.classList.toggle("active", link.dataset.nav === nav);
    }
    clear(main, h("p.muted", "Loading…"));
    try {
      const page = await import(module);
      if (mine !== generation) return;
      const query = Object.fromEntries(new URLSearchParams(location.search));
      const done = await page.render(main, params ? params(match) : {}, query);
      if (mine !== generation) { if (typeof done === "function") done(); return; }
      cleanup = typeof done === "function" ? done : null;
    } catch (error) {
      if (mine !== generation) return;
      clear(main);
      showError(main, error);
    }
    return;
  }
  clear(main, h("h1", "Not found"), h("p", `No page at ${location.pathname}. `, h("a", { href: "/ui/" }, "Go to the dashboard")));
}

// Links inside the app are handled here, without reloading the page.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const href = link.getAttribute("href");
  if (!href || !href.startsWith("/ui") || link.target || link.hasAttribute("download")) return;
  event.preventDefault();
  navigate(href);
});
window.addEventListener("popstate", route);
route();
