// A flow's topology drawn from its definition: tasks, nested flowables, Parallel
// branches, Dag edges, errors and finally. Laid out by dagre, drawn as SVG.
import { STATE_COLORS, loadScript } from "./util.js";

/** dagre, loaded the first time a page draws a graph. */
export const loadLayout = () => loadScript("/ui/vendor/dagre/dagre.min.js");

const short = (type) => (type || "").split(".").pop();
const SEQUENTIAL = new Set(["Sequential", "ForEach", "EachSequential", "AllowFailure", "WorkingDirectory", "LoopUntil"]);
const PARALLEL = new Set(["Parallel", "EachParallel", "ForEachItem"]);

/** Nodes and edges of `flow` (the API's JSON of its YAML). */
export function buildGraph(flow) {
  const nodes = new Map();
  const edges = [];
  const node = (id, label, kind, type) => { nodes.set(id, { id, label, kind, type }); return id; };
  const edge = (from, to, label, dashed) => edges.push({ from, to, label, dashed });

  // Returns [entries, exits] of a list of tasks run one after the other.
  function chain(tasks, prefix) {
    let entries = null;
    let exits = [];
    for (const task of tasks || []) {
      const [ins, outs] = one(task, prefix);
      if (entries === null) entries = ins;
      for (const from of exits) for (const to of ins) edge(from, to);
      exits = outs;
    }
    return [entries || [], exits];
  }

  function one(task, prefix) {
    const type = short(task.type);
    const id = node(task.id, task.id, "task", type);
    let exits = [id];
    if (SEQUENTIAL.has(type)) {
      const [ins, outs] = chain(task.tasks, prefix);
      for (const to of ins) edge(id, to);
      if (outs.length) exits = outs;
    } else if (PARALLEL.has(type)) {
      const outs = [];
      for (const child of task.tasks || []) {
        const [ins, childOuts] = one(child, prefix);
        for (const to of ins) edge(id, to);
        outs.push(...childOuts);
      }
      if (outs.length) exits = outs;
    } else if (type === "If") {
      const outs = [];
      for (const [branch, label] of [[task.then, "then"], [task.else, "else"]]) {
        const [ins, bOuts] = chain(branch, prefix);
        for (const to of ins) edge(id, to, label);
        outs.push(...(ins.length ? bOuts : [id]));
      }
      exits = [...new Set(outs)];
    } else if (type === "Switch") {
      const outs = [];
      for (const [label, branch] of [...Object.entries(task.cases || {}), ["defaults", task.defaults]]) {
        const [ins, bOuts] = chain(branch, prefix);
        for (const to of ins) edge(id, to, label);
        outs.push(...(ins.length ? bOuts : []));
      }
      if (outs.length) exits = outs;
    } else if (type === "Dag") {
      const depended = new Set();
      const entries = new Map();
      for (const item of task.tasks || []) {
        const [ins, outs] = one(item.task || {}, prefix);
        entries.set(item.task?.id, { ins, outs, deps: item.dependsOn || [] });
      }
      for (const [taskId, info] of entries) {
        if (!info.deps.length) for (const to of info.ins) edge(id, to);
        for (const dep of info.deps) {
          depended.add(dep);
          for (const from of entries.get(dep)?.outs || [dep]) for (const to of info.ins) edge(from, to);
        }
        void taskId;
      }
      const outs = [...entries].filter(([k]) => !depended.has(k)).flatMap(([, v]) => v.outs);
      if (outs.length) exits = outs;
    }
    if (task.errors?.length) {
      const [ins] = chain(task.errors, prefix);
      for (const to of ins) edge(id, to, "errors", true);
    }
    if (task.finally?.length) {
      const [ins, outs] = chain(task.finally, prefix);
      for (const from of exits) for (const to of ins) edge(from, to, "finally");
      if (outs.length) exits = outs;
    }
    return [[id], exits];
  }

  const start = node("__start", "start", "terminal");
  const end = node("__end", "end", "terminal");
  const [ins, outs] = chain(flow.tasks, "");
  for (const to of ins) edge(start, to);
  let last = outs.length ? outs : [start];
  if (flow.finally?.length) {
    const [fIns, fOuts] = chain(flow.finally, "");
    for (const from of last) for (const to of fIns) edge(from, to, "finally");
    last = fOuts;
  }
  for (const from of last) edge(from, end);
  if (flow.errors?.length) {
    const [eIns] = chain(flow.errors, "");
    for (const to of eIns) edge(start, to, "on failure", true);
  }
  for (const trigger of flow.triggers || []) {
    const tid = node(`__trigger_${trigger.id}`, `⏱ ${trigger.id}`, "trigger", short(trigger.type));
    edge(tid, start, null, true);
  }
  return { nodes: [...nodes.values()], edges };
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** An SVG of `flow`'s topology; `states` (task id → state) colours the nodes. */
export function renderTopology(flow, states = {}, { direction = "LR", onNodeClick } = {}) {
  const { nodes, edges } = buildGraph(flow);
  const g = new window.dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: direction, nodesep: 18, ranksep: 42, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) {
    const width = n.kind === "terminal" ? 56 : Math.max(120, Math.min(260, 14 + 7.2 * Math.max(n.label.length, (n.type || "").length)));
    g.setNode(n.id, { width, height: n.kind === "terminal" ? 28 : 46, data: n });
  }
  edges.forEach((e, i) => g.setEdge(e.from, e.to, { label: e.label, dashed: e.dashed, width: e.label ? e.label.length * 6 : 0, height: e.label ? 12 : 0 }, `e${i}`));
  window.dagre.layout(g);
  const info = g.graph();
  const root = svg("svg", { class: "topology", width: info.width, height: info.height, viewBox: `0 0 ${info.width} ${info.height}`, role: "img", "aria-label": "flow topology" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#94a3b8" }));
  defs.append(marker);
  root.append(defs);
  for (const e of g.edges()) {
    const data = g.edge(e);
    const d = data.points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
    root.append(svg("path", { d, class: `edge${data.dashed ? " dashed" : ""}`, "marker-end": "url(#arrow)" }));
    if (data.label) root.append(svg("text", { x: data.x, y: data.y + 4, class: "edge-label", "text-anchor": "middle" }, data.label));
  }
  for (const id of g.nodes()) {
    const { x, y, width, height, data } = g.node(id);
    const state = states[id];
    const group = svg("g", { class: `node ${data.kind}`, transform: `translate(${x - width / 2},${y - height / 2})`, "data-task": id, "data-state": state || "" });
    group.append(svg("rect", { width, height, rx: data.kind === "terminal" ? 14 : 6, style: state ? `stroke:${STATE_COLORS[state]};stroke-width:2.5;fill:${STATE_COLORS[state]}1f` : "" }));
    if (data.kind === "terminal") {
      group.append(svg("text", { x: width / 2, y: 18, "text-anchor": "middle" }, data.label));
    } else {
      group.append(svg("text", { x: 10, y: 19, class: "node-id" }, data.label));
      group.append(svg("text", { x: 10, y: 35, class: "node-type" }, state ? `${data.type} · ${state}` : data.type || ""));
      if (onNodeClick) group.addEventListener("click", () => onNodeClick(id));
    }
    root.append(group);
  }
  return root;
}
