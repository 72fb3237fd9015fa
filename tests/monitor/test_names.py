"""Name patterns, their index, and what each device resolved (monitor/names.py)."""

from __future__ import annotations

import pytest

from monitor.names import MAX_TTL_S, NameIndex, NameProblem, ResolvedNames, normalise_pattern, suffixes

NS = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("NTP.Example.COM", "ntp.example.com"),
        ("ntp.example.com.", "ntp.example.com"),
        ("  *.Example.com ", "*.example.com"),
        ("_sip._udp.example.com", "_sip._udp.example.com"),
        ("xn--zrich-kva.example.com", "xn--zrich-kva.example.com"),
        ("a-b.c-d.example", "a-b.c-d.example"),
    ],
)
def test_patterns_are_read_in_their_canonical_form(text: str, canonical: str) -> None:
    assert normalise_pattern(text) == canonical


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        ("", "ntp.example.com"),
        ("*", "0.0.0.0/0"),
        ("*.", "0.0.0.0/0"),
        ("*.com", "name a domain"),
        ("a.*.example.com", "*.example.com"),
        ("ntp*.example.com", "*.example.com"),
        ("example", "ntp.example.com"),
        ("ntp..example.com", "ntp.example.com"),
        ("-ntp.example.com", "letters, digits"),
        ("ntp-.example.com", "letters, digits"),
        ("nt p.example.com", "letters, digits"),
        ("zürich.example.com", "xn--"),
        ("camera.10", "203.0.113.0/24"),
        ("a" * 64 + ".com", "ntp.example.com"),
        (".".join(["abcdefghij"] * 24) + ".com", "ntp.example.com"),
    ],
)
def test_bad_patterns_say_what_to_write(text: str, fix: str) -> None:
    with pytest.raises(NameProblem) as info:
        normalise_pattern(text)
    assert fix in info.value.fix
    assert info.value.problem and "\n" not in str(info.value)


def test_suffixes_run_from_the_closest() -> None:
    assert list(suffixes("a.b.example.com")) == ["b.example.com", "example.com", "com"]
    assert list(suffixes("com")) == []


def test_the_index_matches_exact_names_and_names_below_a_wildcard() -> None:
    index: NameIndex[str] = NameIndex()
    assert not index
    index.setdefault("ntp.example.com", "exact")
    index.setdefault("*.example.com", "below example.com")
    index.setdefault("*.b.example.com", "below b")
    assert len(index) == 3 and index
    assert list(index.matches("ntp.example.com")) == ["exact", "below example.com"]
    assert list(index.matches("a.b.example.com")) == ["below b", "below example.com"]
    assert list(index.matches("example.com")) == []  # a wildcard does not cover the domain itself
    assert list(index.matches("example.org")) == []
    assert list(index.matches("notexample.com")) == []
    # setdefault keeps the first value of a pattern.
    assert index.setdefault("*.example.com", "again") == "below example.com"


def test_an_answer_explains_an_address_for_its_ttl_plus_the_grace() -> None:
    book = ResolvedNames(grace_ns=60 * NS)
    t = 1_000 * NS
    book.add("cam", "192.0.2.10", ("ntp.example.com",), 300, t)
    assert book.names_for("cam", "192.0.2.10", t) == ("ntp.example.com",)
    assert book.names_for("cam", "192.0.2.10", t + 360 * NS) == ("ntp.example.com",)
    assert book.names_for("cam", "192.0.2.10", t + 361 * NS) == ()
    # Another device did not resolve it; another address was not the answer.
    assert book.names_for("other", "192.0.2.10", t) == ()
    assert book.names_for("cam", "192.0.2.11", t) == ()


def test_ttls_are_capped_and_names_accumulate_per_address() -> None:
    book = ResolvedNames(grace_ns=0)
    t = 0
    book.add("cam", "203.0.113.5", ("a.example.com", "edge.cdn.example.net"), 10 * MAX_TTL_S, t)
    assert book.names_for("cam", "203.0.113.5", MAX_TTL_S * NS) == ("a.example.com", "edge.cdn.example.net")
    assert book.names_for("cam", "203.0.113.5", MAX_TTL_S * NS + 1) == ()
    # A second name for the same address (a shared CDN edge) adds to the first while both are good.
    book.add("cam", "203.0.113.5", ("b.example.org",), 60, t + 1)
    assert set(book.names_for("cam", "203.0.113.5", t + 2)) == {
        "a.example.com",
        "edge.cdn.example.net",
        "b.example.org",
    }
    # A negative TTL counts as 0.
    book.add("cam", "203.0.113.6", ("c.example.com",), -5, t)
    assert book.names_for("cam", "203.0.113.6", t) == ("c.example.com",)
    assert book.names_for("cam", "203.0.113.6", t + 1) == ()


def test_the_table_is_bounded_and_forgets_the_oldest() -> None:
    book = ResolvedNames(grace_ns=NS, max_entries=3)
    for i in range(5):
        book.add("cam", f"192.0.2.{i}", ("x.example.com",), 60, i)
    assert len(book) == 3 and book.evicted == 2
    assert book.names_for("cam", "192.0.2.0", 10) == ()
    assert book.names_for("cam", "192.0.2.4", 10) == ("x.example.com",)
