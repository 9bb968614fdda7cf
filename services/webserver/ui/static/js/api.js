// The REST API client. Authentication is the browser's own: with basic auth on, the
// server challenges the first load of /ui/, the browser asks for credentials once and
// sends them with every later call of this origin (fetch, EventSource, downloads).

export class ApiError extends Error {
  constructor(status, body, path) {
    const message = body?.message || `HTTP ${status} on ${path}`;
    super(message);
    this.status = status;
    this.body = body;
    this.errors = body?.errors || [];
  }
}

export async function api(method, path, { json, text, form, headers } = {}) {
  const init = { method, headers: { accept: "application/json", ...(headers || {}) } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["content-type"] = "application/json";
  } else if (text !== undefined) {
    init.body = text;
    init.headers["content-type"] = "application/x-yaml";
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") || "";
  const body = response.status === 204 ? null
    : type.includes("json") ? await response.json().catch(() => null)
    : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof body === "object" ? body : { message: body }, path);
  return body;
}

export const get = (path) => api("GET", path);

/** Query string from an object; arrays repeat the parameter; empty values are left out. */
export function qs(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== "") search.append(key, v);
    }
  }
  const s = search.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;

/** Follows a server-sent event stream; `onEvent(data, id)` per message. Returns close(). */
export function follow(path, onEvent, onEnd) {
  const source = new EventSource(path);
  let ended = false;
  source.onmessage = (message) => {
    let data = null;
    try { data = JSON.parse(message.data); } catch { data = message.data; }
    onEvent(data, message.lastEventId);
    if (message.lastEventId === "end") {
      ended = true;
      source.close();
      onEnd?.();
    }
  };
  source.onerror = () => {
    // The server closes the stream when the execution ended: no reconnection then.
    if (ended || source.readyState === EventSource.CLOSED) onEnd?.();
  };
  return () => source.close();
}
