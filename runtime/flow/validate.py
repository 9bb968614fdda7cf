"""Property checks against the typed model: every unknown, missing or mistyped field.

msgspec stops at the first error of a struct; :class:`Checker` walks the fields of
each Struct itself (``msgspec.structs.fields``) so two bad properties in one task give
two problems, each placed at its key or value. Values come back normalized (durations
parsed, nested structs built) ready for ``msgspec.convert``. The semantic rules of
:mod:`runtime.flow.rules` run on every struct checked.
"""

from __future__ import annotations

import enum
import functools
import types
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Final, TypeVar, Union, get_args, get_origin

import msgspec

from runtime.flow import rules
from runtime.flow.durations import DurationError, parse_duration
from runtime.flow.problems import Report, closest, describe_value, join

T = TypeVar("T", bound=msgspec.Struct)


class _Invalid:
    """The marker of a value that failed its checks (its problems are reported)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _Invalid()


@functools.cache
def struct_fields(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """The fields of ``cls`` by their YAML name."""
    return {info.encode_name: info for info in msgspec.structs.fields(cls)}


def yaml_name(cls: type[msgspec.Struct], attribute: str) -> str:
    """The YAML name of the attribute ``attribute`` of ``cls``."""
    for name, info in struct_fields(cls).items():
        if info.name == attribute:
            return name
    raise KeyError(attribute)


class Checker:
    """Checks plain data against the model's Structs, reporting every problem."""

    def __init__(self, report: Report) -> None:
        self.report = report
        #: when set, an expression where ``tp`` takes no string is handed to this hook
        #: (path, value, tp) and its result used instead (dynamic properties, see
        #: runtime.flow.dynamic)
        self.on_expression: Callable[[str, str, Any], Any] | None = None

    def build(self, raw: Any, cls: type[T], path: str) -> T | _Invalid:
        """Check ``raw`` against ``cls`` and build it."""
        props = self.struct(raw, cls, path)
        if isinstance(props, _Invalid):
            return INVALID
        return self.convert(props, cls, path)

    def convert(self, props: Mapping[str, Any], cls: type[T], path: str) -> T | _Invalid:
        """``msgspec.convert`` of checked properties (a failure here is a model gap)."""
        try:
            return msgspec.convert(props, cls)
        except msgspec.ValidationError as exc:
            self.report.value(path, _from_validation(str(exc)))
            return INVALID

    def struct(
        self,
        raw: Any,
        cls: type[msgspec.Struct],
        path: str,
        *,
        origins: Mapping[str, str] | None = None,
        skip: frozenset[str] = frozenset(),
        what: str = "",
    ) -> dict[str, Any] | _Invalid:
        """Check the mapping ``raw`` against the fields of ``cls``.

        ``origins`` gives the path of keys that come from elsewhere (plugin defaults);
        keys in ``skip`` are passed through unchecked (the caller builds them); ``what``
        names the thing in messages (``" for io.kestra.plugin.core.log.Log"``).
        """
        if not isinstance(raw, Mapping):
            self.report.value(path, f"expected a mapping, got {describe_value(raw)}")
            return INVALID
        config = cls.__struct_config__
        fields = struct_fields(cls)
        origins = origins or {}
        out: dict[str, Any] = {}
        valid = True
        for key, value in raw.items():
            key_path = origins.get(key) or join(path, str(key))
            info = fields.get(key) if isinstance(key, str) else None
            if key == config.tag_field or key in skip:
                out[key] = value
            elif info is None:
                if config.forbid_unknown_fields:
                    self._unknown_field(str(key), key_path, fields, what)
                    valid = False
                else:
                    out[key] = value
            else:
                checked = self.value(value, info.type, key_path, key)
                if isinstance(checked, _Invalid):
                    valid = False
                else:
                    out[key] = checked
        for name, info in fields.items():
            if info.required and name not in raw and name != config.tag_field:
                self.report.value(
                    path, f"missing required field `{name}`{what}", f"add `{name}: ...`"
                )
                valid = False
        rules.check_struct(cls, out, path, self.report)
        return out if valid else INVALID

    def value(self, value: Any, tp: Any, path: str, name: str) -> Any:
        """Check ``value`` against the type ``tp``; the normalized value or INVALID."""
        if tp is Any or tp is object:
            return value
        expression = isinstance(value, str) and ("{{" in value or "{%" in value)
        if self.on_expression is not None and expression and str not in _union_args(tp):
            return self.on_expression(path, value, tp)
        options = _union_args(tp)
        if value is None:
            if type(None) in options:
                return None
            return self._mistyped(value, tp, path, name)
        options = [option for option in options if option is not type(None)]
        structs = [option for option in options if _is_struct(option)]
        if isinstance(value, Mapping) and structs:
            if len(structs) > 1:
                return self._tagged(value, structs, path, name)
            return self.build(value, structs[0], path)
        for option in options:
            if _matches(value, option):
                return self._value_as(value, option, path, name)
        if str in options and isinstance(value, int | float):
            # Jackson turns scalars into strings where a string is expected; so do we.
            return str(value).lower() if isinstance(value, bool) else str(value)
        return self._mistyped(value, tp, path, name)

    def _value_as(self, value: Any, tp: Any, path: str, name: str) -> Any:
        origin = get_origin(tp)
        if tp is timedelta:
            try:
                return parse_duration(value)
            except DurationError as exc:
                self.report.value(path, f"`{name}` is not a valid duration: {value!r}", str(exc))
                return INVALID
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            allowed = [member.value for member in tp]
            if value not in allowed:
                suggestion = closest(str(value), [str(a) for a in allowed])
                hint = f"did you mean `{suggestion}`?" if suggestion else None
                choices = ", ".join(map(str, allowed))
                self.report.value(path, f"`{name}` must be one of {choices}, got {value!r}", hint)
                return INVALID
            return value
        if origin is dict:
            _, item_type = get_args(tp)
            items = {
                key: self.value(item, item_type, join(path, str(key)), str(key))
                for key, item in value.items()
            }
            invalid = any(isinstance(v, _Invalid) for v in items.values())
            return INVALID if invalid else items
        if origin in (list, tuple):
            item_type = get_args(tp)[0]
            items_list = [
                self.value(item, item_type, f"{path}[{index}]", name)
                for index, item in enumerate(value)
            ]
            invalid = any(isinstance(v, _Invalid) for v in items_list)
            return INVALID if invalid else items_list
        if tp is float and isinstance(value, int):
            return float(value)
        return value

    def _tagged(
        self, value: Mapping[str, Any], options: list[type[msgspec.Struct]], path: str, name: str
    ) -> Any:
        tag_field = options[0].__struct_config__.tag_field or "type"
        by_tag = {str(option.__struct_config__.tag): option for option in options}
        tag = value.get(tag_field)
        known = ", ".join(sorted(by_tag))
        if tag is None:
            self.report.value(
                path, f"missing required field `{tag_field}` in `{name}`", f"one of {known}"
            )
            return INVALID
        if tag not in by_tag:
            suggestion = closest(str(tag), by_tag)
            hint = f"did you mean `{suggestion}`?" if suggestion else f"one of {known}"
            self.report.value(join(path, tag_field), f"unknown {name} {tag_field} {tag!r}", hint)
            return INVALID
        return self.build(value, by_tag[tag], path)

    def _unknown_field(self, key: str, path: str, fields: Mapping[str, Any], what: str) -> None:
        suggestion = closest(key, fields)
        if suggestion:
            hint = f"did you mean `{suggestion}`?"
        else:
            hint = f"known fields: {', '.join(sorted(fields))}"
        self.report.key(path, f"unknown field `{key}`{what}", hint)

    def _mistyped(self, value: Any, tp: Any, path: str, name: str) -> _Invalid:
        hint = None
        if isinstance(value, str) and "{{" in value:
            hint = "this field takes a literal value: expressions are not evaluated here"
        self.report.value(
            path, f"`{name}` must be {describe_type(tp)}, got {describe_value(value)}", hint
        )
        return INVALID


def _union_args(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return list(get_args(tp))
    return [tp]


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the right kind for ``tp`` (its content is checked after)."""
    origin = get_origin(tp) or tp
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
        return isinstance(value, str)
    if tp is timedelta:
        return isinstance(value, str | timedelta)
    if origin is dict:
        return isinstance(value, Mapping)
    if origin in (list, tuple):
        return isinstance(value, list | tuple)
    return False


def describe_type(tp: Any) -> str:
    """``an integer``, ``a list``, ``a string or true/false``: what ``tp`` accepts."""
    options = [option for option in _union_args(tp) if option is not type(None)]
    if len(options) > 1:
        return " or ".join(dict.fromkeys(describe_type(option) for option in options))
    tp = options[0] if options else tp
    origin = get_origin(tp) or tp
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(member.value) for member in tp)
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        timedelta: "an ISO-8601 duration such as PT30S",
        dict: "a mapping",
        list: "a list",
        tuple: "a list",
    }
    if origin in names:
        return names[origin]
    return "a mapping" if _is_struct(tp) else str(tp)


def _from_validation(message: str) -> str:
    message = message.replace("Object contains unknown field", "unknown field")
    return message[:1].lower() + message[1:]
