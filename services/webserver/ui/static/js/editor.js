// The YAML editor: CodeMirror 6 with Kestra flow validation from the server, shown at
// the problem's line as you type (the API gives line and column).
import { EditorState } from "@codemirror/state";
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  drawSelection, highlightSpecialChars,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import {
  syntaxHighlighting, defaultHighlightStyle, bracketMatching, indentOnInput, foldGutter, foldKeymap,
} from "@codemirror/language";
import { linter, lintGutter } from "@codemirror/lint";
import { yaml } from "@codemirror/lang-yaml";
import { api } from "./api.js";

/** Problems of `source` as the server finds them: [{line, column, message, path, hint}]. */
export async function validate(source) {
  const results = await api("POST", "/api/v1/flows/validate", { text: source });
  return results.flatMap((r) => r.problems || []);
}

function diagnostics(view, problems) {
  const doc = view.state.doc;
  return problems.map((p) => {
    const line = doc.line(Math.min(Math.max(p.line || 1, 1), doc.lines));
    const from = Math.min(line.from + Math.max((p.column || 1) - 1, 0), line.to);
    const to = from < line.to ? line.to : from;
    const message = (p.path ? `${p.path}: ` : "") + p.message + (p.hint ? ` (${p.hint})` : "");
    return { from, to, severity: "error", message };
  });
}

/**
 * An editor in `parent` holding `source`. `onProblems(list)` gets every validation
 * result (an empty list once the flow is valid); `onChange(text)` every edit;
 * `onSave()` Ctrl+S (Cmd+S).
 */
export function flowEditor(parent, source, { onProblems, onChange, onSave, readOnly = false } = {}) {
  const check = linter(async (view) => {
    let problems;
    try {
      problems = await validate(view.state.doc.toString());
    } catch (error) {
      problems = [{ line: 1, column: 1, message: `validation failed: ${error.message}` }];
    }
    onProblems?.(problems);
    return diagnostics(view, problems);
  }, { delay: 400 });
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: source,
      extensions: [
        lineNumbers(), highlightActiveLineGutter(), highlightSpecialChars(), history(),
        foldGutter(), drawSelection(), indentOnInput(), bracketMatching(), highlightActiveLine(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        keymap.of([
          { key: "Mod-s", preventDefault: true, run: () => { onSave?.(); return true; } },
          ...defaultKeymap, ...historyKeymap, ...foldKeymap, indentWithTab,
        ]),
        yaml(), lintGutter(), check,
        EditorState.readOnly.of(readOnly),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) onChange?.(update.state.doc.toString());
        }),
        EditorView.theme({ "&": { height: "100%" }, ".cm-scroller": { fontFamily: "var(--mono)" } }),
      ],
    }),
  });
  return view;
}

/** A read-only side-by-side diff of two revisions. */
export async function diffView(parent, left, right) {
  const { MergeView } = await import("@codemirror/merge");
  const extensions = [
    lineNumbers(), yaml(), syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    EditorState.readOnly.of(true), EditorView.editable.of(false),
  ];
  return new MergeView({ a: { doc: left, extensions }, b: { doc: right, extensions }, parent });
}
