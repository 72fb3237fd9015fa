"""Reader for nDPI's `ndpiReader -v 2` result files (`tests/cfgs/default/result/<pcap>.out`).

Layout: a `key: value` statistics header, a blank line, the per-application summary
(`<app>\\t<packets>\\t<bytes>\\t<flows>`), the breed summary (space-aligned), an optional
`JA3 Host Stats:` table, then one line per flow (`\\t<n>\\t<L4> <src>:<sport> <->|-> <dst>:<dport> [attr]...`)
and, when some flows stayed unclassified, an `Undetected flows:` section in the same format with the
numbering restarting at 1. IPv6 endpoints are printed bracketed (`[fe80::1]:5353`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_FLOW_RE = re.compile(
    r"^\t(?P<n>\d+)\t(?P<l4>[A-Za-z0-9_-]+) "
    r"(?P<src>\[[0-9A-Fa-f:.%]+\]|[0-9.]+):(?P<sport>\d+) (?P<dir><->|->) "
    r"(?P<dst>\[[0-9A-Fa-f:.%]+\]|[0-9.]+):(?P<dport>\d+)(?: (?P<attrs>.*))?$"
)
_COUNTERS_RE = re.compile(r"^(\d+) pkts/(\d+) bytes (<->|->) (\d+) pkts/(\d+) bytes$")
_PROTO_RE = re.compile(r"^(?:(?P<tunnel>[^:/]+):)?(?P<ids>\d+(?:\.\d+)?)/(?P<names>.+)$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?) sec$")
_SUMMARY_RE = re.compile(r"^([^\t]+)\t(\d+)\t(\d+)\t(\d+)$")
_BREED_RE = re.compile(r"^(\S.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_PLAIN_TEXT = "PLAIN TEXT"


@dataclass(frozen=True)
class NdpiTotals:
    """Packets, bytes and flows of one line of the per-application or breed summary."""

    packets: int
    bytes: int
    flows: int


@dataclass(frozen=True)
class NdpiFlow:
    """One flow line. `src` is the sender of the flow's first packet; c2s counts its packets."""

    index: int
    l4: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    bidirectional: bool
    vlan: int | None
    tunnel: str | None
    proto_ids: tuple[int, ...]
    master: str | None
    app: str
    confidence: str | None
    category: str | None
    c2s_packets: int
    c2s_bytes: int
    s2c_packets: int
    s2c_bytes: int
    duration_s: float | None
    hostname: str | None
    undetected: bool
    attrs: dict[str, str] = field(compare=False)
    raw_attrs: tuple[str, ...] = field(compare=False)

    @property
    def packets(self) -> int:
        """Packets in both directions."""
        return self.c2s_packets + self.s2c_packets

    @property
    def bytes(self) -> int:
        """Bytes (whole frames, link layer included) in both directions."""
        return self.c2s_bytes + self.s2c_bytes

    @property
    def protocol(self) -> str:
        """The label a protocol classifier is compared with: the master when present, else the app."""
        return self.master if self.master is not None else self.app

    @property
    def guessed(self) -> bool:
        """True when nDPI only guessed (by port or IP) or did not classify the flow."""
        return self.confidence in (None, "Unknown", "Match by port", "Match by IP")

    def key(self) -> tuple[str, int | None, frozenset[tuple[str, int]]]:
        """Direction-agnostic key: (L4, VLAN, {(ip, port), (ip, port)})."""
        return (self.l4, self.vlan, frozenset({(self.src_ip, self.src_port), (self.dst_ip, self.dst_port)}))


@dataclass(frozen=True)
class NdpiResult:
    """A whole `.out` file."""

    header: dict[str, str]
    summary: dict[str, NdpiTotals]
    breeds: dict[str, NdpiTotals]
    flows: list[NdpiFlow]

    @property
    def detected(self) -> list[NdpiFlow]:
        """Flows of the classified section."""
        return [f for f in self.flows if not f.undetected]

    @property
    def undetected(self) -> list[NdpiFlow]:
        """Flows of the `Undetected flows:` section."""
        return [f for f in self.flows if f.undetected]


def split_attrs(text: str) -> list[str]:
    """Bodies of the top-level `[...]` groups of a flow line; nested brackets stay in the body."""
    bodies: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == "]" and depth > 0:
            depth -= 1
            if depth == 0:
                bodies.append(text[start:i])
    if depth != 0:
        raise ValueError(f"unbalanced brackets in flow attributes: {text[:80]!r}")
    return bodies


def _attr_dict(bodies: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for body in bodies:
        if body.startswith(_PLAIN_TEXT + " (") and body.endswith(")"):
            key, value = _PLAIN_TEXT, body[len(_PLAIN_TEXT) + 2 : -1]
        else:
            key, sep, value = body.partition(": ")
            if not sep:
                key, value = body, ""
        out.setdefault(key, value)
    return out


def _endpoint(text: str) -> str:
    return text[1:-1] if text.startswith("[") else text


def parse_flow_line(line: str, *, undetected: bool = False) -> NdpiFlow | None:
    """Parse one flow line; None when `line` is not a flow line."""
    m = _FLOW_RE.match(line)
    if m is None:
        return None
    bodies = split_attrs(m.group("attrs") or "")
    attrs = _attr_dict(bodies)
    counters = next((c for c in map(_COUNTERS_RE.match, bodies) if c is not None), None)
    if counters is None:
        raise ValueError(f"flow line without packet/byte counters: {line[:120]!r}")
    proto = _PROTO_RE.match(attrs.get("proto", ""))
    if proto is None:
        raise ValueError(f"flow line without a parsable [proto: ...]: {line[:120]!r}")
    names = proto.group("names").split(".", 1)
    duration: float | None = None
    for body in bodies:
        if body == "< 1 sec":
            duration = 0.0
        elif (d := _DURATION_RE.match(body)) is not None:
            duration = float(d.group(1))
    vlan = attrs.get("VLAN")
    return NdpiFlow(
        index=int(m.group("n")),
        l4=m.group("l4"),
        src_ip=_endpoint(m.group("src")),
        src_port=int(m.group("sport")),
        dst_ip=_endpoint(m.group("dst")),
        dst_port=int(m.group("dport")),
        bidirectional=m.group("dir") == "<->",
        vlan=int(vlan) if vlan is not None else None,
        tunnel=proto.group("tunnel"),
        proto_ids=tuple(int(i) for i in proto.group("ids").split(".")),
        master=names[0] if len(names) == 2 else None,
        app=names[-1],
        confidence=attrs.get("Confidence"),
        category=attrs.get("cat"),
        c2s_packets=int(counters.group(1)),
        c2s_bytes=int(counters.group(2)),
        s2c_packets=int(counters.group(4)),
        s2c_bytes=int(counters.group(5)),
        duration_s=duration,
        hostname=attrs.get("Hostname/SNI"),
        undetected=undetected,
        attrs=attrs,
        raw_attrs=tuple(bodies),
    )


def read_ndpi_out(path: Path | str) -> NdpiResult:
    """Parse an nDPI `.out` result file."""
    header: dict[str, str] = {}
    summary: dict[str, NdpiTotals] = {}
    breeds: dict[str, NdpiTotals] = {}
    flows: list[NdpiFlow] = []
    in_flows = False
    undetected = False
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        flow = parse_flow_line(line, undetected=undetected)
        if flow is not None:
            flows.append(flow)
            in_flows = True
            continue
        if line.startswith("Undetected flows:"):
            undetected = in_flows = True
            continue
        if in_flows or not line.strip() or line.startswith("\t") or line.startswith("JA3 Host Stats"):
            continue  # blank lines, JA3 host table, "(expired flows are not listed below)", ...
        if (s := _SUMMARY_RE.match(line)) is not None:
            summary[s.group(1)] = NdpiTotals(int(s.group(2)), int(s.group(3)), int(s.group(4)))
        elif (b := _BREED_RE.match(line)) is not None and "\t" not in line:
            breeds[b.group(1)] = NdpiTotals(int(b.group(2)), int(b.group(3)), int(b.group(4)))
        elif ":" in line and not summary and not breeds:
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
        else:
            raise ValueError(f"{path}: unexpected line before the flows: {line[:80]!r}")
    return NdpiResult(header=header, summary=summary, breeds=breeds, flows=flows)
