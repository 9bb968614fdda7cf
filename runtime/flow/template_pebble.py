"""Translate Kestra's Pebble template syntax into the Jinja2 source that runs it.

Pebble and Jinja share ``{{ }}``, ``{% %}`` and ``{# #}`` but not their expression
grammar: Pebble has ``??``, ``???``, the ternary ``a ? b : c``, ``contains``,
``equals``, ``..`` ranges, zero-based ``loop.index``, and its own precedences
(``|`` binds looser than ``~``, ``??`` and ``..``; ``not`` binds tightest). So every
expression is parsed here with Pebble's precedence table and re-emitted as fully
parenthesised Jinja, where the Pebble-only operators become calls to internal
helpers (named ``__pb_*``; templates cannot name them). Unknown filters, tests,
functions and tags are syntax errors, reported with their offset in the source.

Text outside the delimiters is copied unchanged, and every translated block keeps
its newlines, so Jinja's line numbers are the template's line numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

HELPER = "__pb_"

# Pebble's binary operators and precedences (Pebble core plus Kestra's ?? and ???).
_BINARY = {
    "or": 10,
    "and": 15,
    "is": 20,
    "is not": 20,
    "contains": 20,
    "==": 30,
    "equals": 30,
    "!=": 30,
    "<": 30,
    ">": 30,
    "<=": 30,
    ">=": 30,
    "+": 40,
    "-": 40,
    "*": 60,
    "/": 60,
    "%": 60,
    "|": 100,
    "~": 110,
    "..": 120,
    "??": 120,
    "???": 120,
}
_WORD_OPERATORS = frozenset({"or", "and", "is", "contains", "equals"})
_UNARY_PRECEDENCE = 500
_SYMBOLS = (
    "???",
    "??",
    "==",
    "!=",
    "<=",
    ">=",
    "..",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "%",
    "~",
    "|",
    "=",
    "?",
    ":",
    ".",
    ",",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
)
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE = re.compile(r"(\d+)(\.\d+)?([lLdDfF])?")
_SPACE_RE = re.compile(r"\s+")
_DELIMITER_RE = re.compile(r"\{\{|\{%|\{#")
_RAW_END_RE = re.compile(r"\{%(-?)\s*end(?:raw|verbatim)\s*(-?)%\}")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
# Names Jinja gives a meaning of its own; a template may not use them as variables.
_RESERVED = frozenset({"self", "caller", "varargs", "kwargs", "super", "True", "False", "None"})
_RESERVED |= frozenset({"in", "if", "else", "not", "and", "or", "is"})
_UNSUPPORTED_TAGS = frozenset(
    {"macro", "block", "extends", "include", "import", "from", "embed", "parallel", "cache"}
    | {"flush", "autoescape", "call", "with", "do"}
)


@dataclass(frozen=True, slots=True)
class Problem:
    """A syntax error at an offset of the template source."""

    message: str
    offset: int


class TranslationError(Exception):
    """The template has syntax errors; every one found is listed."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Names:
    """The filters, tests and functions a template may use."""

    filters: Collection[str]
    tests: Collection[str]
    functions: Collection[str]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "number", "string", "symbol", "end"
    value: str | int | float
    offset: int


class _Failure(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.problem = Problem(message, offset)


def translate(source: str, names: Names) -> str:
    """Return the Jinja source for a Pebble template, or raise TranslationError."""
    out: list[str] = []
    problems: list[Problem] = []
    position = 0
    while True:
        match = _DELIMITER_RE.search(source, position)
        if match is None:
            out.append(source[position:])
            break
        out.append(source[position : match.start()])
        opener = match.group()
        if opener == "{#":
            end = source.find("#}", match.end())
            if end < 0:
                problems.append(Problem("this comment is never closed; add `#}`", match.start()))
                break
            out.append(source[match.start() : end + 2])
            position = end + 2
            continue
        closer = "}}" if opener == "{{" else "%}"
        try:
            text, position = _translate_block(source, match.start(), opener, closer, names)
            out.append(text)
        except _Failure as failure:
            problems.append(failure.problem)
            resume = source.find(closer, max(failure.problem.offset, match.end()))
            if resume < 0:
                break
            position = resume + len(closer)
    if problems:
        raise TranslationError(problems)
    return "".join(out)


def _translate_block(
    source: str, start: int, opener: str, closer: str, names: Names
) -> tuple[str, int]:
    """Translate one ``{{ }}`` or ``{% %}`` block; return its Jinja text and the end offset."""
    body_start = start + 2
    left_trim = source.startswith("-", body_start)
    tokens, end, right_trim = _lex(source, body_start + left_trim, closer, start)
    parser = _Parser(tokens, names)
    newlines = "\n" * source.count("\n", start, end)
    left, right = "-" if left_trim else "", "-" if right_trim else ""
    if opener == "{{":
        body = parser.whole_expression()
        return f"{{{{{left} {body}{newlines} {right}}}}}", end
    tag = parser.tag()
    if tag in ("raw", "verbatim"):
        raw_end = _RAW_END_RE.search(source, end)
        if raw_end is None:
            raise _Failure(f"`{{% {tag} %}}` is never closed; add `{{% end{tag} %}}`", start)
        closing = f"{{%{raw_end.group(1)} endraw {raw_end.group(2)}%}}"
        content = source[end : raw_end.start()]
        return f"{{%{left} raw {right}%}}{content}{closing}", raw_end.end()
    return f"{{%{left} {tag}{newlines} {right}%}}", end


def _lex(
    source: str, position: int, closer: str, block_start: int
) -> tuple[list[_Token], int, bool]:
    """Tokens up to the closing delimiter (outside brackets); return them, end, right trim."""
    tokens: list[_Token] = []
    stack: list[str] = []
    while True:
        space = _SPACE_RE.match(source, position)
        if space:
            position = space.end()
        if position >= len(source):
            raise _Failure(f"this block is never closed; add `{closer}`", block_start)
        if not stack:
            for trim, mark in ((False, closer), (True, "-" + closer)):
                if source.startswith(mark, position):
                    tokens.append(_Token("end", "", position))
                    return tokens, position + len(mark), trim
        char = source[position]
        if char in "'\"":
            value, end = _lex_string(source, position)
            tokens.append(_Token("string", value, position))
            position = end
            continue
        number = _NUMBER_RE.match(source, position)
        if number:
            whole, fraction, suffix = number.groups()
            is_float = fraction is not None or (suffix or "").lower() in ("d", "f")
            literal = float(whole + (fraction or "")) if is_float else int(whole)
            tokens.append(_Token("number", literal, position))
            position = number.end()
            continue
        name = _NAME_RE.match(source, position)
        if name:
            tokens.append(_Token("name", name.group(), position))
            position = name.end()
            continue
        symbol = next((s for s in _SYMBOLS if source.startswith(s, position)), None)
        if symbol is None:
            raise _Failure(f"unexpected character `{char}`", position)
        if symbol in _OPENERS:
            stack.append(_OPENERS[symbol])
        elif symbol in (")", "]", "}") and (not stack or stack.pop() != symbol):
            raise _Failure(f"unbalanced `{symbol}`", position)
        tokens.append(_Token("symbol", symbol, position))
        position += len(symbol)


def _lex_string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    out: list[str] = []
    position = start + 1
    while position < len(source):
        char = source[position]
        if char == quote:
            return "".join(out), position + 1
        if char == "\\" and position + 1 < len(source):
            following = source[position + 1]
            # Unknown escapes keep their backslash, so regexes like '\d' survive.
            out.append(_ESCAPES.get(following, "\\" + following))
            position += 2
            continue
        out.append(char)
        position += 1
    raise _Failure("this string is never closed", start)


def _literal(text: str) -> str:
    """A Jinja string literal that decodes back to `text` exactly."""
    return json.dumps(text, ensure_ascii=False)


def _atom(expression: str) -> str:
    """Parenthesise unless the expression is a bare name."""
    return expression if _NAME_RE.fullmatch(expression) else f"({expression})"


class _Parser:
    """Pebble's precedence-climbing expression parser, emitting Jinja source."""

    def __init__(self, tokens: list[_Token], names: Names) -> None:
        self.tokens = tokens
        self.index = 0
        self.names = names

    # -- token helpers

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def at(self, kind: str, value: str | None = None, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == kind and (value is None or token.value == value)

    def expect(self, kind: str, value: str | None = None, what: str = "") -> _Token:
        if not self.at(kind, value):
            token = self.peek()
            wanted = what or (f"`{value}`" if value else f"a {kind}")
            raise _Failure(f"expected {wanted}, found {_describe(token)}", token.offset)
        return self.advance()

    def name(self, what: str) -> str:
        token = self.expect("name", what=what)
        assert isinstance(token.value, str)
        return token.value

    # -- blocks

    def whole_expression(self) -> str:
        if self.at("end"):
            raise _Failure("empty expression", self.peek().offset)
        expression = self.expression()
        self.expect("end", what="the end of the expression")
        return expression

    def tag(self) -> str:
        token = self.peek()
        tag = self.name("a tag name")
        if tag in ("if", "elseif", "elif"):
            condition = self.expression()
            result = f"{'if' if tag == 'if' else 'elif'} {condition}"
        elif tag == "for":
            variable = self.variable_name()
            if not self.at("name", "in"):
                raise _Failure("expected `in` in the for tag", self.peek().offset)
            self.advance()
            result = f"for {variable} in {HELPER}iter({self.expression()})"
        elif tag == "set":
            variable = self.variable_name()
            self.expect("symbol", "=")
            result = f"set {variable} = {self.expression()}"
        elif tag == "filter":
            chain = [self.filter_call()]
            while self.at("symbol", "|"):
                self.advance()
                chain.append(self.filter_call())
            result = "filter " + "|".join(chain)
        elif tag in ("else", "endif", "endfor", "endfilter", "raw", "verbatim"):
            result = tag
        elif tag in _UNSUPPORTED_TAGS or tag.startswith("end"):
            raise _Failure(f"the `{tag}` tag is not supported", token.offset)
        else:
            raise _Failure(f"unknown tag `{tag}`", token.offset)
        self.expect("end", what=f"the end of the `{tag}` tag")
        return result

    def variable_name(self) -> str:
        token = self.peek()
        name = self.name("a variable name")
        if name in _RESERVED or name.startswith("__"):
            raise _Failure(f"`{name}` cannot be used as a variable name", token.offset)
        return name

    # -- expressions

    def expression(self, min_precedence: int = 0) -> str:
        token = self.peek()
        if self.at("name", "not") or (self.at("symbol") and token.value in ("-", "+")):
            self.advance()
            operand = self.expression(_UNARY_PRECEDENCE)
            expression = f"(not {operand})" if token.value == "not" else f"({token.value}{operand})"
        elif self.at("symbol", "("):
            self.advance()
            inner = self.expression()
            self.expect("symbol", ")")
            expression = self.postfix(f"({inner})")
        else:
            expression = self.primary()
        while True:
            operator = self.binary_operator()
            if operator is None or _BINARY[operator] < min_precedence:
                break
            self.advance()
            if operator == "is not":
                self.advance()
            if operator == "|":
                expression = f"({_atom(expression)}|{self.filter_call()})"
            elif operator in ("is", "is not"):
                expression = self.test(expression, negated=operator == "is not")
            else:
                right = self.expression(_BINARY[operator] + 1)
                expression = _combine(operator, expression, right)
        if min_precedence == 0 and self.at("symbol", "?"):
            self.advance()
            yes = self.expression()
            self.expect("symbol", ":", what="`:` in the conditional expression")
            no = self.expression()
            expression = f"({yes} if {expression} else {no})"
        return expression

    def binary_operator(self) -> str | None:
        token = self.peek()
        if token.kind == "symbol" and token.value in _BINARY:
            return str(token.value)
        if token.kind == "name" and token.value in _WORD_OPERATORS:
            if token.value == "is" and self.at("name", "not", ahead=1):
                return "is not"
            return str(token.value)
        return None

    def primary(self) -> str:
        token = self.advance()
        if token.kind == "string":
            assert isinstance(token.value, str)
            return self.postfix(_literal(token.value))
        if token.kind == "number":
            return self.postfix(repr(token.value))
        if token.kind == "name":
            assert isinstance(token.value, str)
            return self.postfix(self.name_expression(token))
        if token.kind == "symbol" and token.value == "[":
            items = self.sequence("]", self.expression)
            return self.postfix(f"[{', '.join(items)}]")
        if token.kind == "symbol" and token.value == "{":
            pairs = self.sequence("}", self.pair)
            return self.postfix(f"{{{', '.join(pairs)}}}")
        raise _Failure(f"expected a value, found {_describe(token)}", token.offset)

    def name_expression(self, token: _Token) -> str:
        name = str(token.value)
        if name in ("true", "false"):
            return name
        if name in ("null", "none"):
            return "none"
        if self.at("symbol", "("):
            if name not in self.names.functions:
                raise _Failure(f"unknown function `{name}()`", token.offset)
            return f"{HELPER}f_{name}({self.arguments()})"
        if name in _RESERVED or name.startswith("__"):
            raise _Failure(f"`{name}` cannot be used as a variable name", token.offset)
        return name

    def pair(self) -> str:
        key = self.expression()
        self.expect("symbol", ":", what="`:` between a map key and its value")
        return f"{key}: {self.expression()}"

    def sequence(self, closer: str, item: Callable[[], str]) -> list[str]:
        items: list[str] = []
        while not self.at("symbol", closer):
            items.append(item())
            if not self.at("symbol", closer):
                self.expect("symbol", ",", what=f"`,` or `{closer}`")
        self.advance()
        return items

    def arguments(self) -> str:
        self.expect("symbol", "(")
        arguments: list[str] = []
        while not self.at("symbol", ")"):
            if self.at("name") and self.at("symbol", "=", ahead=1):
                keyword = self.name("an argument name")
                self.advance()
                arguments.append(f"{keyword}={self.expression()}")
            else:
                arguments.append(self.expression())
            if not self.at("symbol", ")"):
                self.expect("symbol", ",", what="`,` or `)`")
        self.advance()
        return ", ".join(arguments)

    def postfix(self, expression: str) -> str:
        while True:
            if self.at("symbol", "."):
                self.advance()
                attribute = self.name("an attribute name after `.`")
                if self.at("symbol", "("):
                    arguments = self.arguments()
                    extra = f", {arguments}" if arguments else ""
                    expression = f"{HELPER}method({expression}, {_literal(attribute)}{extra})"
                else:
                    expression = f"{_atom(expression)}.{attribute}"
            elif self.at("symbol", "["):
                self.advance()
                index = self.expression()
                self.expect("symbol", "]")
                expression = f"{_atom(expression)}[{index}]"
            else:
                return expression

    def filter_call(self) -> str:
        token = self.peek()
        name = self.name("a filter name after `|`")
        if name not in self.names.filters:
            raise _Failure(f"unknown filter `{name}`", token.offset)
        return f"{name}({self.arguments()})" if self.at("symbol", "(") else name

    def test(self, expression: str, *, negated: bool) -> str:
        token = self.peek()
        name = self.name("a test name after `is`")
        if name not in self.names.tests:
            raise _Failure(f"unknown test `{name}`", token.offset)
        arguments = f"({self.arguments()})" if self.at("symbol", "(") else ""
        return f"({_atom(expression)} is {'not ' if negated else ''}{name}{arguments})"


def _combine(operator: str, left: str, right: str) -> str:
    if operator in ("??", "???"):
        # Lazy on the right: the left value waits on a per-render stack while the
        # condition decides, so neither side is evaluated twice.
        push = "push" if operator == "??" else "push_defined"
        return f"({HELPER}pop() if {HELPER}{push}({left}) else {HELPER}drop({right}))"
    if operator in ("and", "or"):
        return f"{HELPER}truth({left} {operator} {right})"
    if operator == "~":
        return f"{HELPER}concat({left}, {right})"
    if operator == "contains":
        return f"{HELPER}contains({left}, {right})"
    if operator == "..":
        return f"{HELPER}range({left}, {right})"
    return f"({left} {'==' if operator == 'equals' else operator} {right})"


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the block"
    if token.kind == "string":
        return f"the string {_literal(str(token.value))}"
    return f"`{token.value}`"
