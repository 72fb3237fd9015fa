"""The vendor-cloud catalogue: where CCTV devices phone home (domains, ports), which analyzer sees it.

The catalogue is the data file ``data/clouds.yaml`` shipped in the package; its header documents the format,
so it can be updated without a code change. :meth:`CloudCatalogue.load` validates every entry and names the
entry and field of any problem.

Domain matching is case-insensitive and ignores a trailing dot: an exact name first, then the longest
``*.suffix`` wildcard, found by walking the name's parent domains label by label through a dict, so a lookup
costs a few dict probes whatever the catalogue's size.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

__all__ = [
    "KINDS",
    "TRANSPORTS",
    "CloudCatalogue",
    "CloudCatalogueError",
    "CloudEntry",
    "normalize_domain",
]

log = logging.getLogger(__name__)

KINDS: Final = frozenset({"cloud", "api", "p2p", "relay", "ntp", "update", "telemetry"})
TRANSPORTS: Final = frozenset({"tcp", "udp"})
FORMAT_VERSION: Final = 1

_FIELDS: Final = frozenset({"vendor", "kind", "domains", "ports", "signatures", "source", "note"})
_REQUIRED: Final = ("vendor", "kind", "source")
_VENDOR: Final = re.compile(r"[a-z0-9]+")
_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PORT: Final = re.compile(r"([0-9]{1,5})/(tcp|udp)")
_SIGNATURE: Final = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


class CloudCatalogueError(ValueError):
    """The catalogue file is unreadable or an entry is invalid; the message names the entry and field."""


@dataclass(frozen=True, slots=True)
class CloudEntry:
    """One catalogue entry: a vendor service, its names and ports, the analyzers that recognise it."""

    vendor: str
    kind: str
    domains: tuple[str, ...]  # normalised; wildcards keep their "*." prefix
    ports: tuple[tuple[int, str], ...]  # (port, "tcp" | "udp")
    signatures: tuple[str, ...]
    source: str
    note: str = ""

    def describe(self) -> str:
        """``vendor/kind`` plus the first domain or port, for messages."""
        first = (
            self.domains[0]
            if self.domains
            else (f"{self.ports[0][0]}/{self.ports[0][1]}" if self.ports else "")
        )
        return f"{self.vendor}/{self.kind} {first}".rstrip()


def normalize_domain(name: str) -> str:
    """Lower case, without the trailing dot of a fully qualified name."""
    return name.strip().rstrip(".").lower()


def _valid_hostname(name: str) -> bool:
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


class _Entry:
    """Validation of one raw entry, collecting the entry's label for error messages."""

    def __init__(self, index: int, raw: object, origin: str) -> None:
        self.origin = origin
        self.label = f"entry {index}"
        if not isinstance(raw, Mapping):
            raise self.error(None, f"expected a mapping of fields, got {type(raw).__name__}")
        self.raw: Mapping[object, object] = raw
        vendor = raw.get("vendor")
        if isinstance(vendor, str):
            self.label += f" ({vendor})"

    def error(self, field: str | None, reason: str) -> CloudCatalogueError:
        where = f"{self.label}, field {field!r}" if field else self.label
        return CloudCatalogueError(f"{self.origin}: {where}: {reason}")

    def text(self, field: str, *, required: bool) -> str:
        value = self.raw.get(field)
        if value is None:
            if required:
                raise self.error(field, "missing (required)")
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, f"expected a non-empty string, got {value!r}")
        return " ".join(value.split())

    def strings(self, field: str) -> list[str]:
        value = self.raw.get(field, [])
        if value is None:
            return []
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise self.error(field, f"expected a list, got {type(value).__name__}")
        for item in value:
            if not isinstance(item, str):
                raise self.error(field, f"expected strings, got {item!r} ({type(item).__name__})")
        return list(value)

    def build(self) -> CloudEntry:
        unknown = sorted(str(k) for k in self.raw if k not in _FIELDS)
        if unknown:
            raise self.error(unknown[0], f"unknown field (allowed: {', '.join(sorted(_FIELDS))})")
        for name in _REQUIRED:
            self.text(name, required=True)
        vendor = self.text("vendor", required=True)
        if not _VENDOR.fullmatch(vendor):
            raise self.error("vendor", f"{vendor!r} is not a canonical key ([a-z0-9]+, e.g. hikvision)")
        kind = self.text("kind", required=True)
        if kind not in KINDS:
            raise self.error("kind", f"{kind!r} is not one of {', '.join(sorted(KINDS))}")
        domains: list[str] = []
        for item in self.strings("domains"):
            name = normalize_domain(item)
            host = name[2:] if name.startswith("*.") else name
            if not _valid_hostname(host):
                raise self.error("domains", f"{item!r} is not a host name or a *.suffix wildcard")
            if name in domains:
                raise self.error("domains", f"{item!r} is listed twice")
            domains.append(name)
        ports: list[tuple[int, str]] = []
        for item in self.strings("ports"):
            m = _PORT.fullmatch(item.strip().lower())
            if m is None or not 1 <= int(m.group(1)) <= 65535:
                raise self.error("ports", f"{item!r} is not <1-65535>/<tcp|udp>")
            ports.append((int(m.group(1)), m.group(2)))
        signatures = self.strings("signatures")
        for sig in signatures:
            if not _SIGNATURE.fullmatch(sig):
                raise self.error("signatures", f"{sig!r} is not an analyzer name like p2p.cs2_pppp or mqtt")
        if not domains and not ports:
            raise self.error("domains", "an entry needs at least one domain or one port")
        return CloudEntry(
            vendor=vendor,
            kind=kind,
            domains=tuple(domains),
            ports=tuple(dict.fromkeys(ports)),
            signatures=tuple(signatures),
            source=self.text("source", required=True),
            note=self.text("note", required=False),
        )


class CloudCatalogue:
    """The loaded catalogue with its lookup indexes."""

    __slots__ = ("_by_port", "_exact", "_suffix", "entries", "origin")

    def __init__(self, entries: Sequence[CloudEntry], origin: str = "<memory>") -> None:
        self.entries: tuple[CloudEntry, ...] = tuple(entries)
        self.origin = origin
        self._exact: dict[str, CloudEntry] = {}
        self._suffix: dict[str, CloudEntry] = {}
        self._by_port: dict[tuple[int, str], list[CloudEntry]] = {}
        for i, entry in enumerate(self.entries):
            for name in entry.domains:
                index, key = (self._suffix, name[2:]) if name.startswith("*.") else (self._exact, name)
                other = index.get(key)
                if other is not None:
                    raise CloudCatalogueError(
                        f"{origin}: entry {i} ({entry.vendor}), field 'domains': {name!r} is already in an "
                        f"entry for {other.describe()}; a name may appear in one entry only"
                    )
                index[key] = entry
            for port in entry.ports:
                self._by_port.setdefault(port, []).append(entry)

    @classmethod
    def load(cls, path: str | None = None) -> CloudCatalogue:
        """Load and validate a catalogue file; the packaged ``data/clouds.yaml`` when ``path`` is None."""
        if path is None:
            resource = importlib.resources.files("monitor.vendors").joinpath("data", "clouds.yaml")
            origin = "monitor/vendors/data/clouds.yaml"
            try:
                text = resource.read_text(encoding="utf-8")
            except OSError as exc:
                raise CloudCatalogueError(f"{origin}: cannot read the packaged catalogue: {exc}") from exc
        else:
            origin = path
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CloudCatalogueError(f"{origin}: cannot read: {exc}") from exc
        # The packaged file with libyaml's safe loader when PyYAML has it (a tenth of the pure-Python one's
        # time, at every start-up); a user's file with the pure-Python one, as before.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader) if path is None else yaml.SafeLoader
        try:
            doc = yaml.load(text, Loader=loader)
        except yaml.YAMLError as exc:
            raise CloudCatalogueError(f"{origin}: not valid YAML: {exc}") from exc
        catalogue = cls.from_data(doc, origin)
        log.debug("loaded %d cloud catalogue entries from %s", len(catalogue.entries), origin)
        return catalogue

    @classmethod
    def from_data(cls, doc: object, origin: str = "<memory>") -> CloudCatalogue:
        """Validate an already-parsed document (``{"version": 1, "entries": [...]}``)."""
        if not isinstance(doc, Mapping):
            raise CloudCatalogueError(f"{origin}: expected a mapping with 'version' and 'entries' at the top")
        extra = sorted(str(k) for k in doc if k not in ("version", "entries"))
        if extra:
            raise CloudCatalogueError(
                f"{origin}: unknown top-level key {extra[0]!r} (allowed: version, entries)"
            )
        if doc.get("version") != FORMAT_VERSION:
            raise CloudCatalogueError(
                f"{origin}: 'version' must be {FORMAT_VERSION}, got {doc.get('version')!r}"
            )
        raw_entries = doc.get("entries")
        if not isinstance(raw_entries, list) or not raw_entries:
            raise CloudCatalogueError(f"{origin}: 'entries' must be a non-empty list")
        return cls([_Entry(i, raw, origin).build() for i, raw in enumerate(raw_entries)], origin)

    def match_domain(self, name: str) -> CloudEntry | None:
        """The entry for ``name``: an exact name, else the longest matching ``*.suffix``; None if neither."""
        host = normalize_domain(name)
        if not host:
            return None
        hit = self._exact.get(host)
        if hit is not None:
            return hit
        if not self._suffix:
            return None
        # Walk the parents from the longest: a.b.example.com -> b.example.com -> example.com -> com.
        dot = host.find(".")
        while dot != -1:
            parent = host[dot + 1 :]
            hit = self._suffix.get(parent)
            if hit is not None:
                return hit
            dot = host.find(".", dot + 1)
        return None

    def match_port(self, port: int, transport: str) -> list[CloudEntry]:
        """Entries that list ``port``/``transport`` (``tcp`` or ``udp``), in catalogue order."""
        return list(self._by_port.get((port, transport.lower()), ()))

    def vendors(self) -> frozenset[str]:
        """The vendor keys present."""
        return frozenset(e.vendor for e in self.entries)
