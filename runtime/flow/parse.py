"""Parse flow YAML, keeping the line and column of every key and value so each
problem points at its place in the file.

PyYAML composes the document into nodes (which carry their marks); this module
turns the nodes into plain data itself, recording a :class:`SourceMap` from paths
(``tasks[2].retry.interval``) to positions, and reporting duplicate keys, unknown
tags and recursive aliases on the way. Scalars are read as Kestra (Jackson) reads
them where PyYAML differs: keys are always text, and timestamps stay strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runtime.flow.loader import check_flow
from runtime.flow.model import Flow
from runtime.flow.problems import FlowError, Problem, Report, join
from runtime.flow.registry import TaskRegistry

__all__ = [
    "SourceMap",
    "check_text",
    "file_problems",
    "parse_flow",
    "parse_flow_file",
    "validate_text",
]

_Loader: Any = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
_BYTE_OFFSETS = _Loader is not yaml.SafeLoader  # libyaml reports reader errors in bytes
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAX_DEPTH = 200
_MAX_NODES = 1_000_000  # bounds alias expansion ("billion laughs")


def parse_flow(text: str, file: str = "<flow>", registry: TaskRegistry | None = None) -> Flow:
    """The flow of YAML ``text``; FlowError lists every problem with line and column."""
    flow, problems = check_text(text, file, registry)
    if flow is None:
        raise FlowError(problems, file)
    return flow


def parse_flow_file(path: str | Path, registry: TaskRegistry | None = None) -> Flow:
    """The flow of the YAML file at ``path`` (OSError when it cannot be read)."""
    file = str(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        problem = Problem("", f"the file is not UTF-8 text: {exc.reason}", None, line, column)
        raise FlowError([problem], file) from None
    return parse_flow(text, file, registry)


def file_problems(path: str | Path, registry: TaskRegistry | None = None) -> list[Problem]:
    """Every problem of the flow file at ``path``, unreadable files included (never raises)."""
    try:
        parse_flow_file(path, registry)
    except FlowError as exc:
        return exc.problems
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return [Problem("", f"cannot read the file: {reason}", None, 1, 1)]
    except Exception as exc:  # never a traceback for a person checking flows
        return [Problem("", f"internal error while checking this flow: {exc!r}", _BUG, 1, 1)]
    return []


def validate_text(
    text: str, file: str = "<flow>", registry: TaskRegistry | None = None
) -> list[Problem]:
    """Every problem of the flow in ``text``, in source order (empty when it is valid)."""
    return check_text(text, file, registry)[1]


def check_text(
    text: str, file: str = "<flow>", registry: TaskRegistry | None = None
) -> tuple[Flow | None, list[Problem]]:
    """The flow of ``text`` (None when it has problems) and every problem, placed."""
    source = SourceMap(text)
    report = Report(source)
    try:
        data = _Reader(source, report).read(text)
        if data is _MALFORMED:
            return None, report.problems
        flow, problems = check_flow(data, registry, positions=source)
    except Exception as exc:  # a bug here must still read as a problem, not a traceback
        report.add("", f"internal error while checking this flow: {exc!r}", _BUG, (1, 1))
        return None, report.problems
    problems = sorted([*report.problems, *problems], key=lambda p: (p.line or 0, p.column or 0))
    return (flow if not problems else None), problems


_BUG = "this is a bug in runtime: please report it with the flow"
_MALFORMED = object()


@dataclass(frozen=True)
class _Place:
    key: tuple[int, int] | None
    value: tuple[int, int]
    style: str | None
    indent: int | None  #: the content column of a literal block scalar


class SourceMap:
    """Paths of a document mapped to the (1-based) positions of their keys and values.

    A path with no entry of its own (a value from a plugin default, a missing field)
    falls back to its closest ancestor, and finally to the start of the file.
    """

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._places: dict[str, _Place] = {}

    def record(self, path: str, key: Any, node: Any) -> None:
        """Remember where the value ``node`` (and its ``key`` node, if any) of ``path`` are."""
        indent = None
        if getattr(node, "style", None) == "|":
            indent = self._block_indent(node.start_mark.line + 1)
        self._places[path] = _Place(
            _mark(key.start_mark) if key is not None else None,
            _mark(node.start_mark),
            getattr(node, "style", None),
            indent,
        )

    def key(self, path: str) -> tuple[int, int]:
        place = self._find(path)
        if place is None:
            return (1, 1)
        return place.key or place.value

    def value(self, path: str) -> tuple[int, int]:
        place = self._find(path)
        return place.value if place else (1, 1)

    def inside(self, path: str, line: int, column: int) -> tuple[int, int] | None:
        place = self._places.get(path)
        if place is None:
            return None
        if place.style in (None, "", "'", '"') and line == 1:
            quoted = 1 if place.style in ("'", '"') else 0
            return place.value[0], place.value[1] + quoted + column - 1
        if place.style == "|" and place.indent is not None:
            return place.value[0] + line, place.indent + column - 1
        return None

    def _find(self, path: str) -> _Place | None:
        while True:
            place = self._places.get(path)
            if place is not None or not path:
                return place
            path = _parent(path)

    def _block_indent(self, start: int) -> int | None:
        for text in self._lines[start:]:
            if text.strip():
                return len(text) - len(text.lstrip(" ")) + 1
        return None


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[: path.rindex("[")]
    return path.rsplit(".", 1)[0] if "." in path else ""


def _mark(mark: Any) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


class _Reader:
    """Turns YAML text into plain data, recording positions and reporting YAML problems."""

    def __init__(self, source: SourceMap, report: Report) -> None:
        self.source = source
        self.report = report
        self.loader: Any = None
        self.nodes = 0
        self.active: set[int] = set()

    def read(self, text: str) -> Any:
        self.loader = _Loader(text)
        try:
            root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            self.report.add("", *_yaml_error(exc, text))
            return _MALFORMED
        except yaml.reader.ReaderError as exc:
            where = _offset_position(text, exc.position)
            message = f"invalid YAML: {exc.reason} (character #x{exc.character:04x})"
            self.report.add("", message, "remove the control or binary characters", where)
            return _MALFORMED
        except yaml.YAMLError as exc:
            self.report.add("", f"invalid YAML: {exc}", None, (1, 1))
            return _MALFORMED
        finally:
            self.loader.dispose()
        if root is None:
            self.report.add(
                "",
                "the flow is empty",
                "a flow needs at least `id`, `namespace` and `tasks`",
                (1, 1),
            )
            return _MALFORMED
        self.source.record("", None, root)
        try:
            if _expands_past(root, _MAX_NODES):
                raise _TooBig("")
            return self.node(root, "", 0)
        except _TooBig as exc:
            self.report.add(
                "",
                "the document nests too deeply or expands too many aliases",
                "a flow is a plain, reasonably small document",
                self.source.value(str(exc)),
            )
            return _MALFORMED

    def node(self, node: Any, path: str, depth: int) -> Any:
        """The plain value of ``node`` (at ``path``; its position is already recorded)."""
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise _TooBig(path)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            self.report.value(path, "recursive YAML alias", "an alias cannot contain itself")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out = []
                for index, item in enumerate(node.value):
                    item_path = f"{path}[{index}]"
                    self.source.record(item_path, None, item)
                    out.append(self.node(item, item_path, depth + 1))
                return out
            return self.mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: Any, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, Any] = {}
        for key_node, value_node, merged in self.pairs(node, path):
            if not isinstance(key_node, yaml.ScalarNode):
                where = _mark(key_node.start_mark)
                self.report.add(path, "a mapping key must be plain text", None, where)
                continue
            key = key_node.value
            if not merged:
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    self.report.add(
                        join(path, key),
                        f"duplicate key `{key}`",
                        f"first set on line {first}; a key can appear once in a mapping",
                        _mark(key_node.start_mark),
                    )
                seen[key] = key_node
            value_path = join(path, key)
            self.source.record(value_path, key_node, value_node)
            out[key] = self.node(value_node, value_path, depth + 1)
        return out

    def pairs(self, node: Any, path: str) -> list[tuple[Any, Any, bool]]:
        """The key/value nodes of a mapping, with ``<<`` merges expanded (explicit keys win)."""
        explicit: list[tuple[Any, Any, bool]] = []
        merged: list[tuple[Any, Any, bool]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                explicit.append((key_node, value_node, False))
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if isinstance(source, yaml.MappingNode) and id(source) not in self.active:
                    merged.extend((k, v, True) for k, v, _ in self.pairs(source, path))
                else:
                    self.report.value(path, "`<<` can only merge mappings")
        own = {k.value for k, _, _ in explicit if isinstance(k, yaml.ScalarNode)}
        kept: dict[str, tuple[Any, Any, bool]] = {}
        for pair in merged:
            if isinstance(pair[0], yaml.ScalarNode) and pair[0].value not in own:
                kept.setdefault(pair[0].value, pair)
        return [*kept.values(), *explicit]

    def scalar(self, node: Any, path: str) -> Any:
        if node.tag == _TIMESTAMP:
            return node.value  # Jackson keeps dates as text; the model decides their type
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            self.report.value(
                path,
                f"unsupported YAML tag {node.tag!r}",
                "flows are plain YAML: remove the tag or quote the value",
            )
            return node.value


class _TooBig(Exception):
    """The document nests too deeply or expands too many aliases."""


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [value for _, value in node.value]
    return []


def _expands_past(root: Any, limit: int) -> bool:
    """Whether the document, its aliases expanded, has more than ``limit`` nodes.

    Counted over the composed graph, each distinct node once with its expanded size
    remembered, so an alias bomb is refused in the time its few lines take to read
    rather than after a walk of the million values it stands for. A recursive alias
    counts nothing here; the walk reports it.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes.get(id(child), 0) for child in _children(node))
            if total > limit:
                return True
            sizes[key] = total
        elif key not in sizes and key not in open_nodes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return False


def _yaml_error(exc: Any, text: str) -> tuple[str, str | None, tuple[int, int]]:
    mark = exc.problem_mark or exc.context_mark
    where = _mark(mark) if mark is not None else (1, 1)
    problem = (exc.problem or "malformed document").strip()
    context = (exc.context or "").strip()
    if problem.startswith("but ") and context:
        message = f"invalid YAML: {context}, {problem}"
    elif context and exc.context_mark is not None and exc.context_mark is not mark:
        message = f"invalid YAML: {problem} ({context} at line {exc.context_mark.line + 1})"
    else:
        message = f"invalid YAML: {problem}"
    hint = _yaml_hint(problem, text, where)
    for kind, bracket in (("flow sequence", "["), ("flow mapping", "{")):
        if kind in context and exc.context_mark is not None:
            line = exc.context_mark.line + 1
            hint = (
                f"close the `{bracket}` opened on line {line}, or quote a value that starts with it"
            )
    return message, hint, where


def _yaml_hint(problem: str, text: str, where: tuple[int, int]) -> str | None:
    lines = text.splitlines()
    line = lines[where[0] - 1] if 0 < where[0] <= len(lines) else ""
    if "tab character" in problem or ("cannot start any token" in problem and "\t" in line):
        return "YAML does not allow tabs for indentation: use spaces"
    if "mapping values are not allowed" in problem:
        return "put each `key: value` on its own line, or quote a value that contains `: `"
    if "expected ':'" in problem or "expected key" in problem:
        return "check the indentation: the keys of one mapping must line up"
    if "found another document" in problem or "single document" in problem:
        return "a flow file holds one flow: remove the `---` separator"
    return "check the indentation and quoting here"


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    if _BYTE_OFFSETS:
        offset = len(text.encode("utf-8")[:offset].decode("utf-8", errors="ignore"))
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
