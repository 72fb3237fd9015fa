"""Evidence for the analyst: a small ring of each analysed flow's packets, and the packets an alert carries.

The engine is sans-I/O: an alert carries its packets (:class:`Evidence`) and an agent-side sink writes
them as a pcapng file named in the alert's ``file.path`` (``agents/sinks/evidence.py``).

**What is kept.** Only packets the analyzers already read (the first packets of each flow, every
packet of the small control protocols; never the bulk of a video flow), and of them per flow the
first ``FIRST_PACKETS`` (the handshake, the first request) and the ``RECENT_PACKETS`` most recent,
each cut to ``SNAP_BYTES``. :class:`EvidenceRecorder` keeps the rings within ``max_bytes`` and
``max_rings`` in all, forgetting the oldest rings first (a flood of flows only shortens what is
remembered); the packets themselves are the copies the analyzers were given, so recording one costs
a tuple and a list append.

**What an alert takes.** :func:`snapshot` copies a flow's ring up to the alert's time (the packets that
triggered it, the flow's first packets), and :func:`redact` blanks credentials in them first, byte for
byte so that sequence numbers still add up: ``Authorization``/``Cookie`` header values, passwords
(and ``auth=`` tokens) in URLs, JSON and SOAP, what a client types on telnet and the debug console. The
engine attaches evidence to the alerts of severity 4 and above that it routes from a flow event
(:func:`attach`); rules that judge several flows (a scan) build theirs from a sample (:func:`combine`).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

import numpy as np

from monitor.decode import PROTO_TCP, PROTO_UDP, decode
from monitor.pcapfile import PacketBatch
from monitor.protocol import NO_STATES

if TYPE_CHECKING:
    from monitor.alerts import Alert
    from monitor.events import Event
    from monitor.flows import Flow
    from monitor.protocol import FlowApp

__all__ = [
    "FIRST_PACKETS",
    "RECENT_PACKETS",
    "SNAP_BYTES",
    "Evidence",
    "EvidenceRecorder",
    "Packet",
    "attach",
    "combine",
    "redact",
    "snapshot",
]

FIRST_PACKETS: Final = 8
RECENT_PACKETS: Final = 24
SNAP_BYTES: Final = 2048
MAX_BYTES: Final = 16 << 20
MAX_RINGS: Final = 65_536
#: Alerts of this severity and above carry evidence when the engine routes them from a flow event.
EVIDENCE_SEVERITY: Final = 4
_KEY: Final = "evidence"
# Protocols whose client side may carry a secret anywhere in it: typed text (an account, a password), and
# RTMP (a publish's stream name is a platform's stream key, a connect's URL may hold a token): blanked whole.
_TYPED: Final = frozenset({"telnet", "xm-console", "rtmp"})

# A recorded packet: (capture time, frame bytes (cut to SNAP_BYTES), sent by the flow's source,
# original length, link type). A plain tuple: it is made for every analysed packet.
Recorded = tuple[int, bytes, bool, int, int]


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet of an alert's evidence; ``note`` says why it is there (a pcapng comment)."""

    ts_ns: int
    frame: bytes = field(repr=False)
    wirelen: int
    linktype: int
    note: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """The packets an alert carries (credentials already blanked), in capture order."""

    packets: tuple[Packet, ...]
    flows: int = 1

    @property
    def size(self) -> int:
        return sum(len(p.frame) for p in self.packets)


# What the bounds count besides the frames: a ring with its list and state entry, and each recorded tuple with
# its bytes object's header (CPython sizes, measured with tracemalloc).
RING_OVERHEAD: Final = 300
PACKET_OVERHEAD: Final = 160


class PacketRing:
    """One flow's recorded packets: the first few, and a ring of the most recent (made when needed:
    most flows never have more than their first packets analysed)."""

    __slots__ = ("first", "live", "recent", "size")

    def __init__(self) -> None:
        self.first: list[Recorded] = []
        self.recent: deque[Recorded] | None = None
        self.size = RING_OVERHEAD
        self.live = True  # False once the recorder forgot it (it starts again if the flow goes on)

    def packets(self) -> list[Recorded]:
        return [*self.first, *(self.recent or ())]

    def clear(self) -> None:
        self.first.clear()  # (the snapshots and readers copy it: no one holds this list)
        self.recent = None
        self.size = RING_OVERHEAD


@dataclass(slots=True)
class EvidenceStats:
    packets: int = 0  # packets recorded
    rings: int = 0  # rings started
    forgotten: int = 0  # rings forgotten to stay within the bounds
    bytes: int = 0  # bytes held now


class EvidenceRecorder:
    """Records the analysed packets of each flow in its :class:`PacketRing`, within global bounds."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_rings: int = MAX_RINGS) -> None:
        self.max_bytes = max_bytes
        self.max_rings = max_rings
        self._rings: deque[PacketRing] = deque()
        self.stats = EvidenceStats()

    def record(
        self, app: FlowApp, ts_ns: int, frame: bytes, from_src: bool, wirelen: int, linktype: int
    ) -> None:
        """Keep one analysed packet of the flow whose analyzer state is ``app`` (the hot path)."""
        ring = app.states.get(_KEY)
        if ring is None or not isinstance(ring, PacketRing):
            ring = app.own_states()[_KEY] = PacketRing()
            self._start(ring)
        elif not ring.live:
            ring.live = True
            self._start(ring)
        if len(frame) > SNAP_BYTES:
            frame = frame[:SNAP_BYTES]
        size = len(frame) + PACKET_OVERHEAD
        item = (ts_ns, frame, from_src, wirelen, linktype)
        if len(ring.first) < FIRST_PACKETS:
            ring.first.append(item)
        else:
            recent = ring.recent
            if recent is None:
                recent = ring.recent = deque(maxlen=RECENT_PACKETS)
                size += RING_OVERHEAD * 3  # a deque is the largest part of a ring
            elif len(recent) == RECENT_PACKETS:
                size -= len(recent[0][1]) + PACKET_OVERHEAD
            recent.append(item)
        ring.size += size
        st = self.stats
        st.packets += 1
        st.bytes += size
        if st.bytes > self.max_bytes:
            self._forget()

    def _start(self, ring: PacketRing) -> None:
        self._rings.append(ring)
        self.stats.rings += 1
        self.stats.bytes += ring.size
        if len(self._rings) > self.max_rings:
            self._forget_one()

    def _forget(self) -> None:
        while self.stats.bytes > self.max_bytes and self._rings:
            self._forget_one()

    def _forget_one(self) -> None:
        ring = self._rings.popleft()
        self.stats.bytes -= ring.size
        self.stats.forgotten += 1
        ring.clear()
        ring.live = False

    @property
    def rings(self) -> int:
        return len(self._rings)


def keep_only_ring(app: FlowApp) -> None:
    """Drop a flow's analyzer state but its evidence ring (alerts raised after the flow ended cite it)."""
    ring = app.states.get(_KEY)
    app.states = {_KEY: ring} if ring is not None else NO_STATES


def ring_of(flow: Flow) -> PacketRing | None:
    app = flow.app
    ring = app.states.get(_KEY) if app is not None else None
    return ring if isinstance(ring, PacketRing) else None


def recorded(flow: Flow, until_ns: int | None = None) -> list[Recorded]:
    """The flow's recorded packets (up to ``until_ns``), unredacted: for rules that read them."""
    ring = ring_of(flow)
    if ring is None:
        return []
    return [p for p in ring.packets() if until_ns is None or p[0] <= until_ns]


def snapshot(flow: Flow, until_ns: int, limit: int | None = None) -> Evidence | None:
    """The evidence of one flow: its recorded packets up to ``until_ns``, the last of them noted as the
    trigger, credentials blanked. None when nothing of the flow was recorded."""
    ring = ring_of(flow)
    if ring is None:
        return None
    first = [p for p in ring.first if p[0] <= until_ns]
    recent = [p for p in ring.recent or () if p[0] <= until_ns]
    items = first + recent
    if limit is not None and len(items) > limit:
        items = items[:limit]
    if not items:
        return None
    notes = ["first packets of the flow"] * len(first) + ["recent packets"] * len(recent)
    notes[len(items) - 1] = "the packet the alert was raised on (or the last one before it)"
    frames = redact(items, flow)
    packets = tuple(
        Packet(p[0], frame, p[3], p[4], note) for p, frame, note in zip(items, frames, notes, strict=False)
    )
    return Evidence(packets)


def combine(parts: Iterable[Evidence | None], max_packets: int = 256) -> Evidence | None:
    """Several flows' evidence as one (a scan: a sample of its flows), in capture order."""
    found = [e for e in parts if e is not None]
    if not found:
        return None
    packets = sorted((p for e in found for p in e.packets), key=lambda p: p.ts_ns)[:max_packets]
    return Evidence(tuple(packets), flows=len(found))


def attach(alerts: Sequence[Alert], event: Event) -> Sequence[Alert]:
    """The alerts with the evidence of the event's flow (severity 4 and above, when they have none)."""
    flow: Flow | None = getattr(event, "flow", None)
    if flow is None:
        return alerts
    out: list[Alert] = []
    for alert in alerts:
        if alert.evidence is None and alert.rule.severity >= EVIDENCE_SEVERITY:
            evidence = snapshot(flow, alert.timestamp_ns)
            if evidence is not None:
                alert = replace(alert, evidence=evidence)
        out.append(alert)
    return out


# ------------------------------------------------------------------------------ redaction

_SECRET_LINE_RE: Final = re.compile(rb"(?im)^(?:proxy-)?authorization[ \t]*:|^(?:set-)?cookie[ \t]*:")
_SECRET_PATTERNS: Final = (
    # <wsse:Password Type="...">secret</wsse:Password>
    re.compile(rb"(?i)<(?:[\w.-]+:)?Pass(?:word|wd)\b[^>]{0,512}>([^<]*)<"),
    # "password": "secret" (Dahua JSON-RPC, Xiongmai's "PassWord")
    re.compile(rb'(?i)"(?:password|passwd|pwd|pass)"\s*:\s*"((?:[^"\\]|\\.)*)"'),
    # scheme://user:secret@host
    re.compile(rb"(?i)\b[a-z][a-z0-9+.-]{1,10}://([^/@\s\"'<>]*)@"),
    # ?password=secret, /user=admin&password=secret
    re.compile(rb"(?i)(?:^|[/?&;\s])(?:password|passwd|pwd|pass)=([^&;/?#\s\"'<>]*)"),
    # ?auth=<Base64 of user:password> (Hikvision ISAPI credentials in the URL; CVE-2017-7921's token)
    re.compile(rb"(?i)[?&;]auth=([^&;/?#\s\"'<>]*)"),
)


def _blank(buf: bytearray, start: int, end: int) -> None:
    buf[start:end] = b"*" * (end - start)


def _line_end(buf: bytearray, start: int, end: int) -> int:
    """Where the line that ``start`` is in ends (its CR or LF), or ``end``."""
    nl = buf.find(b"\n", start, end)
    if nl < 0:
        return end
    return nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl


def redact(items: Sequence[Recorded], flow: Flow) -> list[bytes]:
    """The frames with credentials blanked, byte for byte (lengths and offsets unchanged).

    A sensitive header line cut by a segment boundary is blanked on into the next segment of the same
    side; a typed-text protocol's client payloads (telnet), and an RTMP client's, are blanked whole."""
    if not items:
        return []
    batch = _batch(items)
    d = decode(batch)
    typed = flow.protocol in _TYPED
    client_is_src = flow.opener_is_src
    open_line = {True: False, False: False}  # a sensitive line continues into this side's next segment
    out: list[bytes] = []
    for i, item in enumerate(items):
        frame = bytearray(item[1])
        start = int(d.payload_off[i])
        proto = int(d.proto[i])
        if start < 0 or proto not in (PROTO_TCP, PROTO_UDP):
            out.append(bytes(frame))
            continue
        end = min(int(d.l3_off[i]) + int(d.ip_len[i]), len(frame))
        if end <= start:
            out.append(bytes(frame))
            continue
        side = item[2]
        if typed and side == client_is_src:
            _blank(frame, start, end)
            out.append(bytes(frame))
            continue
        if open_line[side]:
            stop = _line_end(frame, start, end)
            _blank(frame, start, stop)
            open_line[side] = stop >= end
        for m in _SECRET_LINE_RE.finditer(frame, start, end):
            value = m.end()
            while value < end and frame[value] in b" \t":
                value += 1
            stop = _line_end(frame, value, end)
            _blank(frame, value, stop)
            if stop >= end:
                open_line[side] = True
        for pattern in _SECRET_PATTERNS:
            for m in pattern.finditer(frame, start, end):
                _blank(frame, m.start(1), m.end(1))
        out.append(bytes(frame))
    return out


def _batch(items: Sequence[Recorded]) -> PacketBatch:
    frames = [p[1] for p in items]
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.zeros(len(frames), dtype=np.int64)
    if len(frames) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    data = np.frombuffer(b"".join(frames), dtype=np.uint8)
    return PacketBatch(
        data,
        offsets,
        lengths,
        np.array([p[3] for p in items], dtype=np.int64),
        np.array([p[0] for p in items], dtype=np.int64),
        np.array([p[4] for p in items], dtype=np.uint16),
    )


# ------------------------------------------------------------------------------ reading a recorded SYN


def tcp_seq(frame: bytes, linktype: int) -> tuple[int, int] | None:
    """(sequence number, destination IPv4 address as an integer) of a TCP/IPv4 packet, or None.

    A small walker (Ethernet with VLAN tags, Linux SLL/SLL2, raw IP, BSD loopback) for a rule that
    reads one packet (Mirai's SYN sets its sequence number to the destination address)."""
    pos: int
    if linktype == 1:
        pos, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype in (0x8100, 0x88A8, 0x9100) and len(frame) >= pos + 4:
            ethertype = int.from_bytes(frame[pos + 2 : pos + 4], "big")
            pos += 4
        if ethertype != 0x0800:
            return None
    elif linktype == 113:
        if frame[14:16] != b"\x08\x00":
            return None
        pos = 16
    elif linktype == 276:
        if frame[0:2] != b"\x08\x00":
            return None
        pos = 20
    elif linktype in (12, 14, 101, 228):
        pos = 0
    elif linktype in (0, 108):
        pos = 4
    else:
        return None
    if len(frame) < pos + 20 or frame[pos] >> 4 != 4 or frame[pos + 9] != PROTO_TCP:
        return None
    ihl = (frame[pos] & 0x0F) * 4
    tcp = pos + ihl
    if ihl < 20 or len(frame) < tcp + 8:
        return None
    dst = int.from_bytes(frame[pos + 16 : pos + 20], "big")
    return int.from_bytes(frame[tcp + 4 : tcp + 8], "big"), dst
