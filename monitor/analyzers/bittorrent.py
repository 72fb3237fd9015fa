"""BitTorrent: the DHT (BEP 5, KRPC over UDP), uTP (BEP 29) and the peer handshake (BEP 3, TCP).

No camera or recorder firmware speaks BitTorrent; P2P botnets do. Mozi (2019-2023, 1.5 million devices,
mostly routers and DVRs) and Hajime build their networks on the BitTorrent DHT and fetch their updates
over it. What is read is only what says "this is BitTorrent, and who speaks it":

- a **KRPC message** is a bencoded dictionary with a transaction id ``t`` and a type ``y`` (``q`` query,
  ``r`` response, ``e`` error); a query names its method ``q`` (``ping``, ``find_node``, ``get_peers``,
  ``announce_peer``) and carries the sender's 20-byte node ``id`` in ``a``;
- a **uTP** packet has a 20-byte header whose first byte is its type (0-4) and version 1; it shares the
  DHT's UDP socket (libtorrent), so it is read only on a UDP flow already labelled by a DHT message: as a
  first packet, four bytes of header say too little. Even then a side is said to speak uTP only when it
  shows it: a STATE answering the other side's SYN (the SYN's connection id), or DATA carrying the peer
  handshake. Anything else of that shape is not credited: a camera's STUN success or TURN ChannelData
  (0x41 0x00...) answering an outsider's DHT ping is no BitTorrent of its own;
- the **peer handshake** starts with the length 19 and ``BitTorrent protocol``.

Each message the flow's sides send is reported (:class:`~monitor.events.BitTorrentMessage`) for
``device.bittorrent``; the flow is read for :data:`READ_PACKETS` packets after its label, never its bulk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.decode import PROTO_UDP
from monitor.events import BitTorrentMessage
from monitor.protocol import Context, ProtocolSpec, flow_state

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "bittorrent"
DHT_PORT: Final = 6881
HANDSHAKE: Final = b"\x13BitTorrent protocol"
UTP_HEADER: Final = 20
READ_PACKETS: Final = 16
# BEP 44 lets a stored value be any bencoded value up to 1000 bytes: bounds far above it, still linear.
MAX_DEPTH: Final = 32
MAX_ITEMS: Final = 4096
_TYPES: Final = {b"q": "query", b"r": "response", b"e": "error"}
_METHODS: Final = frozenset(
    {"ping", "find_node", "get_peers", "announce_peer", "get", "put", "sample_infohashes"}
)

Bencoded = int | bytes | list["Bencoded"] | dict[bytes, "Bencoded"]


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


class _Decoder:
    """Bencode (BEP 3) with bounds: depth, item count, lengths that fit the data."""

    __slots__ = ("data", "items", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.items = 0

    def value(self, depth: int = 0) -> Bencoded:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise _error("bencoded data cut short")
        if depth > MAX_DEPTH:
            raise _error(f"bencoded data nested deeper than {MAX_DEPTH}")
        self.items += 1
        if self.items > MAX_ITEMS:
            raise _error(f"more than {MAX_ITEMS} bencoded items")
        lead = data[pos]
        if lead == 0x64:  # d
            self.pos += 1
            out: dict[bytes, Bencoded] = {}
            while self._peek() != 0x65:  # e
                key = self.value(depth + 1)
                if not isinstance(key, bytes):
                    raise _error("a dictionary key that is not a string")
                out[key] = self.value(depth + 1)
            self.pos += 1
            return out
        if lead == 0x6C:  # l
            self.pos += 1
            items: list[Bencoded] = []
            while self._peek() != 0x65:
                items.append(self.value(depth + 1))
            self.pos += 1
            return items
        if lead == 0x69:  # i
            end = data.find(b"e", pos + 1, pos + 22)
            if end < 0:
                raise _error("an integer without its end")
            try:
                number = int(data[pos + 1 : end])
            except ValueError:
                raise _error("an integer that is not a number") from None
            self.pos = end + 1
            return number
        if 0x30 <= lead <= 0x39:
            colon = data.find(b":", pos, pos + 8)
            if colon < 0 or not data[pos:colon].isdigit():
                raise _error("a string length that is not a number")
            size = int(data[pos:colon])
            if colon + 1 + size > len(data):
                raise _error(f"a string of {size} bytes runs past the end")
            self.pos = colon + 1 + size
            return data[colon + 1 : self.pos]
        raise _error(f"byte {lead:#04x} starts no bencoded value")

    def _peek(self) -> int:
        if self.pos >= len(self.data):
            raise _error("bencoded data cut short")
        return self.data[self.pos]


@dataclass(frozen=True, slots=True)
class KrpcMessage:
    """One DHT message: its type (query, response, error) and a query's method."""

    kind: str
    method: str | None

    @classmethod
    def parse(cls, data: bytes) -> KrpcMessage:
        """A KRPC message, or AnalyzerError for anything else (a whole bencoded dictionary with ``t`` and
        ``y``; a query names a method and carries a 20-byte node id)."""
        decoder = _Decoder(data)
        top = decoder.value()
        if not isinstance(top, dict):
            raise _error("not a bencoded dictionary")
        if decoder.pos != len(data):
            raise _error(f"{len(data) - decoder.pos} bytes after the dictionary")
        y = top.get(b"y")
        if not isinstance(top.get(b"t"), bytes) or not isinstance(y, bytes) or y not in _TYPES:
            raise _error("no transaction id or message type")
        kind = _TYPES[y]
        method = None
        if kind == "query":
            q, args = top.get(b"q"), top.get(b"a")
            if not isinstance(q, bytes) or not isinstance(args, dict):
                raise _error("a query without its method or arguments")
            node = args.get(b"id")
            if not isinstance(node, bytes) or len(node) != 20:
                raise _error("a query without a 20-byte node id")
            name = q.decode("ascii", "replace")
            method = name if name in _METHODS else "other"
        elif kind == "response" and not isinstance(top.get(b"r"), dict):
            raise _error("a response without its values")
        return cls(kind, method)

    @staticmethod
    def looks_like(payload: bytes) -> bool:
        """Cheap check: a bencoded dictionary naming a transaction and a KRPC type."""
        return (
            len(payload) >= 12
            and payload[:1] == b"d"
            and payload[-1:] == b"e"
            and b"1:t" in payload
            and (b"1:y1:q" in payload or b"1:y1:r" in payload or b"1:y1:e" in payload)
        )


def utp_type(payload: bytes) -> str | None:
    """The uTP packet type (``data``, ``fin``, ``state``, ``reset``, ``syn``), or None when it is not uTP."""
    if len(payload) < UTP_HEADER or payload[0] & 0x0F != 1 or payload[1] > 3:
        return None
    kind = payload[0] >> 4
    return ("data", "fin", "state", "reset", "syn")[kind] if kind <= 4 else None


@dataclass(slots=True)
class _Utp:
    """The uTP connection ids each side opened with a SYN (answered by a STATE with the same id)."""

    syns: dict[bool, set[int]] = field(default_factory=lambda: {True: set(), False: set()})


MAX_SYNS: Final = 16


def _utp_shown(flow: Flow, from_src: bool, kind: str, payload: bytes) -> bool:
    """Does this uTP packet show that its sender speaks uTP (see the module's docstring)?"""
    state = flow_state(flow, (PROTOCOL, "utp"), _Utp)
    conn_id = int.from_bytes(payload[2:4], "big")
    if kind == "syn":
        syns = state.syns[from_src]
        if len(syns) < MAX_SYNS:
            syns.add(conn_id)
        return False  # 0x41 0x0n is also TURN ChannelData on channels 0x4100-0x4103
    if kind == "state":
        return conn_id in state.syns[not from_src]
    return kind == "data" and HANDSHAKE in payload[UTP_HEADER : UTP_HEADER + 64]


def handshake_looks_like(payload: bytes) -> bool:
    """The peer handshake's first 20 bytes (TCP)."""
    return payload[:20] == HANDSHAKE


def handle_bittorrent(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    labelled = flow.protocol == PROTOCOL
    if payload[:1] == b"d" and KrpcMessage.looks_like(payload):
        msg = KrpcMessage.parse(payload)
        what = f"DHT {msg.kind}" + (f" ({msg.method})" if msg.method else "")
    elif handshake_looks_like(payload):
        what = "peer handshake"
    elif labelled and flow.proto == PROTO_UDP and (kind := utp_type(payload)) is not None:
        if not _utp_shown(flow, from_src, kind, payload):
            return True
        what = f"uTP {kind}"
    elif labelled:
        return True  # a peer's data past its handshake, or something the socket shares: not read
    else:
        raise _error("no DHT message and no peer handshake")
    ctx.emit(BitTorrentMessage(ts, flow, from_src, what))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_bittorrent,
        udp_ports=(DHT_PORT,),
        sniff=KrpcMessage.looks_like,
        tcp_sniff=handshake_looks_like,
        udp_guess=130,
        tcp_guess=160,
        after_label=READ_PACKETS,
        emits=(BitTorrentMessage,),
    ),
)
