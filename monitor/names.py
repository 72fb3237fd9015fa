"""DNS names in the site policy: how a name pattern is written, how patterns are matched, and which names a
device resolved an address from (docs/design.md §4.7, docs/policy.md "Names").

- :func:`normalise_pattern` reads a name pattern as an allow rule writes it: an exact name
  (``ntp.example.com``) or a suffix wildcard (``*.example.com``: every name below ``example.com``, not
  ``example.com`` itself). Bad patterns raise :class:`NameProblem` with what is wrong and the fix.
- :class:`NameIndex` maps patterns to values and answers "which patterns match this name" in one dict
  probe per label of the name, however many patterns there are.
- :class:`ResolvedNames` remembers, per device, the names each address was resolved from: the DNS answers
  the device itself received (``DnsAnswer`` events), each valid for its TTL plus a grace period. Bounded.

Pure: no I/O, no clock (time is the capture time the callers pass).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Final, Generic, TypeVar

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_RESOLVED",
    "MAX_TTL_S",
    "NameIndex",
    "NameProblem",
    "ResolvedNames",
    "normalise_pattern",
    "suffixes",
]

_V = TypeVar("_V")

#: RFC 1035: 255 octets on the wire, 253 characters written out.
MAX_NAME_LENGTH: Final = 253
#: A TTL above a day is taken as a day (resolvers cap TTLs likewise; a week-old answer proves little).
MAX_TTL_S: Final = 86_400
#: Bound on (device, address) entries: a flood of answers only shortens what is remembered.
MAX_RESOLVED: Final = 100_000
#: Names kept per (device, address): a CDN address answers for many names, a few explain it.
MAX_NAMES_PER_ADDRESS: Final = 8

NS: Final = 1_000_000_000
_LABEL_RE: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NAME_FIX: Final = "write a DNS name like ntp.example.com, or *.example.com for every name below example.com"


class NameProblem(ValueError):
    """A name pattern that cannot be used: ``problem`` says why, ``fix`` what to write instead."""

    def __init__(self, problem: str, fix: str = _NAME_FIX) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


def normalise_pattern(text: str) -> str:
    """The pattern in its canonical form (lowercase, no final dot); raises :class:`NameProblem`."""
    name = text.strip().lower()
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]  # the root label, as in zone files
    if not name:
        raise NameProblem("is empty")
    if not name.isascii():
        raise NameProblem(
            "has characters outside ASCII", "write an international name in its ASCII form (xn--...)"
        )
    wildcard = name.startswith("*.")
    body = name[2:] if wildcard else name
    if "*" in body:
        if body == "*" or name == "*":
            raise NameProblem(
                "matches every name",
                "name a domain, e.g. *.example.com (to allow every address write 0.0.0.0/0 and ::/0)",
            )
        raise NameProblem(
            "has '*' inside the name; a wildcard is only the whole first label",
            "write it like *.example.com",
        )
    if len(body) > MAX_NAME_LENGTH:
        raise NameProblem(f"is longer than {MAX_NAME_LENGTH} characters")
    labels = body.split(".")
    for label in labels:
        if not label:
            raise NameProblem("has an empty label (two dots in a row, or a dot at the start)")
        if len(label) > 63:
            raise NameProblem(f"has a label longer than 63 characters ('{label[:20]}...')")
        if not _LABEL_RE.fullmatch(label):
            raise NameProblem(
                f"has a label '{label}' with characters a host name cannot have",
                "use letters, digits and '-' (not at the start or end of a label)",
            )
    if len(labels) < 2:
        if wildcard:
            raise NameProblem(
                "matches every name under a top-level domain", "name a domain, e.g. *.example.com"
            )
        raise NameProblem(
            "is a single label, not a fully qualified name", "write the whole name, e.g. ntp.example.com"
        )
    if labels[-1].isdigit():
        raise NameProblem(
            "is neither an IP network nor a DNS name (its last label is a number)",
            "write an address like 203.0.113.7 or 203.0.113.0/24, or a name like ntp.example.com",
        )
    return f"*.{body}" if wildcard else body


def suffixes(name: str) -> Iterator[str]:
    """The proper suffixes of a name, longest first: ``a.b.c`` gives ``b.c`` and ``c``."""
    start = name.find(".")
    while start >= 0:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


class NameIndex(Generic[_V]):
    """Name patterns -> values. :meth:`matches` yields the value of every pattern that matches a name:
    the exact name, then each ``*.suffix`` from the closest suffix out."""

    __slots__ = ("_below", "_exact")

    def __init__(self) -> None:
        self._exact: dict[str, _V] = {}
        self._below: dict[str, _V] = {}

    def __len__(self) -> int:
        return len(self._exact) + len(self._below)

    def __bool__(self) -> bool:
        return bool(self._exact) or bool(self._below)

    def setdefault(self, pattern: str, value: _V) -> _V:
        """The value of ``pattern`` (canonical, see :func:`normalise_pattern`), set to ``value`` if new."""
        if pattern.startswith("*."):
            return self._below.setdefault(pattern[2:], value)
        return self._exact.setdefault(pattern, value)

    def matches(self, name: str) -> Iterator[_V]:
        """The values of the patterns matching ``name`` (lowercase, no final dot)."""
        hit = self._exact.get(name)
        if hit is not None:
            yield hit
        if self._below:
            below = self._below
            for suffix in suffixes(name):
                hit = below.get(suffix)
                if hit is not None:
                    yield hit


class ResolvedNames:
    """Per device, the names each address was resolved from, from the DNS answers the device received.

    An answer is good for its TTL (at most :data:`MAX_TTL_S`) plus ``grace_ns``: devices keep using an
    address a while after its TTL, and a connection that starts then was still explained by the
    answer. ``device`` is any hashable identity (the rules use the device's MAC, or its address when no
    MAC is known). At most ``max_entries`` (device, address) pairs are kept, the least recently
    answered forgotten first (``evicted`` counts them).
    """

    __slots__ = ("_entries", "_grace", "_max", "evicted")

    def __init__(self, grace_ns: int, max_entries: int = MAX_RESOLVED) -> None:
        self._grace = grace_ns
        self._max = max_entries
        # (device, address) -> {name: valid until (ns)}
        self._entries: OrderedDict[tuple[Hashable, str], dict[str, int]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, device: Hashable, address: str, names: tuple[str, ...], ttl_s: int, ts_ns: int) -> None:
        """``device`` received an answer at ``ts_ns``: ``address`` for ``names`` (the asked name and its
        aliases), good for ``ttl_s`` seconds."""
        until = ts_ns + min(max(ttl_s, 0), MAX_TTL_S) * NS + self._grace
        key = (device, address)
        known = self._entries.pop(key, None)
        if known is None:
            known = {}
        else:
            for name in [n for n, valid in known.items() if valid < ts_ns]:
                del known[name]  # expired: the device asked again since
        for name in names:
            if name in known or len(known) < MAX_NAMES_PER_ADDRESS:
                known[name] = max(known.get(name, 0), until)
        self._entries[key] = known
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
            self.evicted += 1

    def names_for(self, device: Hashable, address: str, ts_ns: int) -> tuple[str, ...]:
        """The names ``device`` resolved ``address`` from that are still good at ``ts_ns``."""
        known = self._entries.get((device, address))
        if not known:
            return ()
        return tuple(name for name, until in known.items() if until >= ts_ns)
