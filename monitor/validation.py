"""One validation reader for YAML settings: the site policy (monitor/policy.py) and the agent configuration
(agents/config.py) are both read with it.

Validation never stops at the first problem: a :class:`Reader` records every problem as a
:class:`FieldProblem` (the field's path such as ``allow[1].ports[0]``, what is wrong, how to fix it, and the
YAML line and column when the input was YAML) and the caller raises one :class:`ValidationError` subclass
listing them all, so ``camwatch check-config`` shows the whole list at once.

:func:`load_yaml` parses text (or bytes, which must be UTF-8) into a :class:`Document`: the data, where each
field path starts, each scalar as it was written (``007``, which YAML reads as the integer 7) and the keys
written twice in one mapping (YAML silently keeps the last). Syntax errors, characters YAML does not allow,
text that is not UTF-8 and absurd nesting all become one positioned problem, never a traceback.

Pure, like the rest of ``monitor/``: no file is opened here. Readers that check files (the agent
configuration's paths) extend :class:`Reader` where I/O is allowed.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Generic, Self, TypeAlias, TypeVar

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader

__all__ = [
    "CONTROL_RE",
    "MAX_DEPTH",
    "TOPIC_UNSAFE_RE",
    "Document",
    "FieldProblem",
    "Reader",
    "ValidationError",
    "child",
    "describe",
    "duration_text",
    "load_yaml",
    "short",
    "size_text",
    "top_level_keys",
]

_T = TypeVar("_T")

# MQTT topic segments must not contain the separator or wildcards; whitespace and control characters
# would break log lines and the "<site>/<gateway>" observer name.
TOPIC_UNSAFE_RE: Final = re.compile(r"[/+#\s\x00-\x1f\x7f]")
# Everything str.splitlines() breaks on, and other invisibles: escaped so one problem stays one line.
CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DURATION_RE: Final = re.compile(
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+(?:\.[0-9]+)?)s)?"
)
_SIZE_RE: Final = re.compile(r"([0-9]+)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS: Final = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
}  # fmt: skip
# An unindented `key:` line: how top_level_keys() still finds keys in a document that does not parse.
_TOP_KEY_RE: Final = re.compile(r"""^["']?([A-Za-z_][A-Za-z0-9_]*)["']?[ \t]*:(?:[ \t]|$)""", re.MULTILINE)
#: Deepest nesting accepted: the policy and the configuration need fewer than ten levels.
MAX_DEPTH: Final = 100
_YAML_FIX: Final = "check the indentation, colons and quoting near that position"
_TAB_FIX: Final = "indent with spaces; YAML does not allow tabs there"
_UTF8_FIX: Final = "save it as UTF-8"
# Byte order marks of the encodings people save YAML in by mistake (Windows editors), longest first.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def duration_text(seconds: float) -> str:
    """``seconds`` the way a configuration writes it: ``7d``, ``1h30m``, ``90s``, ``0.5s``."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def size_text(size: int) -> str:
    """``size`` bytes the way a configuration writes it: ``64MiB`` when exact, else bytes."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"


# --------------------------------------------------------------------------------------------------
# Problems and errors


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One bad field: its path (e.g. ``allow[1].ports[0]``), what is wrong, and how to fix it.

    ``line``/``column`` (1-based) are set when the input was YAML text. ``field`` is empty for
    problems with the document as a whole (e.g. a YAML syntax error).
    """

    field: str
    problem: str
    fix: str
    line: int | None = None
    column: int | None = None

    def describe(self, source: str) -> str:
        """One line: ``<source>:<line>:<column>: <field>: <problem>; <fix>``, the position left out when not
        known (the compilers' and linters' form, which editors and terminals jump to)."""
        where = f"{source}:{self.line}:{self.column}" if self.line is not None else source
        if self.field:
            return f"{where}: {self.field}: {self.problem}; {self.fix}"
        return f"{where}: {self.problem}; {self.fix}"


_P = TypeVar("_P", bound=FieldProblem)


class ValidationError(ValueError, Generic[_P]):
    """One or more problems in one input; ``problems`` lists them all, one line each in the message."""

    kind: ClassVar[str] = "input"  # what the input is, for "invalid <kind>"

    def __init__(self, problems: Sequence[_P], source: str = "<input>") -> None:
        if not problems:
            raise ValueError(f"{type(self).__name__} needs at least one problem")
        self.problems: list[_P] = list(problems)
        self.source = source
        super().__init__("\n".join(self._line(p) for p in self.problems))

    def _line(self, problem: _P) -> str:
        return problem.describe(self.source)

    def __reduce__(self) -> tuple[type[ValidationError[_P]], tuple[list[_P], str]]:
        # The default reduce would call the class with the message and fail: keep it picklable.
        return (type(self), (self.problems, self.source))


# --------------------------------------------------------------------------------------------------
# Values in messages


def child(path: str, key: object) -> str:
    """``path.key``, or ``key`` at the top level."""
    return f"{path}.{key}" if path else str(key)


def short(value: object, limit: int = 60) -> str:
    """A value for a message: control characters escaped (one problem, one line), long text cut."""
    text = (
        repr(value) if not isinstance(value, str) else CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], value)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    """Name a value's type the way a YAML author thinks of it."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"true/false ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({short(value)})"
    if isinstance(value, str):
        return f"text '{short(value)}'"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__} value"


# --------------------------------------------------------------------------------------------------
# YAML with positions

_Marks: TypeAlias = dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Document:
    """Parsed YAML: the data, where each field path starts, and each scalar as it was written."""

    data: object
    positions: Mapping[str, tuple[int, int]]
    """Field path -> (line, column), 1-based."""
    texts: Mapping[str, str]
    """Field path -> the scalar's text as written (``007`` for the integer 7), for fixes that quote it."""
    duplicates: tuple[FieldProblem, ...] = ()
    """Keys written twice in one mapping (YAML would silently keep the last), positioned."""
    key_positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Field path -> where its key is written (a problem with the key itself, e.g. an unknown one)."""

    def position(self, path: str) -> tuple[int, int] | None:
        """Where ``path`` starts, or its nearest enclosing field (e.g. the rule a missing 'to' belongs
        to). The document root is not worth naming."""
        while path:
            found = self.positions.get(path)
            if found is not None:
                return found
            path = path[: max(path.rfind("."), path.rfind("["), 0)]
        return None


class _TooDeep(Exception):
    """Nesting beyond :data:`MAX_DEPTH` (internal): where it happened."""

    def __init__(self, line: int | None, column: int | None) -> None:
        super().__init__("nested too deeply")
        self.line, self.column = line, column


class _Loader(yaml.SafeLoader):
    """Safe loader whose value errors (e.g. ``2024-13-01`` read as a date) carry a position, and which
    refuses nesting beyond :data:`MAX_DEPTH`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.nodes.Node | None, index: int) -> yaml.nodes.Node | None:
        # The composer recurses once per level: stop early and cheaply, with a position, rather than
        # at the interpreter's recursion limit after scanning a thousand levels.
        if self._depth >= MAX_DEPTH:
            peek: Callable[[], yaml.Event | None] = self.peek_event  # the stub leaves it untyped
            event = peek()
            mark = event.start_mark if event is not None else None
            if mark is None:
                raise _TooDeep(None, None)
            raise _TooDeep(mark.line + 1, mark.column + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.nodes.Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({exc})", node.start_mark
            ) from exc


def _plain_yaml_error(context: str, problem: str) -> tuple[str, str, bool] | None:
    """PyYAML's wording of the mistakes people make most, in plain words: (what, fix, whether the position
    to name is where the construct opens). None for anything else (PyYAML's own words are then shown)."""
    if problem.startswith("expected <block end>, but found '<block"):
        return (
            "this line is not indented like the lines it belongs with",
            "indent it with the same number of spaces as the keys (or list items) beside it",
            False,
        )
    if "flow sequence" in context and problem.startswith("expected ',' or ']'"):
        return "a list opened with '[' is not closed", "close it with ']', e.g. [a, b]", True
    if "flow mapping" in context and problem.startswith("expected ',' or '}'"):
        return "a mapping opened with '{' is not closed", "close it with '}', e.g. {a: 1}", True
    if "quoted scalar" in context and "end of stream" in problem:
        return "a quoted text is not closed", "add the closing quote", True
    if problem == "mapping values are not allowed here":
        # Either a value with ': ' in it, or a key indented deeper than the key above it (YAML reads it as
        # the rest of that key's value).
        return (
            "a ':' inside a value (a value with ': ' in it, or a key indented deeper than the key above it)",
            'quote a value that contains ": " (x: "a: b"), and indent each key like the keys beside it',
            False,
        )
    if "simple key" in context and problem == "could not find expected ':'":
        return (
            "a line that is neither 'key: value' nor a list item ('- value')",
            "add ':' after the key",
            True,
        )
    return None


def load_yaml(
    text: str | bytes,
    source: str = "<yaml>",
    nested_fix: str = "write a flat document",
) -> Document:
    """Parse one YAML document (bytes must be UTF-8); ``nested_fix`` is the fix for absurd nesting.

    Anything that stops the parse raises :class:`ValidationError` with one problem at once: nothing
    after it can be checked.
    """
    if isinstance(text, bytes):
        text = _decode(text, source)
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader already rejects some characters here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        positions: _Marks = {}
        key_positions: _Marks = {}
        texts: dict[str, str] = {}
        duplicates: list[FieldProblem] = []
        if node is not None:
            _walk(node, "", positions, key_positions, texts, duplicates, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(" ".join(p.split()) for p in (exc.context, exc.problem) if p) or "unreadable"
        fix = _TAB_FIX if "'\\t'" in what else _YAML_FIX
        plain = _plain_yaml_error(exc.context or "", exc.problem or "")
        if plain is not None:
            what, fix, at_start = plain
            if at_start and exc.context_mark is not None:
                mark = exc.context_mark  # where the unclosed thing opens, not the end of the file
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ValidationError([FieldProblem("", f"invalid YAML: {what}", fix, line, column)], source) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; no mark, a position
        line, column = _line_column(text, exc.position)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        problem = FieldProblem(
            "", f"invalid YAML: the character {char!r} is not allowed", "remove it", line, column
        )
        raise ValidationError([problem], source) from exc
    except yaml.YAMLError as exc:  # any other parser error: no position to name
        problem = FieldProblem("", f"invalid YAML: {short(str(exc), 120)}", _YAML_FIX)
        raise ValidationError([problem], source) from exc
    except _TooDeep as exc:
        problem = FieldProblem("", "the YAML is nested too deeply", nested_fix, exc.line, exc.column)
        raise ValidationError([problem], source) from exc
    except RecursionError as exc:  # a backstop: MAX_DEPTH comes first
        problem = FieldProblem("", "the YAML is nested too deeply", nested_fix)
        raise ValidationError([problem], source) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return Document(data, positions, texts, tuple(duplicates), key_positions)


def top_level_keys(text: str | bytes) -> frozenset[str]:
    """The text keys of a YAML mapping document; for a document that does not parse (or is not
    UTF-8), the keys of its unindented ``key:`` lines, so a caller can still tell what it is."""
    try:
        data = load_yaml(text).data
    except ValidationError:
        raw = text if isinstance(text, str) else _sniff(text)
        return frozenset(m.group(1) for m in _TOP_KEY_RE.finditer(raw))
    return frozenset(k for k in data if isinstance(k, str)) if isinstance(data, Mapping) else frozenset()


def _decode(data: bytes, source: str) -> str:
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise ValidationError([FieldProblem("", f"is {name} text, not UTF-8", _UTF8_FIX)], source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data[: exc.start].decode("utf-8", "replace"), None)
        problem = FieldProblem("", f"is not UTF-8 text ({exc.reason})", _UTF8_FIX, line, column)
        raise ValidationError([problem], source) from exc
    if "\x00" in text:  # valid UTF-8, but NUL bytes: UTF-16 without a byte order mark, or not text at all
        line, column = _line_column(text, text.index("\x00"))
        problem = FieldProblem(
            "", "has NUL bytes: it is UTF-16 or binary, not UTF-8 text", _UTF8_FIX, line, column
        )
        raise ValidationError([problem], source)
    return text


def _sniff(data: bytes) -> str:
    """Text good enough to look for keys in, whatever the encoding."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data.decode(name.lower(), "replace")
    if b"\x00" in data:  # UTF-16 without a byte order mark: ASCII has its NUL half after (LE) or before (BE)
        little = data[1::2].count(0) >= data[0::2].count(0)
        return data.decode("utf-16-le" if little else "utf-16-be", "replace")
    return data.decode("utf-8", "replace")


def _line_column(text: str, position: int | None) -> tuple[int, int]:
    """1-based line and column of ``position`` in ``text`` (its end if None)."""
    end = len(text) if position is None else position
    line = text.count("\n", 0, end) + 1
    return line, end - (text.rfind("\n", 0, end) + 1) + 1


def _walk(
    node: yaml.nodes.Node,
    path: str,
    positions: _Marks,
    key_positions: _Marks,
    texts: dict[str, str],
    problems: list[FieldProblem],
    seen: set[int],
) -> None:
    """Record where each field path (and its key) starts and how its scalar was written; report duplicate
    keys."""
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.nodes.ScalarNode):
        texts.setdefault(path, str(node.value))
    if id(node) in seen:  # anchors can make a node its own descendant
        return
    seen.add(id(node))
    if isinstance(node, yaml.nodes.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.nodes.ScalarNode) else "?"
            sub = child(path, key)
            if key in keys and key != "<<":
                problems.append(
                    FieldProblem(
                        sub,
                        "appears twice in the same mapping; YAML would silently keep only the last one",
                        "merge the two into one entry",
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                    )
                )
            keys.add(key)
            key_positions.setdefault(sub, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            _walk(value_node, sub, positions, key_positions, texts, problems, seen)
    elif isinstance(node, yaml.nodes.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, f"{path}[{index}]", positions, key_positions, texts, problems, seen)


# --------------------------------------------------------------------------------------------------
# The reader


class Reader:
    """Typed reads from parsed YAML that record a problem instead of raising, so one pass finds all.

    Each getter takes the mapping that holds the value (``sec``), the mapping's path and the key, returns
    the value or, when it is left out or bad, ``default``; a bad value adds a problem naming the field and
    the fix. With a :class:`Document` every problem gets the YAML position of its field (or of the
    nearest enclosing one), and fixes can quote a value as it was written.
    """

    def __init__(
        self, document: Document | None = None, hints: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        self.problems: list[FieldProblem] = []
        self.warnings: list[str] = []
        self.document = document
        #: Per mapping path: unknown key -> what to say instead of a difflib guess (e.g. the right section).
        self.hints: Mapping[str, Mapping[str, str]] = hints or {}
        self.prefix = ""

    def at(self, prefix: str) -> Self:
        """A view that reads a nested document (e.g. the inline policy at ``policy``): its paths are
        relative to ``prefix``, its problems and warnings go to this reader's lists."""
        view = copy.copy(self)  # shallow: the problem and warning lists stay shared
        view.prefix = child(self.prefix, prefix)
        return view

    # -- recording ------------------------------------------------------------------------------

    def add(self, path: str, problem: str, fix: str, *, at_key: bool = False) -> None:
        """Record a problem at ``path`` (relative to the prefix), positioned if the document knows it: at its
        value, or ``at_key`` at its key."""
        full = self._full(path)
        where = None
        if self.document is not None:
            where = self.document.key_positions.get(full) if at_key else None
            where = where or self.document.position(full)
        line, column = where if where is not None else (None, None)
        self.problems.append(FieldProblem(full, problem, fix, line, column))

    def warn(self, path: str, message: str) -> None:
        """Record a warning: ``<path>: <message>``."""
        self.warnings.append(f"{self._full(path)}: {message}")

    def written(self, path: str, value: object) -> str:
        """``value`` as the document spells it (``007`` for the integer 7), else ``str(value)``."""
        text = self.document.texts.get(self._full(path)) if self.document is not None else None
        return text if text is not None else str(value)

    def _full(self, path: str) -> str:
        return (child(self.prefix, path) if path else self.prefix) if self.prefix else path

    # -- structure ------------------------------------------------------------------------------

    def keys(
        self,
        data: Mapping[object, object],
        path: str,
        known: Sequence[str],
        hints: Mapping[str, str] | None = None,
    ) -> None:
        """Report every key of ``data`` that is not in ``known``, with a suggestion."""
        if hints is None:
            hints = self.hints.get(path, {})
        for key in data:
            if isinstance(key, str) and key in known:
                continue
            self.unknown_key(path, short(key) if key != "" else "''", known, hints)

    def unknown_key(self, path: str, name: str, known: Sequence[str], hints: Mapping[str, str]) -> None:
        """Report one unknown key: a hint for it, else the closest known key, else "remove it"."""
        hint = hints.get(name)
        if hint is None:
            close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "remove it"
        self.add(
            child(path, name), "is not a known key", f"{hint} (known keys: {', '.join(known)})", at_key=True
        )

    def section(
        self, parent: Mapping[object, object], path: str, key: str, known: Sequence[str]
    ) -> Mapping[object, object]:
        """A nested mapping (empty when left out or null), with its unknown keys reported."""
        full = child(path, key)
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(
                full,
                f"must be a mapping, not {describe(value)}",
                f"write it as '{key}:' with keys indented below",
            )
            return {}
        self.keys(value, full, known)
        return value

    def as_mapping(self, value: object, path: str, what: str, example: str) -> Mapping[object, object] | None:
        """``value`` if it is a mapping; else a problem saying it must be ``what``, like ``example``."""
        if isinstance(value, Mapping):
            return value
        self.add(path, f"must be {what}, not {describe(value)}", f"write it like {example}")
        return None

    def as_list(self, value: object, path: str, example: str) -> list[object] | None:
        """A list value; a scalar where a list belongs is the commonest slip, so its fix shows the list."""
        if isinstance(value, list | tuple):
            return list(value)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            self.add(path, f"must be a list, not {describe(value)}", f"write a list: [{short(value)}]")
        else:
            self.add(path, f"must be a list, not {describe(value)}", f"write a list, e.g. {example}")
        return None

    def items(
        self, value: object, path: str, example: str, parse: Callable[[object, str, Self], _T | None]
    ) -> list[_T] | None:
        """Parse each item of a list with ``parse(item, item_path, reader)``; the items that parsed, or
        ``None`` if the value itself is not a list."""
        items = self.as_list(value, path, example)
        if items is None:
            return None
        parsed: list[_T] = []
        for index, item in enumerate(items):
            result = parse(item, f"{path}[{index}]", self)
            if result is not None:
                parsed.append(result)
        return parsed

    # -- typed values ---------------------------------------------------------------------------

    def text(
        self,
        sec: Mapping[object, object],
        path: str,
        key: str,
        default: str | None,
        example: str,
        plain: bool = True,
    ) -> str | None:
        """Text; ``plain`` also refuses empty text, surrounding spaces and control characters."""
        full = child(path, key)
        value = sec.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.add(full, f"must be text, not {describe(value)}", f"write it like {key}: {example}")
            return default
        if not isinstance(value, str):
            # YAML reads `site: 007` as the number 7: quote what was written, not the number.
            self.add(
                full,
                f"must be text, not {describe(value)}",
                f'quote it: {key}: "{self.written(full, value)}"',
            )
            return default
        if plain and (not value.strip() or value != value.strip() or re.search(r"[\x00-\x1f\x7f]", value)):
            self.add(
                full,
                f"'{short(value)}' is empty or has spaces around it or control characters",
                f"write it like {key}: {example}",
            )
            return default
        return value

    def topic_segment(self, path: str, value: str) -> str | None:
        """``value`` if it can be one MQTT topic level (a site or gateway name); else a problem."""
        if not TOPIC_UNSAFE_RE.search(value):
            return value
        suggestion = TOPIC_UNSAFE_RE.sub("-", value.strip()).strip("-") or "depot-7"
        self.add(
            path,
            f"'{short(value)}' contains '/', '+', '#', whitespace or control characters, which cannot be "
            "in an MQTT topic segment",
            f"use letters, digits, '-', '_' or '.', e.g. '{short(suggestion)}'",
        )
        return None

    def integer(
        self,
        sec: Mapping[object, object],
        path: str,
        key: str,
        default: int,
        lo: int,
        hi: int,
        unit: str = "",
    ) -> int:
        """A whole number between ``lo`` and ``hi``."""
        full = child(path, key)
        value = sec.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            fix = "write it without quotes" if isinstance(value, str) and value.strip().isdigit() else ""
            self.add(
                full,
                f"must be a whole number, not {describe(value)}",
                fix or f"write a number between {lo} and {hi}, e.g. {key}: {default}",
            )
            return default
        if not lo <= value <= hi:
            what = "port" if key.endswith("port") else "value"
            self.add(
                full, f"{what} {value}{unit} is out of range", f"use a {what} between {lo} and {hi}{unit}"
            )
            return default
        return value

    def number(
        self, sec: Mapping[object, object], path: str, key: str, default: float, lo: float, hi: float
    ) -> float:
        """A number (whole or decimal) between ``lo`` and ``hi``."""
        full = child(path, key)
        value = sec.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(
                full,
                f"must be a number, not {describe(value)}",
                f"write a number between {lo:g} and {hi:g} without quotes, e.g. {key}: {default:g}",
            )
            return default
        if not lo <= value <= hi:
            self.add(full, f"{value:g} is out of range", f"use a number between {lo:g} and {hi:g}")
            return default
        return float(value)

    def boolean(
        self, sec: Mapping[object, object], path: str, key: str, default: bool, fix: str | None = None
    ) -> bool:
        """``true`` or ``false``; ``fix`` replaces the standard fix for anything else."""
        value = sec.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(
                child(path, key),
                f"must be true or false, not {describe(value)}",
                fix or f"write {key}: true or {key}: false (no quotes)",
            )
            return default
        return value

    def choice(
        self, sec: Mapping[object, object], path: str, key: str, default: str, choices: Sequence[str]
    ) -> str:
        """One of ``choices``; a near miss gets a "did you mean"."""
        value = sec.get(key)
        if value is None:
            return default
        if isinstance(value, str) and value in choices:
            return value
        close = difflib.get_close_matches(str(value).lower(), choices, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        self.add(
            child(path, key),
            f"must be one of {', '.join(choices)}, not {describe(value)}",
            f"{hint}write e.g. {key}: {default}",
        )
        return default

    def seconds(
        self, sec: Mapping[object, object], path: str, key: str, default: float, lo: float, hi: float
    ) -> float:
        """A duration: a number of seconds, or text like 90s, 5m, 1h30m, 1d."""
        full = child(path, key)
        value = sec.get(key)
        if value is None:
            return default
        result: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            match = _DURATION_RE.fullmatch(value.strip())
            if match is not None and value.strip():
                d, h, m, s = (match.group(g) for g in ("d", "h", "m", "s"))
                result = int(d or 0) * 86400 + int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)
        if result is None:
            self.add(
                full,
                f"must be a duration, not {describe(value)}",
                f"write seconds (e.g. {key}: {default:g}) or a duration like 90s, 5m, 1h",
            )
            return default
        if not lo <= result <= hi:
            written = f"{short(value.strip())} ({result:g} s)" if isinstance(value, str) else f"{result:g} s"
            self.add(
                full,
                f"{written} is out of range",
                f"use a duration from {duration_text(lo)} to {duration_text(hi)}",
            )
            return default
        return result

    def size(self, sec: Mapping[object, object], path: str, key: str, default: int, lo: int, hi: int) -> int:
        """A size: a number of bytes, or text like 100MiB, 1 GB."""
        full = child(path, key)
        value = sec.get(key)
        if value is None:
            return default
        result: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, str):
            match = _SIZE_RE.fullmatch(value.strip())
            if match is not None and len(match.group(1)) <= 16:
                result = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()]
        if result is None:
            self.add(
                full,
                f"must be a size, not {describe(value)}",
                f"write bytes (e.g. {key}: {default}) or a size like 100MiB or 1GB",
            )
            return default
        if not lo <= result <= hi:
            self.add(
                full,
                f"{result} bytes is out of range",
                f"use a size from {size_text(lo)} to {size_text(hi)}",
            )
            return default
        return result
