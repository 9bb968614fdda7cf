// Small DOM and formatting helpers shared by every page.

/** h("div.card", {onclick}, child, ...) builds an element; strings become text. */
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (attrs !== undefined && attrs !== null && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className += (el.className ? " " : "") + value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key in el && key !== "list" && key !== "form") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const TERMINAL = new Set([
  "SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "SKIPPED", "RETRIED", "RESTARTED",
]);
export const STATES = [
  "CREATED", "QUEUED", "RUNNING", "PAUSED", "RETRYING", "RETRIED", "KILLING", "KILLED",
  "SUCCESS", "WARNING", "FAILED", "CANCELLED", "SKIPPED", "RESTARTED",
];
export const STATE_COLORS = {
  CREATED: "#64748b", QUEUED: "#94a3b8", RUNNING: "#2563eb", PAUSED: "#a855f7",
  RETRYING: "#f59e0b", RETRIED: "#d97706", KILLING: "#f97316", KILLED: "#78716c",
  SUCCESS: "#16a34a", WARNING: "#eab308", FAILED: "#dc2626", CANCELLED: "#57534e",
  SKIPPED: "#a8a29e", RESTARTED: "#0891b2",
};

export function stateBadge(state) {
  return h("span.badge", { style: { background: STATE_COLORS[state] || "#64748b" }, "data-state": state }, state);
}

export function fmtDate(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Start and end (ms) of something with Kestra's `state.histories`. */
export function span(state) {
  const hist = state?.histories || [];
  const start = hist.length ? Date.parse(hist[0].date) : NaN;
  const end = TERMINAL.has(state?.current) && hist.length ? Date.parse(hist[hist.length - 1].date) : NaN;
  return { start, end };
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 4000);
}

/** The current URL's query as an object of arrays (repeatable parameters). */
export function queryOf(search = location.search) {
  const out = {};
  for (const [k, v] of new URLSearchParams(search)) (out[k] ||= []).push(v);
  return out;
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

const scripts = new Map();
/** Loads a vendored classic script (dagre, Chart.js) once, when a page first needs it. */
export function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = src;
      tag.onload = resolve;
      tag.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.append(tag);
    }));
  }
  return scripts.get(src);
}

/** Previous / next buttons and where the page is; `go(page)` loads another. */
export function pager(total, page, size, go) {
  const pages = Math.max(1, Math.ceil(total / size));
  return h("div.pager",
    h("button", { disabled: page <= 1, onclick: () => go(page - 1), "aria-label": "previous page" }, "‹ Previous"),
    h("span", `Page ${page} of ${pages} · ${total} in all`),
    h("button", { disabled: page >= pages, onclick: () => go(page + 1), "aria-label": "next page" }, "Next ›"));
}
