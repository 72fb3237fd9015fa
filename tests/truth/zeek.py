"""Readers for Zeek btest baselines: ASCII logs, `zeek-cut -m` output and Community ID prints.

Baselines start with a `### BTest baseline data ...` banner. A log then has `#separator`,
`#set_separator`, `#empty_field`, `#unset_field`, `#path`, `#open`, `#fields`, `#types` header lines, TSV
rows and `#close`; a `*.cut` file has the column names on its first line and no `#` header. Values keep
Zeek's `\\xHH` escapes; `unescape` decodes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ZeekValue = str | list[str] | None

_BANNER = "### "
_HEX_ESCAPE_RE = re.compile(r"\\x([0-9A-Fa-f]{2})")
_COMMUNITY_ID_RE = re.compile(
    r"^\[orig_h=(?P<orig_h>[^,\s]+), orig_p=(?P<orig_p>\d+)/(?P<orig_t>[a-z]+), "
    r"resp_h=(?P<resp_h>[^,\s]+), resp_p=(?P<resp_p>\d+)/(?P<resp_t>[a-z]+), "
    r"proto=(?P<proto>\d+)(?:, [^\]]*\[[^\]]*\])*\], (?P<cid>\S+)$"
)


@dataclass(frozen=True)
class ZeekLog:
    """One log. `types` is None for `zeek-cut` output, which carries no type line."""

    path: str | None
    fields: list[str]
    types: list[str] | None
    rows: list[dict[str, ZeekValue]]
    meta: dict[str, str]
    separator: str = "\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"

    def column(self, name: str) -> list[ZeekValue]:
        """Values of one column, in row order."""
        return [row[name] for row in self.rows]

    def type_of(self, name: str) -> str | None:
        """Declared Zeek type of a column (None for `zeek-cut` output)."""
        if self.types is None:
            return None
        return self.types[self.fields.index(name)]


@dataclass(frozen=True)
class CommunityIdCase:
    """One `print c$id, community_id_v1(c$id)` line; ICMP "ports" are type/code."""

    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    transport: str
    proto: int
    community_id: str


def unescape(value: str) -> str:
    """Decode Zeek's `\\xHH` escapes (one character per byte, latin-1)."""
    return _HEX_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), value)


def as_str(value: ZeekValue) -> str | None:
    """A scalar value, or None when unset; a set/vector is an error."""
    if isinstance(value, list):
        raise TypeError(f"expected a scalar Zeek value, got {value!r}")
    return value


def as_int(value: ZeekValue) -> int | None:
    """A count/port/int value, or None when unset."""
    text = as_str(value)
    return int(text) if text is not None else None


def as_float(value: ZeekValue) -> float | None:
    """A time/interval/double value, or None when unset."""
    text = as_str(value)
    return float(text) if text is not None else None


def as_bool(value: ZeekValue) -> bool | None:
    """A bool value (`T`/`F`), or None when unset."""
    text = as_str(value)
    if text is None:
        return None
    if text not in ("T", "F"):
        raise ValueError(f"not a Zeek bool: {text!r}")
    return text == "T"


def as_list(value: ZeekValue) -> list[str]:
    """A set/vector value; unset gives an empty list."""
    if value is None:
        return []
    if isinstance(value, str):
        raise TypeError(f"expected a Zeek set/vector, got {value!r}")
    return value


def _is_container(zeek_type: str | None) -> bool:
    return zeek_type is not None and (zeek_type.startswith("set[") or zeek_type.startswith("vector["))


def _convert(text: str, zeek_type: str | None, log: ZeekLog) -> ZeekValue:
    if text == log.unset_field:
        return None
    container = _is_container(zeek_type)
    if text == log.empty_field:
        return [] if container else ""
    return text.split(log.set_separator) if container else text


def _decode_separator(value: str) -> str:
    return unescape(value.strip())


def read_zeek_log(path: Path | str) -> ZeekLog:
    """Parse a Zeek ASCII log or a `zeek-cut -m` table (btest banner allowed)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    meta: dict[str, str] = {}
    fields: list[str] | None = None
    types: list[str] | None = None
    sep, set_sep, empty, unset = "\t", ",", "(empty)", "-"
    data: list[str] = []
    for line in lines:
        if line.startswith(_BANNER) or not line:
            continue
        if line.startswith("#separator"):
            sep = _decode_separator(line[len("#separator") :])
        elif line.startswith("#"):
            key, found, value = line[1:].partition(sep)
            if not found:  # "#open <masked date>" / "#close <masked date>" are space-separated in baselines
                key, _, value = line[1:].partition(" ")
            if key == "fields":
                fields = value.split(sep)
            elif key == "types":
                types = value.split(sep)
            else:
                meta[key] = value
                set_sep = value if key == "set_separator" else set_sep
                empty = value if key == "empty_field" else empty
                unset = value if key == "unset_field" else unset
        elif fields is None:
            fields = line.split(sep)  # zeek-cut -m: the first line names the columns
        else:
            data.append(line)
    fields = fields or []
    if types is not None and len(types) != len(fields):
        raise ValueError(f"{path}: {len(fields)} fields but {len(types)} types")
    log = ZeekLog(
        path=meta.get("path"),
        fields=fields,
        types=types,
        rows=[],
        meta=meta,
        separator=sep,
        set_separator=set_sep,
        empty_field=empty,
        unset_field=unset,
    )
    for line in data:
        values = line.split(sep)
        if len(values) != len(fields):
            raise ValueError(f"{path}: row has {len(values)} values for {len(fields)} fields: {line[:80]!r}")
        col_types: list[str | None] = list(types) if types is not None else [None] * len(fields)
        log.rows.append({f: _convert(v, t, log) for f, v, t in zip(fields, values, col_types, strict=True)})
    return log


def parse_community_id_line(line: str) -> CommunityIdCase | None:
    """Parse `[orig_h=..., orig_p=34855/tcp, resp_h=..., resp_p=80/tcp, proto=6, ctx=[]], 1:...`."""
    m = _COMMUNITY_ID_RE.match(line.strip())
    if m is None:
        return None
    return CommunityIdCase(
        orig_h=m.group("orig_h").strip("[]"),
        orig_p=int(m.group("orig_p")),
        resp_h=m.group("resp_h").strip("[]"),
        resp_p=int(m.group("resp_p")),
        transport=m.group("orig_t"),
        proto=int(m.group("proto")),
        community_id=m.group("cid"),
    )


def read_community_id_out(path: Path | str) -> list[CommunityIdCase]:
    """Parse a `bifs.community_id.run-pcaps` baseline (`<pcap>.out`); every non-banner line must parse."""
    cases: list[CommunityIdCase] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(_BANNER) or not line.strip():
            continue
        case = parse_community_id_line(line)
        if case is None:
            raise ValueError(f"{path}: not a Community ID line: {line[:100]!r}")
        cases.append(case)
    return cases


@dataclass(frozen=True)
class Ip6UdpPrint:
    """One ``print fmt("ip6=%s, udp = %s", p$ip6, p$udp)`` line of a ``new_packet`` handler: what Zeek saw
    of an IPv6 UDP packet after its own reassembly (``exts`` empty: no extension header left)."""

    length: int  # the IPv6 payload length
    next_header: int
    hop_limit: int
    src: str
    dst: str
    exts: str
    sport: int
    dport: int
    udp_length: int


_IP6_UDP_RE = re.compile(
    r"^ip6=\[class=\d+, flow=\d+, len=(?P<len>\d+), nxt=(?P<nxt>\d+), hlim=(?P<hlim>\d+), "
    r"src=(?P<src>[0-9a-f:]+), dst=(?P<dst>[0-9a-f:]+), exts=\[(?P<exts>[^\]]*)\]\], "
    r"udp = \[sport=(?P<sport>\d+)/udp, dport=(?P<dport>\d+)/udp, ulen=(?P<ulen>\d+)\]$"
)


def read_ip6_udp_prints(path: Path | str) -> list[Ip6UdpPrint]:
    """Parse a btest ``output`` of IPv6 UDP ``new_packet`` prints; every non-banner line must parse."""
    out: list[Ip6UdpPrint] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(_BANNER) or not line.strip():
            continue
        m = _IP6_UDP_RE.match(line.strip())
        if m is None:
            raise ValueError(f"{path}: not an ip6/udp print: {line[:80]!r}")
        out.append(
            Ip6UdpPrint(
                length=int(m["len"]),
                next_header=int(m["nxt"]),
                hop_limit=int(m["hlim"]),
                src=m["src"],
                dst=m["dst"],
                exts=m["exts"],
                sport=int(m["sport"]),
                dport=int(m["dport"]),
                udp_length=int(m["ulen"]),
            )
        )
    return out


def txt_strings(answer: str) -> list[str]:
    """The character strings of one TXT answer as dns.log shows it: ``TXT <length> <text>`` for each, joined
    by spaces (the length says where a text that holds spaces ends)."""
    out: list[str] = []
    pos = 0
    while pos < len(answer):
        m = re.compile(r"TXT (\d+) ").match(answer, pos)
        if m is None:
            raise ValueError(f"not a TXT answer at {pos}: {answer[pos : pos + 40]!r}")
        start = m.end()
        out.append(answer[start : start + int(m[1])])
        pos = start + int(m[1]) + 1
    return out
