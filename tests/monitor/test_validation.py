"""Tests for monitor.validation: the YAML loader with positions and the reader both validations share."""

from __future__ import annotations

import pickle

import pytest

from monitor.validation import (
    MAX_DEPTH,
    FieldProblem,
    Reader,
    ValidationError,
    duration_text,
    load_yaml,
    size_text,
    top_level_keys,
)


def error_of(text: str | bytes) -> FieldProblem:
    with pytest.raises(ValidationError) as info:
        load_yaml(text, "x.yaml", "write it flat")
    (problem,) = info.value.problems
    assert len(str(info.value).splitlines()) == 1
    return problem


# --------------------------------------------------------------------------------------------------
# load_yaml


def test_positions_texts_and_duplicates() -> None:
    doc = load_yaml("site: 007\nallow:\n  - {name: a, to: [10.0.0.1]}\nsite: again\n")
    assert doc.data == {"site": "again", "allow": [{"name": "a", "to": ["10.0.0.1"]}]}
    assert doc.positions["allow[0].to[0]"] == (3, 20)
    assert doc.texts["allow[0].name"] == "a"
    (duplicate,) = doc.duplicates
    assert (duplicate.field, duplicate.line, duplicate.column) == ("site", 4, 1)
    # The first 'site' was written 007 (YAML reads the integer 7): the text as written is kept.
    assert load_yaml("site: 007\n").texts["site"] == "007"
    assert doc.position("allow[0].ports[3]") == (3, 5)  # a missing field: its nearest enclosing one
    assert doc.position("") is None


def test_bytes_must_be_utf8() -> None:
    assert load_yaml("site: dépôt\n".encode()).data == {"site": "dépôt"}
    problem = error_of("site: a\nname: dépôt\n".encode("latin-1"))
    assert problem.problem == "is not UTF-8 text (invalid continuation byte)"
    assert problem.fix == "save it as UTF-8"
    assert (problem.line, problem.column) == (2, 8)
    assert error_of("site: a\n".encode("utf-16")).problem == "is UTF-16 text, not UTF-8"
    assert error_of("site: a\n".encode("utf-32")).problem == "is UTF-32 text, not UTF-8"
    assert "NUL bytes" in error_of("site: a\n".encode("utf-16-le")).problem


def test_absurd_nesting_is_one_positioned_problem() -> None:
    problem = error_of(b"site: " + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert (problem.problem, problem.fix) == ("the YAML is nested too deeply", "write it flat")
    assert (problem.line, problem.column) == (1, 7 + MAX_DEPTH - 1)
    block = "".join(f"{' ' * i}k{i}:\n" for i in range(MAX_DEPTH + 5))
    assert error_of(block).problem == "the YAML is nested too deeply"
    # Just inside the limit is fine (the document is the outermost level).
    assert load_yaml("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)).data is not None


def test_validation_error_pickles_and_needs_problems() -> None:
    error = ValidationError([FieldProblem("a.b", "is bad", "fix it", 2, 3)], "x.yaml")
    assert str(error) == "x.yaml:2:3: a.b: is bad; fix it"
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems and copy.source == "x.yaml"
    with pytest.raises(ValueError):
        ValidationError([])


# --------------------------------------------------------------------------------------------------
# top_level_keys: telling an agent configuration from a policy, even when it does not parse


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (b"site: a\ncapture: {interfaces: [eth1]}\n", {"site", "capture"}),
        (b"site: a\ncapture: [eth1\nmetrics: {port: 1}\n", {"site", "capture", "metrics"}),  # syntax error
        (b"site: a\n'mqtt':\n  host: b\n\tbad: tab\n", {"site", "mqtt"}),
        ("site: a\ncapture:\n".encode("utf-16"), {"site", "capture"}),
        ("site: a\ncapture:\n".encode("utf-16-be"), {"site", "capture"}),
        ("site: dépôt\ncapture:\n".encode("latin-1"), {"site", "capture"}),
        (b"- a list\n", set()),
        (b"capture: " + b"[" * 100_000, {"capture"}),
    ],
)
def test_top_level_keys(data: bytes, keys: set[str]) -> None:
    assert top_level_keys(data) == keys


# --------------------------------------------------------------------------------------------------
# Reader


def test_a_view_reads_a_nested_document_into_the_same_lists() -> None:
    doc = load_yaml("site: 7\npolicy:\n  site: 007\n  allow_private: maybe\n")
    reader = Reader(doc)
    reader.add("site", "is bad", "fix it")
    view = reader.at("policy")
    assert view.text({"site": 7}, "", "site", None, "depot-7") is None
    assert view.boolean({"allow_private": "maybe"}, "", "allow_private", False) is False
    view.warn("site", "looks odd")
    assert [(p.field, p.line, p.fix) for p in reader.problems] == [
        ("site", 1, "fix it"),
        ("policy.site", 3, 'quote it: site: "007"'),
        ("policy.allow_private", 4, "write allow_private: true or allow_private: false (no quotes)"),
    ]
    assert reader.warnings == ["policy.site: looks odd"]
    assert Reader().written("site", 7) == "7"  # without a document: the value itself


def test_unknown_keys_get_hints_then_guesses() -> None:
    reader = Reader(hints={"": {"broker": "write an 'mqtt:' section"}})
    reader.keys({"site": 1, "sitte": 2, "broker": 3, 5: 4}, "", ("site", "capture"))
    assert [(p.field, p.fix.split(" (")[0]) for p in reader.problems] == [
        ("sitte", "did you mean 'site'?"),
        ("broker", "write an 'mqtt:' section"),
        ("5", "remove it"),
    ]


def test_typed_getters() -> None:
    reader = Reader()
    sec = {"d": "1h30m", "s": "2 MiB", "n": 0.5, "c": "fats", "i": "12", "t": " x "}
    assert reader.seconds(sec, "p", "d", 1.0, 1, 86400) == 5400
    assert reader.size(sec, "p", "s", 1, 1, 1 << 30) == 2 << 20
    assert reader.number(sec, "p", "n", 1.0, 0, 1) == 0.5
    assert reader.choice(sec, "p", "c", "auto", ("auto", "fast")) == "auto"
    assert reader.integer(sec, "p", "i", 3, 1, 99) == 3
    assert reader.text(sec, "p", "t", None, "x") is None
    assert reader.topic_segment("p.site", "a/b") is None
    assert [(p.field, p.fix) for p in reader.problems] == [
        ("p.c", "did you mean 'fast'? write e.g. c: auto"),
        ("p.i", "write it without quotes"),
        ("p.t", "write it like t: x"),
        ("p.site", "use letters, digits, '-', '_' or '.', e.g. 'a-b'"),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "0.5s"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (604800, "7d"),
        (86461, "1d1m1s"),
    ],
)
def test_duration_text_is_what_a_configuration_would_write(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1000, "1000 bytes"), (1 << 20, "1MiB"), (64 << 20, "64MiB"), (3 << 40, "3TiB")],
)
def test_size_text_uses_a_unit_only_when_exact(size: int, text: str) -> None:
    assert size_text(size) == text


def test_an_out_of_range_duration_repeats_what_was_written_and_the_range_as_durations() -> None:
    reader = Reader()
    assert reader.seconds({"grace": "9d"}, "", "grace", 60.0, 0, 7 * 86400) == 60.0
    (problem,) = reader.problems
    assert (problem.problem, problem.fix) == ("9d (777600 s) is out of range", "use a duration from 0s to 7d")


@pytest.mark.parametrize(
    ("text", "line", "column", "what", "fix"),
    [
        (
            "a:\n  b: 1\n c: 2\n",
            3,
            2,
            "this line is not indented like the lines it belongs with",
            "indent it",
        ),
        ("a:\n  b: 1\n   c: 2\n", 3, 5, "a ':' inside a value (a value with ': ' in it, or a key", "quote"),
        ("a: [1, 2\nb: 3\n", 1, 4, "a list opened with '[' is not closed", "close it with ']'"),
        ("a: {b: 1\n", 1, 4, "a mapping opened with '{' is not closed", "close it with '}'"),
        ('a: "open\nb: 1\n', 1, 4, "a quoted text is not closed", "add the closing quote"),
        ("a: b: c\n", 1, 5, "a ':' inside a value", "quote a value"),
        ("a: 1\njust text\nb: 2\n", 2, 1, "a line that is neither 'key: value' nor a list item", "add ':'"),
    ],
)
def test_common_yaml_mistakes_are_said_in_plain_words(
    text: str, line: int, column: int, what: str, fix: str
) -> None:
    problem = error_of(text)
    assert (problem.line, problem.column) == (line, column)
    assert problem.problem.startswith(f"invalid YAML: {what}") and problem.fix.startswith(fix)
    assert "<block" not in problem.problem  # none of PyYAML's token names


def test_an_unknown_key_is_placed_at_the_key_and_values_at_the_value() -> None:
    # file:line:column, as compilers write it: an editor jumps to the key that is wrong, or to the value.
    from monitor.policy import PolicyError, SitePolicy

    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml(
            "site: a\nmonitored:\n  networks: [10.0.0.5/24]\n  vendorz: [hikvision]\n", "p.yaml"
        )
    assert [line.split(": ", 2)[:2] for line in str(info.value).splitlines()] == [
        ["p.yaml:3:14", "monitored.networks[0]"],
        ["p.yaml:4:3", "monitored.vendorz"],
    ]
