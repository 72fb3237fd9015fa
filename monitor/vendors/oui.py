"""MAC address → vendor lookup: our refreshable table layered over netaddr's IEEE registries.

The package table (``data/vendors.csv``) is CSV with ``#`` comment lines allowed before the header:

    prefix,bits,vendor,manufacturer,registry,source,organization

* ``prefix``: the assigned block as upper-case hex octets separated by colons; a 28- or 36-bit block
  ends in a single nibble: ``80:48:9F`` (24 bits, MA-L), ``34:46:63:2`` (28 bits, MA-M),
  ``70:B3:D5:E0:0`` (36 bits, MA-S/IAB). The number of hex digits is always ``bits / 4``.
* ``bits``: 24, 28 or 36.
* ``vendor``: canonical key (``[a-z0-9]+``, e.g. ``hikvision``) or empty when unknown.
* ``manufacturer``: display name (``Hikvision``).
* ``registry``: ``MA-L``, ``MA-M``, ``MA-S`` or ``IAB`` (IAB is the legacy 36-bit registry).
* ``source``: where the row comes from. Rows written by ``tools/refresh_vendors.py`` from an IEEE file
  start with ``ieee:`` and are regenerated on each refresh; any other source marks a hand-added row,
  which a refresh keeps.
* ``organization`` (optional column): the registry's organisation name as written, typos included.

Lookups follow longest-prefix match: 36 > 28 > 24 bits; at equal length our table wins over netaddr.

OEM brands (LTS, Annke, and many Lorex, Swann and Amcrest units) ship rebadged Hikvision or Dahua hardware
with the parent's MACs, so they resolve to the parent and the table needs no rows for them. A few OEMs also
hold blocks of their own (Lorex 00:1F:54, Amcrest's MA-M), which resolve to the OEM's own key.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import importlib.util
import io
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

__all__ = [
    "CAMERA_KEYS",
    "DEFAULT_CACHE_SIZE",
    "REGISTRY_BITS",
    "SOURCE_LOCAL",
    "SOURCE_MULTICAST",
    "SOURCE_NETADDR",
    "SOURCE_TABLE",
    "SOURCE_UNKNOWN",
    "TABLE_COLUMNS",
    "TableRow",
    "Vendor",
    "VendorTable",
    "canonical_vendor",
    "format_mac",
    "format_prefix",
    "parse_mac",
    "parse_prefix",
    "read_rows",
    "write_rows",
]

log = logging.getLogger(__name__)

SOURCE_TABLE: Final = "camwatch-table"
SOURCE_NETADDR: Final = "netaddr"
SOURCE_LOCAL: Final = "locally-administered"
SOURCE_MULTICAST: Final = "multicast"
SOURCE_UNKNOWN: Final = "unknown"

TABLE_COLUMNS: Final = ("prefix", "bits", "vendor", "manufacturer", "registry", "source", "organization")
_REQUIRED_COLUMNS: Final = TABLE_COLUMNS[:6]
REGISTRY_BITS: Final[Mapping[str, int]] = MappingProxyType({"MA-L": 24, "MA-M": 28, "MA-S": 36, "IAB": 36})

# Two LRU caches of this size stay around a megabyte; a spoofed-MAC flood only churns them.
DEFAULT_CACHE_SIZE: Final = 8192

_MAC_MAX: Final = (1 << 48) - 1


@dataclass(frozen=True, slots=True)
class Vendor:
    """Who a MAC address belongs to, and how we know."""

    key: str | None  # canonical lowercase key (hikvision, dahua, ...); None if unknown
    manufacturer: str | None  # normalised display name ("Hikvision")
    registry_name: str | None  # the registry's organisation name as written
    source: str  # "camwatch-table" | "netaddr" | "locally-administered" | "multicast" | "unknown"


_UNKNOWN: Final = Vendor(None, None, None, SOURCE_UNKNOWN)
_LOCAL: Final = Vendor(None, None, None, SOURCE_LOCAL)
_MULTICAST: Final = Vendor(None, None, None, SOURCE_MULTICAST)


# --------------------------------------------------------------------------------------------------
# Organisation name → canonical vendor
# --------------------------------------------------------------------------------------------------

# Ordered (regex, key, display) rules, matched with re.search against the lower-cased, whitespace-
# collapsed organisation name. Patterns are anchored with \b or ^ on purpose: registry names are full
# of near-misses ("Shanghai Dahua Scale Factory", "Axis-Shield PoC", "AXIS CORPORATION",
# "Kedah Electronics", "PELCOMBE GROUP", "Robert Bosch Healthcare").
_RULES: Final[tuple[tuple[re.Pattern[str], str, str], ...]] = tuple(
    (re.compile(pattern), key, display)
    for pattern, key, display in (
        # Also catches "Prama Hikvision India", Hikvision's Indian joint venture.
        (r"hikvision", "hikvision", "Hikvision"),
        # EZVIZ is Hikvision's consumer brand but registers its own blocks and has its own cloud.
        (r"\bezviz\b", "ezviz", "EZVIZ"),
        # Huacheng (华橙网络) is Dahua's consumer arm behind Imou: Imou's public bug-bounty programme
        # is run by "Hangzhou Huacheng Network Tech", public camera-OUI lists file its blocks under
        # Imou, and a 2025 Dahua filing lists Huacheng as a related party (no longer a consolidated
        # subsidiary). So it gets the imou key rather than dahua.
        (r"\bhuacheng\b|\bimou\b", "imou", "Imou"),
        # "ZHEJIANG DAHUA TECHNOLOGYCO.,LTD", "Zhejiang Dahua Zhilian", "Dahua Technology ..."; not
        # "Shanghai Dahua Scale Factory" (an unrelated scale maker holding MA-M 40:2C:76:1).
        (r"\bzhejiang dahua\b|^dahua\b", "dahua", "Dahua"),
        (r"\buniview\b", "uniview", "Uniview"),
        (r"xiongmai", "xiongmai", "Xiongmai"),
        (r"\btiandy\b", "tiandy", "Tiandy"),
        (r"\bhuawei\b", "huawei", "Huawei"),
        (r"^axis communications\b", "axis", "Axis"),
        (r"\bbosch security\b", "bosch", "Bosch Security"),
        (r"\bhanwha (techwin|vision)\b|\bsamsung techwin\b", "hanwha", "Hanwha Vision"),
        (r"\bmilesight\b", "milesight", "Milesight"),
        (r"\breolink\b", "reolink", "Reolink"),
        (r"\btp-?link\b", "tplink", "TP-Link"),
        (r"\bubiquiti\b", "ubiquiti", "Ubiquiti"),
        (r"\bvivotek\b", "vivotek", "Vivotek"),
        (r"\bmobotix\b", "mobotix", "Mobotix"),
        (r"\bavigilon\b", "avigilon", "Avigilon"),
        (r"\bgeovision\b", "geovision", "GeoVision"),
        (r"^pelco\b", "pelco", "Pelco"),
        (r"^(panasonic )?i-pro\b", "ipro", "i-PRO"),
        (r"\bamcrest\b", "amcrest", "Amcrest"),
        (r"\bwyze\b", "wyze", "Wyze"),
        (r"\braysharp\b", "raysharp", "Raysharp"),
        (r"\blorex\b", "lorex", "Lorex"),
        (r"\bswann\b", "swann", "Swann"),
        (r"\bprovision-isr\b", "provisionisr", "Provision-ISR"),
        (r"\bsunell\b", "sunell", "Sunell"),
        (r"\bjovision\b", "jovision", "Jovision"),
        (r"\bkeda technology\b|\bkedacom\b", "kedacom", "Kedacom"),
        (r"^(shenzhen )?tvt\b", "tvt", "TVT"),
        (r"\bverkada\b", "verkada", "Verkada"),
    )
)

# Camera and recorder makers: the keys tools/refresh_vendors.py keeps by default. Huawei and TP-Link are
# canonicalised but left out: they hold hundreds of mostly non-camera blocks that netaddr already knows.
CAMERA_KEYS: Final = frozenset(key for _, key, _ in _RULES) - {"huawei", "tplink"}

# Legal-form words stripped from the end of unknown organisation names, compared without dots.
_LEGAL_SUFFIXES: Final = frozenset(
    {
        "co", "ltd", "inc", "incorporated", "corp", "corporation", "llc", "limited", "gmbh", "ag", "ab",
        "sa", "sau", "bv", "nv", "oy", "plc", "pty", "pte", "pvt", "private", "srl", "sas", "spa", "kg",
        "kft", "as", "asa", "sro", "jsc", "lp", "llp",
    }
)  # fmt: skip
_TRAILING_WORD: Final = re.compile(r"[\s,]+([\w.&]+)[\s,.]*$")
_TECHNOLOGYCO: Final = re.compile(r"(?i)\b(technology)(co\.)")
# Registry placeholders that name no manufacturer: the parent of MA-M/MA-S/IAB blocks, and "Private".
_PLACEHOLDER_ORGS: Final = frozenset({"ieee registration authority", "private"})


def _clean_org(org: str) -> str:
    """Drop legal-form suffixes ("Co.,Ltd.", "Inc.", "GmbH") and fix the glued "Technologyco." typo."""
    name = " ".join(org.split())
    # The registry has "Technologyco.,Ltd" typos (Dahua, others): unglue so the suffix strip works.
    name = _TECHNOLOGYCO.sub(r"\1 \2", name)
    while True:
        match = _TRAILING_WORD.search(name)
        if match is None or match.group(1).replace(".", "").lower() not in _LEGAL_SUFFIXES:
            break
        shorter = name[: match.start()].rstrip(" ,.")
        if not shorter:
            break
        name = shorter
    return name.rstrip(" ,")


def canonical_vendor(org_name: str) -> tuple[str | None, str | None]:
    """Map a registry organisation name to (canonical key, display name).

    Known vendors get their key and fixed display name; unknown ones get (None, cleaned-up name);
    an empty name gives (None, None).
    """
    collapsed = " ".join(org_name.split())
    if not collapsed:
        return None, None
    lowered = collapsed.lower()
    for pattern, key, display in _RULES:
        if pattern.search(lowered):
            return key, display
    return None, _clean_org(collapsed)


# --------------------------------------------------------------------------------------------------
# MAC address text
# --------------------------------------------------------------------------------------------------

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def _mac_int(mac: int | bytes) -> int:
    if isinstance(mac, bool):  # bool is an int subclass; True is never a MAC address
        raise TypeError("a MAC address cannot be a bool")
    if isinstance(mac, int):
        if not 0 <= mac <= _MAC_MAX:
            raise ValueError(f"MAC address out of range: {mac:#x}")
        return mac
    if isinstance(mac, bytes | bytearray | memoryview):
        raw = bytes(mac)
        if len(raw) != 6:
            raise ValueError(f"MAC address must be 6 bytes, got {len(raw)}")
        return int.from_bytes(raw, "big")
    raise TypeError(f"unsupported MAC address type: {type(mac).__name__}")


def format_mac(mac: int | bytes) -> str:
    """Format as ECS does: lower-case, dash separated ("44-19-b6-00-00-01")."""
    return _format_mac(_mac_int(mac))


# The same few MACs are formatted for every alert and record of a site (a flood's repeats: 100,000 times).
@functools.lru_cache(maxsize=4096)
def _format_mac(value: int) -> str:
    return value.to_bytes(6, "big").hex("-")


def _hex_groups(groups: list[str], width: int, text: str) -> int:
    value = 0
    for group in groups:
        if not group or len(group) > width or not set(group) <= _HEX_DIGITS:
            raise ValueError(f"invalid MAC address {text!r}: bad group {group!r}")
        value = (value << (4 * width)) | int(group, 16)
    return value


def parse_mac(text: str) -> int:
    """Parse 44:19:B6:00:00:01, 44-19-b6-00-00-01, 4419.b600.0001 or 4419b6000001 to an int.

    Raises ValueError saying what is wrong otherwise. Single-digit octets ("0:1b:...", as macOS prints
    them) are accepted in the colon and dash forms.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("invalid MAC address: empty")
    separators = {c for c in stripped if c in ":-."}
    if len(separators) > 1:
        raise ValueError(f"invalid MAC address {text!r}: mixed separators")
    if not separators:
        if len(stripped) != 12 or not set(stripped) <= _HEX_DIGITS:
            raise ValueError(f"invalid MAC address {text!r}: expected 12 hex digits")
        return int(stripped, 16)
    sep = separators.pop()
    groups = stripped.split(sep)
    if sep == ".":
        if len(groups) != 3 or any(len(g) != 4 for g in groups):
            raise ValueError(f"invalid MAC address {text!r}: dotted form needs 3 groups of 4 hex digits")
        return _hex_groups(groups, 4, text)
    if len(groups) != 6:
        raise ValueError(f"invalid MAC address {text!r}: expected 6 octets, got {len(groups)}")
    return _hex_groups(groups, 2, text)


def _to_int(mac: int | bytes | str) -> int:
    if isinstance(mac, str):
        return parse_mac(mac)
    return _mac_int(mac)


# --------------------------------------------------------------------------------------------------
# Vendor table file
# --------------------------------------------------------------------------------------------------


def format_prefix(value: int, bits: int) -> str:
    """Format a block prefix for the table: ``80:48:9F``, ``34:46:63:2``, ``70:B3:D5:E0:0``."""
    if bits not in (24, 28, 36):
        raise ValueError(f"unsupported prefix length {bits}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"prefix {value:#x} does not fit in {bits} bits")
    digits = f"{value:0{bits // 4}X}"
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def parse_prefix(text: str, bits: int) -> int:
    """Parse a table prefix (colons, dashes or none; any case) holding exactly ``bits / 4`` hex digits."""
    if bits not in (24, 28, 36):
        raise ValueError(f"unsupported prefix length {bits}")
    digits = text.strip().replace(":", "").replace("-", "")
    if len(digits) != bits // 4 or not digits or not set(digits) <= _HEX_DIGITS:
        raise ValueError(f"prefix {text!r} must be {bits // 4} hex digits for {bits} bits")
    return int(digits, 16)


@dataclass(frozen=True, slots=True)
class TableRow:
    """One block of the vendor table; ``prefix`` holds the top ``bits`` bits of the address."""

    prefix: int
    bits: int
    vendor: str | None
    manufacturer: str | None
    registry: str
    source: str
    organization: str | None = None

    @property
    def prefix_text(self) -> str:
        """The prefix as written in the table file."""
        return format_prefix(self.prefix, self.bits)


def _parse_row(record: dict[str, str | None], where: str) -> TableRow:
    def field(name: str) -> str:
        return (record.get(name) or "").strip()

    try:
        bits = int(field("bits"))
    except ValueError:
        raise ValueError(f"{where}: bits must be 24, 28 or 36, got {field('bits')!r}") from None
    registry = field("registry")
    if REGISTRY_BITS.get(registry) != bits:
        raise ValueError(f"{where}: registry {registry!r} does not match {bits} bits")
    try:
        prefix = parse_prefix(field("prefix"), bits)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    source = field("source")
    if not source:
        raise ValueError(f"{where}: every row needs a source")
    vendor = field("vendor") or None
    if vendor is not None and not re.fullmatch(r"[a-z0-9]+", vendor):
        raise ValueError(f"{where}: vendor key {vendor!r} must be lowercase [a-z0-9]+")
    return TableRow(
        prefix=prefix,
        bits=bits,
        vendor=vendor,
        manufacturer=field("manufacturer") or None,
        registry=registry,
        source=source,
        organization=field("organization") or None,
    )


def _parse_rows(text: str, name: str) -> list[TableRow]:
    # Comment lines are dropped but still counted so errors point at the real line number.
    lines = text.splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not numbered:
        raise ValueError(f"{name}: no header line")
    reader = csv.DictReader(line for _, line in numbered)
    missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{name}: missing columns {', '.join(missing)}")
    rows: list[TableRow] = []
    seen: dict[tuple[int, int], int] = {}
    for (lineno, _), record in zip(numbered[1:], reader, strict=True):
        row = _parse_row(record, f"{name}:{lineno}")
        key = (row.prefix, row.bits)
        if key in seen:
            raise ValueError(
                f"{name}:{lineno}: duplicate prefix {row.prefix_text}/{row.bits} (first on line {seen[key]})"
            )
        seen[key] = lineno
        rows.append(row)
    return rows


def read_rows(path: str | Path | None = None) -> list[TableRow]:
    """Read a vendor table file; the package's ``data/vendors.csv`` when ``path`` is None."""
    if path is None:
        resource = importlib.resources.files("monitor.vendors").joinpath("data", "vendors.csv")
        return _parse_rows(resource.read_text(encoding="utf-8"), "vendors.csv")
    return _parse_rows(Path(path).read_text(encoding="utf-8"), str(path))


def write_rows(rows: Iterable[TableRow], path: str | Path, comments: Iterable[str] = ()) -> None:
    """Write a vendor table file: ``#`` comment lines, the header, then one line per row."""
    buffer = io.StringIO()
    for comment in comments:
        buffer.write(f"# {comment}".rstrip() + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for row in rows:
        writer.writerow(
            (
                row.prefix_text,
                row.bits,
                row.vendor or "",
                row.manufacturer or "",
                row.registry,
                row.source,
                row.organization or "",
            )
        )
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# netaddr
# --------------------------------------------------------------------------------------------------

# netaddr's IAB data covers the two legacy IAB parents (00:50:C2 and 40:D8:55) at 36 bits; it has no
# MA-M or MA-S data, and answers "IEEE Registration Authority" for those parent blocks. Written out (as
# netaddr.eui.IAB.IAB_EUI_VALUES, which tests/monitor/test_vendors.py holds it to) so that start-up does not
# import netaddr (8 ms): it is imported on the first lookup that needs its API.
_NETADDR_IAB_OUIS: Final = frozenset((0x0050C2, 0x40D855))


@functools.cache
def _netaddr_oui_files() -> tuple[bytes, Path] | None:
    """netaddr's MA-L registry files (`oui.idx`: "oui,offset,size" lines; `oui.txt`).

    netaddr parses its whole index into a dict when its IEEE module is first imported (about
    85 ms, a tenth of a million-packet replay); a substring search in the raw index answers the
    few lookups a site needs in microseconds. Falls back to netaddr's API if the files move.
    """
    # Found without importing netaddr (its package's location is enough).
    spec = importlib.util.find_spec("netaddr")
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))) / "eui"
    try:
        raw = (base / "oui.idx").read_bytes()
    except OSError:
        return None
    txt = base / "oui.txt"
    return (b"\n" + raw, txt) if txt.is_file() else None


def _netaddr_oui_org(oui: int) -> str | None:
    files = _netaddr_oui_files()
    if files is not None:
        raw, txt = files
        pos = raw.find(b"\n%d," % oui)
        if pos < 0:
            return None
        end = raw.find(b"\n", pos + 1)
        fields = raw[pos + 1 : end if end >= 0 else len(raw)].split(b",")
        with txt.open("rb") as fh:
            fh.seek(int(fields[1]))
            record = fh.read(int(fields[2]))
        head = record.split(b"\n", 1)[0]
        if b"(hex)" in head:
            org = head.split(b"(hex)", 1)[1].strip().decode("utf-8", "replace")
            return org or None
    import netaddr  # lazily: most lookups never need it

    try:
        org = netaddr.OUI(oui).registration().org
    except netaddr.NotRegisteredError:
        return None
    return str(org) if org else None


def _netaddr_iab_org(prefix36: int) -> str | None:
    import netaddr  # lazily: most lookups never need it

    try:
        org = netaddr.IAB(prefix36).registration().org
    except (netaddr.NotRegisteredError, ValueError):
        return None
    return str(org) if org else None


def _vendor_from_org(org: str, source: str) -> Vendor:
    if org.strip().lower() in _PLACEHOLDER_ORGS:
        return Vendor(None, None, org, source)
    key, display = canonical_vendor(org)
    return Vendor(key, display, org, source)


# --------------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------------


class VendorTable:
    """Longest-prefix MAC → vendor lookup over our table, falling back to netaddr.

    Results are cached by 24-bit OUI, or by 36-bit prefix inside the few OUIs that are split into
    smaller blocks; both caches are LRU-bounded so a flood of spoofed MACs cannot grow memory.
    """

    def __init__(
        self,
        rows: Iterable[TableRow] = (),
        *,
        use_netaddr: bool = True,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._blocks: dict[int, dict[int, Vendor]] = {24: {}, 28: {}, 36: {}}
        self._split: set[int] = set()  # OUIs holding 28/36-bit blocks: need a finer cache key
        self._use_netaddr = use_netaddr
        count = 0
        for row in rows:
            blocks = self._blocks[row.bits]
            if row.prefix in blocks:
                raise ValueError(f"duplicate prefix {row.prefix_text}/{row.bits}")
            blocks[row.prefix] = Vendor(row.vendor, row.manufacturer, row.organization, SOURCE_TABLE)
            if row.bits > 24:
                self._split.add(row.prefix >> (row.bits - 24))
            count += 1
        if use_netaddr:
            self._split |= _NETADDR_IAB_OUIS
        self._count = count
        self.cache_size = cache_size
        self._by_oui = functools.lru_cache(maxsize=cache_size)(self._resolve_oui)
        self._by_prefix36 = functools.lru_cache(maxsize=cache_size)(self._resolve_prefix36)

    @classmethod
    def load(cls, path: str | None = None, *, use_netaddr: bool = True) -> VendorTable:
        """Load our CSV (the package's by default) layered over netaddr's registries."""
        rows = read_rows(path)
        log.debug("loaded %d vendor table rows from %s", len(rows), path or "package data")
        return cls(rows, use_netaddr=use_netaddr)

    def __len__(self) -> int:
        return self._count

    def lookup(self, mac: int | bytes | str) -> Vendor:
        """Return the vendor of a MAC address (int, 6 bytes, or text accepted by parse_mac)."""
        value = _to_int(mac)
        first_octet = value >> 40
        # Group bit first: 33:33:xx (IPv6 multicast) also has the local bit set.
        if first_octet & 0x01:
            return _MULTICAST
        if first_octet & 0x02:
            return _LOCAL
        oui = value >> 24
        if oui in self._split:
            return self._by_prefix36(value >> 12)
        return self._by_oui(oui)

    def cache_usage(self) -> int:
        """Number of cached lookup results (both caches)."""
        return self._by_oui.cache_info().currsize + self._by_prefix36.cache_info().currsize

    def cache_clear(self) -> None:
        """Forget cached results."""
        self._by_oui.cache_clear()
        self._by_prefix36.cache_clear()

    def _resolve_oui(self, oui: int) -> Vendor:
        hit = self._blocks[24].get(oui)
        if hit is not None:
            return hit
        if self._use_netaddr:
            org = _netaddr_oui_org(oui)
            if org is not None:
                return _vendor_from_org(org, SOURCE_NETADDR)
        return _UNKNOWN

    def _resolve_prefix36(self, prefix36: int) -> Vendor:
        hit = self._blocks[36].get(prefix36)
        if hit is not None:
            return hit
        if self._use_netaddr and (prefix36 >> 12) in _NETADDR_IAB_OUIS:
            org = _netaddr_iab_org(prefix36)
            if org is not None:
                return _vendor_from_org(org, SOURCE_NETADDR)
        hit = self._blocks[28].get(prefix36 >> 8)
        if hit is not None:
            return hit
        return self._by_oui(prefix36 >> 12)
