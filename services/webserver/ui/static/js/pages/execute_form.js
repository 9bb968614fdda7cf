// The Execute form generated from a flow's inputs: one field per input type (FILE as
// an upload), defaults filled in, the server's validation messages shown by each field.
import { h, clear, toast, pretty } from "../util.js";
import { api, enc } from "../api.js";
import { navigate, showError } from "../app.js";

const TEXT_TYPES = { STRING: "text", EMAIL: "email", URI: "url", SECRET: "password", DURATION: "text" };

function choices(spec) {
  return spec.values || spec.options || [];
}

/** The field of one input, and a `read()` giving what to send (null: leave it out). */
function field(spec) {
  const type = (spec.type || "STRING").toUpperCase();
  const name = spec.id;
  const def = spec.defaults;
  let control;
  let read = () => control.value;
  switch (type) {
    case "INT":
    case "FLOAT":
      control = h("input", { type: "number", name, step: type === "FLOAT" ? "any" : "1", min: spec.min ?? undefined, max: spec.max ?? undefined, value: def ?? "" });
      break;
    case "BOOLEAN":
      control = h("select", { name }, h("option", { value: "" }, "—"),
        ["true", "false"].map((v) => h("option", { value: v, selected: String(def) === v }, v)));
      break;
    case "DATETIME":
      control = h("input", { type: "datetime-local", name, step: "1", value: def ? String(def).replace(/Z$/, "").slice(0, 19) : "" });
      // the browser's field has no zone: the value is the user's local time
      read = () => (control.value ? new Date(control.value).toISOString() : "");
      break;
    case "DATE":
      control = h("input", { type: "date", name, value: def ?? "" });
      break;
    case "TIME":
      control = h("input", { type: "time", name, step: "1", value: def ?? "" });
      break;
    case "JSON":
    case "YAML":
      control = h("textarea", { name, rows: 5, class: "mono", placeholder: type === "JSON" ? '{"key": "value"}' : "key: value" }, def === undefined || def === null ? "" : type === "JSON" ? pretty(def) : String(def));
      break;
    case "ARRAY":
      control = h("textarea", { name, rows: 4, class: "mono", placeholder: "one item per line" }, Array.isArray(def) ? def.join("\n") : "");
      read = () => (control.value.trim() ? JSON.stringify(control.value.split("\n").map((s) => s.trim()).filter(Boolean)) : "");
      break;
    case "SELECT":
    case "ENUM":
      if (spec.allowCustomValue) {
        const list = `list-${name}`;
        control = h("span", h("input", { name, list, value: def ?? "" }), h("datalist", { id: list }, choices(spec).map((v) => h("option", { value: v }))));
        read = () => control.querySelector("input").value;
      } else {
        control = h("select", { name }, h("option", { value: "" }, "—"), choices(spec).map((v) => h("option", { value: v, selected: v === def }, v)));
      }
      break;
    case "MULTISELECT": {
      const chosen = new Set(Array.isArray(def) ? def : []);
      control = h("select", { name, multiple: true, size: Math.min(6, Math.max(2, choices(spec).length)) },
        choices(spec).map((v) => h("option", { value: v, selected: chosen.has(v) }, v)));
      read = () => {
        const picked = [...control.selectedOptions].map((o) => o.value);
        return picked.length ? JSON.stringify(picked) : "";
      };
      break;
    }
    case "FILE": {
      const accept = (spec.allowedFileExtensions || []).join(",") || undefined;
      control = h("input", { type: "file", name, accept });
      read = () => control.files[0] || null;
      break;
    }
    default:
      control = h("input", { type: TEXT_TYPES[type] || "text", name, value: def ?? "", placeholder: type === "DURATION" ? "PT1H30M" : "" });
  }
  const message = h("div.field-error", { "data-for": name });
  const label = h("label.field", { "data-input": name },
    h("span.field-name", spec.displayName || name, spec.required !== false && (def === undefined || def === null) ? h("span.required", " *") : null, h("span.field-type", type)),
    spec.description ? h("span.muted", spec.description) : null, control, message);
  return { name, type, label, read, message };
}

export function executeForm(target, flow) {
  const fields = (flow.inputs || []).map(field);
  const general = h("div");
  const labels = h("input", { name: "__labels", placeholder: "key:value, other:value", "aria-label": "labels" });
  const submit = h("button.primary", { type: "submit" }, "Execute");
  // novalidate: the server checks every input and words every problem the same way
  const form = h("form.execute-form", { onsubmit: onSubmit, noValidate: true },
    general,
    fields.length ? fields.map((f) => f.label) : h("p.muted", "This flow takes no input."),
    h("label.field", h("span.field-name", "Labels"), labels),
    h("div.editor-bar", submit));
  target.append(form);

  async function onSubmit(event) {
    event.preventDefault();
    clear(general);
    for (const f of fields) clear(f.message);
    const data = new FormData();
    for (const f of fields) {
      const value = f.read();
      if (value === null || value === "") continue;
      if (value instanceof File) data.append(f.name, value, value.name);
      else data.append(f.name, value);
    }
    const labelList = labels.value.split(",").map((s) => s.trim()).filter(Boolean);
    submit.disabled = true;
    try {
      const execution = await api("POST", `/api/v1/executions/${enc(flow.namespace)}/${enc(flow.id)}${labelList.length ? "?" + labelList.map((l) => `labels=${enc(l)}`).join("&") : ""}`, { form: data });
      toast(`Execution ${execution.id} created`);
      navigate(`/executions/${enc(execution.id)}`);
    } catch (error) {
      submit.disabled = false;
      const byInput = new Map((error.errors || []).filter((e) => e.input).map((e) => [e.input, e.message]));
      for (const f of fields) if (byInput.has(f.name)) f.message.textContent = byInput.get(f.name);
      showError(general, error);
    }
  }
}
