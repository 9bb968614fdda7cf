// One execution, live: Gantt of its task runs, topology coloured by state, logs
// following with level and task filters, inputs, outputs (files downloadable, small
// text files previewed), labels; kill, restart, replay (from a task run), resume.
import { h, clear, fmtDate, fmtDuration, stateBadge, span, toast, pretty, TERMINAL, STATE_COLORS } from "../util.js";
import { api, get, enc, qs, follow } from "../api.js";
import { navigate, showError } from "../app.js";

const TABS = [["gantt", "Gantt"], ["topology", "Topology"], ["logs", "Logs"], ["overview", "Inputs & outputs"]];
const LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

function findTask(tasks, id) {
  for (const task of tasks || []) {
    if (task.id === id) return task;
    const nested = [task.tasks, task.then, task.else, task.defaults, task.errors, task.finally,
      ...Object.values(task.cases || {}), (task.tasks || []).map((t) => t.task).filter(Boolean)];
    for (const list of nested) {
      const found = findTask(list, id);
      if (found) return found;
    }
  }
  return null;
}

// A replay answers with the new execution's id before the executor has created it.
async function load(id, created) {
  for (let tries = 0; ; tries++) {
    try {
      return await get(`/api/v1/executions/${enc(id)}`);
    } catch (error) {
      if (!created || error.status !== 404 || tries >= 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

export async function render(main, params, query) {
  let execution = await load(params.id, query.created === "1");
  // The flow (topology, resume inputs) is read beside the first drawing, not before it.
  let flow = null;
  let flowMissing = false;
  get(`/api/v1/flows/${enc(execution.namespace)}/${enc(execution.flowId)}?revision=${execution.flowRevision}`)
    .then((found) => { flow = found; scheduleDraw(); }, () => { flowMissing = true; scheduleDraw(); });
  let tab = params.tab;
  const closers = [];
  const head = h("header.page-head");
  const actions = h("div.actions");
  const errors = h("div");
  const bodies = Object.fromEntries(TABS.map(([key]) => [key, h("section.tab-body", { "data-tab": key, hidden: key !== tab })]));
  const tabs = h("nav.tabs", TABS.map(([key, label]) => h("a", { href: `/ui/executions/${enc(execution.id)}/${key}`, class: key === tab ? "active" : "",
    onclick: (e) => { e.preventDefault(); select(key); } }, label)));
  clear(main, head, errors, tabs, Object.values(bodies));

  function select(key) {
    tab = key;
    history.replaceState(null, "", `/ui/executions/${enc(execution.id)}/${key}`);
    for (const link of tabs.children) link.classList.toggle("active", link.getAttribute("href").endsWith(`/${key}`));
    for (const [name, body] of Object.entries(bodies)) body.hidden = name !== key;
    draw();
  }

  async function act(label, fn) {
    clear(errors);
    try {
      await fn();
      toast(label);
    } catch (error) {
      showError(errors, error);
    }
  }

  let actionsKey = null;
  function drawHead() {
    const { start, end } = span(execution.state);
    const terminal = TERMINAL.has(execution.state.current);
    clear(head,
      h("div", h("div.crumbs", h("a", { href: "/ui/executions" }, "Executions"), " / ",
        h("a", { href: `/ui/flows/${enc(execution.namespace)}/${enc(execution.flowId)}` }, `${execution.namespace}.${execution.flowId}`)),
      h("h1.mono", execution.id, " ", stateBadge(execution.state.current)),
      h("p.muted", `revision ${execution.flowRevision} · started ${fmtDate(execution.state.histories?.[0]?.date)} · `,
        fmtDuration((Number.isNaN(end) ? Date.now() : end) - start),
        (execution.labels || []).map(labelChip),
        execution.parentId ? h("span", " · subflow of ", h("a.mono", { href: `/ui/executions/${enc(execution.parentId)}` }, execution.parentId)) : null,
        execution.originalId && execution.originalId !== execution.id
          ? h("span", " · original execution ", h("a.mono", { href: `/ui/executions/${enc(execution.originalId)}` }, execution.originalId)) : null)),
      actions);
    // redrawn only when they change: a redraw would wipe what the user typed (resume)
    const key = JSON.stringify([execution.state.current, terminal, Boolean(flow), execution.taskRunList?.map((r) => r.state.current)]);
    if (key === actionsKey) return;
    actionsKey = key;
    clear(actions,
      !terminal && execution.state.current !== "KILLING" ? h("button.danger", { onclick: () => act("Kill requested", () => api("DELETE", `/api/v1/executions/${enc(execution.id)}/kill`)) }, "Kill") : null,
      (terminal || execution.state.current === "PAUSED") && execution.taskRunList?.some((r) => ["FAILED", "PAUSED"].includes(r.state.current))
        ? h("button", { onclick: () => act("Restart requested", async () => { await api("POST", `/api/v1/executions/${enc(execution.id)}/restart`); afterAction(); }) }, "Restart") : null,
      terminal ? h("button", { onclick: () => replay(null) }, "Replay") : null,
      execution.state.current === "PAUSED" ? resumeForm() : null,
      h("button", { onclick: editLabels }, "Labels"));
  }

  async function replay(taskRunId) {
    clear(errors);
    try {
      const created = await api("POST", `/api/v1/executions/${enc(execution.id)}/replay${qs({ taskRunId })}`);
      toast(`Replayed as ${created.id}`);
      navigate(`/executions/${enc(created.id)}?created=1`);
    } catch (error) { showError(errors, error); }
  }

  function resumeForm() {
    const paused = (execution.taskRunList || []).filter((r) => r.state.current === "PAUSED").map((r) => findTask(flow?.tasks, r.taskId)).filter(Boolean);
    const specs = paused.flatMap((t) => t.onResume || []);
    const fields = specs.map((s) => ({ s, input: h("input", { name: s.id, value: s.defaults ?? "", "aria-label": s.id }) }));
    return h("form.resume", { onsubmit: (e) => {
      e.preventDefault();
      const data = new FormData();
      for (const { s, input } of fields) if (input.value !== "") data.append(s.id, input.value);
      act("Resumed", async () => { await api("POST", `/api/v1/executions/${enc(execution.id)}/resume`, { form: data }); afterAction(); });
    } }, fields.map(({ s, input }) => h("label", `${s.displayName || s.id} (${s.type || "STRING"})`, input)), h("button.primary", { type: "submit" }, "Resume"));
  }

  // Labels are edited in a small form under the header (key:value, comma separated).
  const labelsForm = h("form.resume.labels-form", { hidden: true, onsubmit: (e) => {
    e.preventDefault();
    const items = labelsInput.value.split(",").map((x) => x.trim()).filter(Boolean).map((x) => {
      const i = x.indexOf(":");
      return { key: x.slice(0, i < 0 ? x.length : i).trim(), value: i < 0 ? "" : x.slice(i + 1).trim() };
    });
    act("Labels saved", async () => {
      execution = await api("POST", `/api/v1/executions/${enc(execution.id)}/labels`, { json: items });
      labelsForm.hidden = true;
      draw();
    });
  } });
  const labelsInput = h("input", { name: "labels", size: 50, "aria-label": "labels", placeholder: "key:value, other:value" });
  labelsForm.append(labelsInput, h("button.primary", { type: "submit" }, "Save labels"),
    h("button", { type: "button", onclick: () => { labelsForm.hidden = true; } }, "Cancel"));
  errors.after(labelsForm);
  function editLabels() {
    // system labels (the correlation id) are the server's: kept whatever is saved
    labelsInput.value = (execution.labels || []).filter((l) => !isSystemLabel(l)).map((l) => `${l.key}:${l.value}`).join(", ");
    labelsForm.hidden = false;
    labelsInput.focus();
  }

  // -- Gantt ---------------------------------------------------------------------------
  // Past VIRTUAL_FROM task runs only the rows in view (and a margin) are in the page,
  // so an execution of thousands of task runs draws as fast as a small one.
  const VIRTUAL_FROM = 150;
  const ROW_PX = 30;
  const MARGIN_ROWS = 20;
  const gantt = h("div.gantt", { role: "table", "aria-label": "gantt" });
  const ganttSpacer = h("div.gantt-spacer");
  const ganttCaption = h("p.muted.caption");
  // the task run whose name was clicked: its attempts, state history and outputs
  const runDetail = h("div.card.run-detail", { hidden: true });
  let selectedRun = null;
  function drawRunDetail() {
    const run = (execution.taskRunList || []).find((r) => r.id === selectedRun);
    runDetail.hidden = !run;
    if (!run) return;
    clear(runDetail,
      h("div.page-head", h("h3", run.taskId, run.value != null ? h("span.value", ` [${run.value}]`) : null, " ", stateBadge(run.state.current)),
        h("button.small", { onclick: () => { selectedRun = null; drawRunDetail(); } }, "Close")),
      h("p.muted.mono", run.id),
      h("div.cards",
        h("div", h("h3", "Attempts"), (run.attempts || []).length
          ? h("ol", run.attempts.map((a) => h("li", stateBadge(a.state.current), " ", fmtDate(a.state.histories?.[0]?.date), " · ",
            fmtDuration(span(a.state).end - span(a.state).start), a.workerId ? h("span.muted", ` on ${a.workerId}`) : null)))
          : h("p.muted", "None (a flowable runs in the executor)")),
        h("div", h("h3", "State history"), h("ol", (run.state.histories || []).map((x) => h("li", stateBadge(x.state), " ", fmtDate(x.date))))),
        h("div", h("h3", "Outputs"), run.outputs && Object.keys(run.outputs).length ? valueView(run.outputs) : h("p.muted", "None"))));
  }
  let ganttRows = [];
  gantt.addEventListener("scroll", () => { if (ganttRows.length > VIRTUAL_FROM) requestAnimationFrame(drawGanttWindow); });

  function drawGantt() {
    const runs = execution.taskRunList || [];
    const { start: t0, end: tEnd } = span(execution.state);
    const last = Number.isNaN(tEnd) ? Date.now() : tEnd;
    const total = Math.max(last - t0, 1);
    const byId = new Map(runs.map((r) => [r.id, r]));
    const depth = (run) => { let d = 0; for (let p = byId.get(run.parentTaskRunId); p && d < 20; p = byId.get(p.parentTaskRunId)) d++; return d; };
    ganttRows = runs.map((run) => {
      const { start, end } = span(run.state);
      const from = Number.isNaN(start) ? 0 : Math.max(0, (start - t0) / total);
      const until = Number.isNaN(end) ? last : end;
      const width = Math.max(0.004, (until - (Number.isNaN(start) ? t0 : start)) / total);
      return { run, from, width: Math.min(width, 1 - from), took: until - start, depth: depth(run) };
    });
    if (!runs.length) { clear(bodies.gantt, h("p.empty", "No task has started yet.")); return; }
    if (gantt.parentNode !== bodies.gantt) clear(bodies.gantt, ganttCaption, runDetail, gantt);
    drawRunDetail();
    const loops = ganttRows.filter((r) => r.run.value != null).length;
    ganttCaption.textContent = `${runs.length} task run${runs.length === 1 ? "" : "s"}${loops ? `, ${loops} of them loop iterations` : ""}`;
    const virtual = ganttRows.length > VIRTUAL_FROM;
    gantt.classList.toggle("virtual", virtual);
    gantt.dataset.rows = String(ganttRows.length);
    if (virtual) drawGanttWindow();
    else clear(gantt, ganttRows.map(ganttRow));
  }

  function drawGanttWindow() {
    const first = Math.max(0, Math.floor(gantt.scrollTop / ROW_PX) - MARGIN_ROWS);
    const count = Math.ceil((gantt.clientHeight || 600) / ROW_PX) + 2 * MARGIN_ROWS;
    ganttSpacer.style.height = `${ganttRows.length * ROW_PX}px`;
    clear(gantt, ganttSpacer, ganttRows.slice(first, first + count).map((row, i) => {
      const el = ganttRow(row);
      el.style.top = `${(first + i) * ROW_PX}px`;
      return el;
    }));
  }

  function ganttRow({ run, from, width, took, depth }) {
    const terminal = TERMINAL.has(execution.state.current);
    const attempts = run.attempts?.length || 0;
    const state = run.state.current;
    return h("div.gantt-row", { "data-task": run.taskId, "data-state": state },
      h("div.gantt-name", { style: { paddingLeft: `${depth * 14}px` } },
        h("a", { href: "#", title: `${run.id}: attempts, history and outputs`, onclick: (e) => { e.preventDefault(); selectedRun = run.id; drawRunDetail(); } }, run.taskId), run.value != null ? h("span.value", ` ${run.value}`) : null,
        attempts > 1 ? h("span.attempts", ` · ${attempts} attempts`) : null),
      h("div.gantt-track", h("div.gantt-bar", { style: { left: `${from * 100}%`, width: `${width * 100}%`, background: STATE_COLORS[state] }, title: `${state} · ${fmtDuration(took)}` })),
      h("div.gantt-state", stateBadge(state), " ", fmtDuration(took)),
      h("div.gantt-actions", terminal ? h("button.small", { onclick: () => replay(run.id), title: "Replay the execution from this task run" }, "Replay from here") : null,
        h("button.small", { onclick: () => { logTask.value = run.taskId; select("logs"); drawLogs(); } }, "Logs")));
  }

  // -- topology ------------------------------------------------------------------------
  let topology = null;
  function drawTopology() {
    if (flowMissing) { clear(bodies.topology, h("p.empty", "The flow of this execution is not available.")); return; }
    if (!flow || !topology) {
      if (!bodies.topology.children.length) bodies.topology.append(h("p.muted", "Loading…"));
      import("../topology.js").then(async (module) => { await module.loadLayout(); topology = module; scheduleDraw(); },
        (error) => showError(bodies.topology, error));
      return;
    }
    const states = {};
    for (const run of execution.taskRunList || []) states[run.taskId] = run.state.current;
    clear(bodies.topology, h("div.graph-box", topology.renderTopology(flow, states)));
  }

  // -- logs ----------------------------------------------------------------------------
  const logs = [];
  const logLevel = h("select", { "aria-label": "minimum level", onchange: () => openLogs() }, LEVELS.map((l) => h("option", { value: l, selected: l === "INFO" }, l)));
  const logTask = h("select", { "aria-label": "task", onchange: () => drawLogs() }, h("option", { value: "" }, "All tasks"));
  const logList = h("div.log-list", { "aria-label": "logs" });
  bodies.logs.append(h("div.filters", h("label", "Level", logLevel), h("label", "Task", logTask),
    h("a.button.small", { href: `/api/v1/logs/${enc(execution.id)}/download`, download: "" }, "Download")), logList);
  let closeLogs = null;
  function openLogs() {
    closeLogs?.();
    logs.length = 0;
    drawn.count = 0;
    drawn.filter = null;
    clear(logList);
    if (tab === "logs") drawLogs();
    const path = `/api/v1/logs/${enc(execution.id)}/follow${qs({ minLevel: logLevel.value })}`;
    const source = new EventSource(path);
    source.onmessage = (m) => { logs.push(JSON.parse(m.data)); scheduleLogs(); };
    // the stream ends with the execution; EventSource would reconnect for ever
    source.onerror = () => { if (TERMINAL.has(execution.state.current)) source.close(); };
    closeLogs = () => source.close();
  }
  let logFrame = 0;
  const drawn = { filter: null, count: 0 };
  function scheduleLogs() { if (!logFrame) logFrame = requestAnimationFrame(() => { logFrame = 0; drawLogs(); }); }
  function drawLogs() {
    const tasks = [...new Set((execution.taskRunList || []).map((r) => r.taskId))];
    if (logTask.options.length !== tasks.length + 1) {
      const keep = logTask.value;
      clear(logTask, h("option", { value: "" }, "All tasks"), tasks.map((t) => h("option", { value: t, selected: t === keep }, t)));
    }
    // appended to while only new lines came: a long log is not rebuilt per event
    const filter = logTask.value;
    if (filter !== drawn.filter || logs.length < drawn.count) {
      clear(logList);
      drawn.filter = filter;
      drawn.count = 0;
    }
    const line = (l) => h("div.log-line", { "data-level": l.level },
      h("span.log-time", fmtDate(l.timestamp)), h("span.log-level", l.level), h("span.log-task", l.taskId || ""), h("span.log-msg", l.message));
    const fresh = logs.slice(drawn.count).filter((l) => !filter || l.taskId === filter);
    drawn.count = logs.length;
    if (fresh.length) {
      logList.querySelector(".empty")?.remove();
      const follow = logList.scrollTop + logList.clientHeight >= logList.scrollHeight - 4;
      logList.append(...fresh.map(line));
      if (follow) logList.scrollTop = logList.scrollHeight;
    } else if (!logList.children.length) {
      logList.append(h("p.empty", "No log line yet."));
    }
  }

  // -- inputs and outputs --------------------------------------------------------------
  function valueView(value) {
    if (typeof value === "string" && value.startsWith("kestra:///")) {
      const url = `/api/v1/executions/${enc(execution.id)}/file${qs({ path: value })}`;
      const preview = h("pre.preview", { hidden: true });
      return h("span.file", h("a", { href: url, download: "" }, value.split("/").pop()), " ",
        h("button.small", { onclick: async () => {
          try {
            const response = await fetch(url);
            const blob = await response.blob();
            if (!response.ok) throw new Error(await blob.text());
            preview.textContent = blob.size > 100_000 ? `(${blob.size} bytes: too large to preview, download it)` : await blob.text();
          } catch (error) { preview.textContent = `cannot preview: ${error.message}`; }
          preview.hidden = false;
        } }, "Preview"), preview);
    }
    if (value !== null && typeof value === "object") {
      return h("div", Object.entries(value).map(([k, v]) => h("div.kv", h("span.key", k), valueView(v))));
    }
    return h("code", pretty(value));
  }
  function table(title, values) {
    const entries = Object.entries(values || {});
    return h("div.card", h("h3", title), entries.length ? h("table.grid.kv-table", h("tbody", entries.map(([k, v]) => h("tr", { "data-key": k }, h("th", k), h("td", valueView(v)))))) : h("p.muted", "None"));
  }
  function drawOverview() {
    const taskOutputs = {};
    for (const run of execution.taskRunList || []) {
      if (run.outputs && Object.keys(run.outputs).length) taskOutputs[run.value != null ? `${run.taskId} [${run.value}]` : run.taskId] = run.outputs;
    }
    clear(bodies.overview, table("Inputs", execution.inputs), table("Flow outputs", execution.outputs), table("Task outputs", taskOutputs),
      h("div.card", h("h3", "Labels"), (execution.labels || []).map(labelChip)),
      h("div.card", h("h3", "State history"), h("ol", (execution.state.histories || []).map((x) => h("li", stateBadge(x.state), " ", fmtDate(x.date))))));
  }

  let frame = 0;
  function draw() {
    drawHead();
    if (tab === "gantt") drawGantt();
    else if (tab === "topology") drawTopology();
    else if (tab === "logs") drawLogs();
    else drawOverview();
  }
  function scheduleDraw() { if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); }); }

  let closeFollow = null;
  let retry = null;
  function reopen() {
    closeFollow = follow(`/api/v1/executions/${enc(execution.id)}/follow`, (data) => {
      if (data && data.id === execution.id) { execution = data; scheduleDraw(); }
    });
    openLogs();
  }
  // After a restart or resume the executor changes the execution a moment later: a
  // follow opened at once may still end on the old state, so it is opened again until
  // the state history has grown (for up to a minute).
  function afterAction() {
    const length = (execution.state.histories || []).length;
    closeFollow?.();
    clearTimeout(retry);
    const wait = (tries) => {
      closeFollow = follow(`/api/v1/executions/${enc(execution.id)}/follow`, (data) => {
        if (data && data.id === execution.id) { execution = data; scheduleDraw(); }
      }, () => {
        if ((execution.state.histories || []).length <= length && tries < 240) retry = setTimeout(() => wait(tries + 1), 250);
        else openLogs();
      });
    };
    wait(0);
  }
  // a Gantt bar of a running task grows with time, between two events too
  const tick = setInterval(() => { if (!TERMINAL.has(execution.state.current) && tab === "gantt") scheduleDraw(); }, 1000);
  closers.push(() => clearInterval(tick), () => clearTimeout(retry), () => closeFollow?.(), () => closeLogs?.());
  draw();
  reopen();
  return () => closers.forEach((c) => c());
}

function isSystemLabel(l) {
  return l.key.startsWith("system.");
}

// A label as a chip; a system one (set by the server, as Kestra's system.correlationId)
// is shown apart and cannot be edited.
function labelChip(l) {
  return h(isSystemLabel(l) ? "span.label.system" : "span.label", { title: isSystemLabel(l) ? "set by the server" : "" }, `${l.key}:${l.value}`);
}
