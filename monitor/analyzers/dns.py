"""DNS messages (RFC 1035) as carried over UDP and TCP; also mDNS (RFC 6762, port 5353) and LLMNR (RFC 4795).

`parse(data)` reads one message: header, questions and the answer, authority and additional records.
Names are lower-cased with no trailing dot ("" is the root). Record values are text: the address for
A/AAAA, the target name for CNAME/PTR/NS/DNAME/MX/SRV, the primary server for SOA, the character-strings
joined by spaces for TXT (each one is also in `DnsRecord.txt`), and the RDATA in hex for other types.

Name compression is followed with loop protection: every pointer must go strictly backwards from where
the current run of labels started, so a chain always terminates; a name longer than 255 octets (wire
form) is rejected. Bytes after the last record are ignored (some stacks pad).

`parse(data, partial_ok=True)` also reads a message cut short (the data ends inside a question or a record,
before the counts of its header are met: the first IP fragment of a large EDNS0 answer, a snap length, a
sender that cut the message and set TC): it keeps the questions and records that are whole, drops the one
the cut went through and everything after it, and sets `DnsMessage.partial`. A cut is told from a malformed
message only by where reading stopped (at the end of the data); anything malformed before the end still
raises, and so does a message cut before its first question or record.

`split_tcp_messages` cuts a TCP byte stream into messages using the 2-byte length prefix (RFC 1035 4.2.2).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import DnsAnswer, DnsQuery, ResolvedAddress
from monitor.protocol import Context, ProtocolSpec, flow_state

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL = "dns"

HEADER_LEN = 12
MAX_NAME_WIRE = 255  # RFC 1035 2.3.4, counting the length octets and the final zero
MAX_MESSAGE = 0xFFFF  # a DNS message over UDP or TCP (RFC 1035 4.2.2's 16-bit length) is never longer
_MAX_POINTERS = 128  # backward-only pointers already bound the chain; this bounds the work too

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_HINFO = 13
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_DNAME = 39
TYPE_OPT = 41
TYPE_SPF = 99

_NAME_TYPES = frozenset({TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_DNAME})
_TEXT_TYPES = frozenset({TYPE_TXT, TYPE_SPF})

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_Q_FIXED = struct.Struct("!HH")

Question = tuple[str, int, int]  # (name, qtype, qclass); mDNS keeps its unicast-response bit in qclass


class _Cut(AnalyzerError):
    """The data ended inside a name, a question or a record header or RDATA: not necessarily malformed,
    the rest of the message may simply not have been delivered (see `parse`'s `partial_ok`)."""


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def _cut(reason: str) -> _Cut:
    return _Cut(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One resource record. `value` is text (see the module docstring); `txt` holds TXT strings."""

    name: str
    rtype: int
    ttl: int
    value: str
    txt: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """One DNS message. `flags` is the raw 16-bit flags word (QR, opcode, AA, TC, RD, RA, Z, rcode).

    `partial`: the data ended before the records its header counts (only with `parse(partial_ok=True)`);
    the sections hold the questions and records that were whole. Independent of the TC bit (`truncated`),
    which is what the sender says: a message with TC set may be whole, and a cut one may not have it."""

    id: int
    is_response: bool
    opcode: int
    rcode: int
    questions: tuple[Question, ...]
    answers: tuple[DnsRecord, ...]
    authority: tuple[DnsRecord, ...] = ()
    additional: tuple[DnsRecord, ...] = ()
    flags: int = 0
    partial: bool = False

    @property
    def truncated(self) -> bool:
        """The TC bit: the sender cut the message to fit the transport."""
        return bool(self.flags & 0x0200)

    @classmethod
    def parse(cls, data: bytes, *, partial_ok: bool = False) -> DnsMessage:
        """Parse one message; raises AnalyzerError when it is malformed, or cut short unless `partial_ok`
        (then the whole records before the cut are kept and `partial` is set)."""
        return parse(data, partial_ok=partial_ok)


def _text(raw: bytes) -> str:
    # Labels and strings are octets; most are ASCII. Keep the rest visible as \\xHH, as Zeek does.
    return raw.decode("utf-8", errors="backslashreplace")


def read_name(data: bytes, pos: int) -> tuple[str, int]:
    """Read a possibly compressed name at `pos`; returns (name, offset just after it in the message)."""
    labels: list[str] = []
    end: int | None = None  # where the name ends in the message: after the first pointer
    floor = pos  # pointers must land strictly before this, which only ever decreases
    wire = 0
    hops = 0
    n = len(data)
    while True:
        if pos >= n:
            raise _cut(f"name runs past the end of the message at {pos}")
        length = data[pos]
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise _cut(f"compression pointer cut at {pos}")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end is None:
                end = pos + 2
            hops += 1
            if target >= floor or hops > _MAX_POINTERS:
                raise _error(f"compression pointer at {pos} to {target} does not point backwards (loop)")
            pos = floor = target
            continue
        if kind != 0:
            raise _error(f"unsupported label type 0x{length:02x} at {pos}")
        wire += length + 1
        if wire > MAX_NAME_WIRE:
            raise _error(f"name longer than {MAX_NAME_WIRE} octets")
        if length == 0:
            return ".".join(labels).lower(), (end if end is not None else pos + 1)
        start = pos + 1
        pos = start + length
        if pos > n:
            raise _cut(f"label runs past the end of the message at {start}")
        labels.append(_text(data[start:pos]))


def _character_strings(rdata: bytes) -> tuple[str, ...]:
    out: list[str] = []
    pos = 0
    while pos < len(rdata):
        length = rdata[pos]
        end = pos + 1 + length
        if end > len(rdata):
            raise _error("TXT character-string runs past its RDATA")
        out.append(_text(rdata[pos + 1 : end]))
        pos = end
    return tuple(out)


def _rdata_name(data: bytes, pos: int, end: int, skip: int = 0) -> str:
    try:
        name, after = read_name(data, pos + skip)
    except _Cut:
        # The RDATA is all there (`_record` checked `end`): a name running past the end of the data ran past
        # RDLENGTH first, so the record is malformed, not cut in transit.
        raise _error("name in RDATA runs past RDLENGTH") from None
    if after > end:
        raise _error("name in RDATA runs past RDLENGTH")
    return name


def _record(data: bytes, pos: int) -> tuple[DnsRecord, int]:
    name, pos = read_name(data, pos)
    if pos + _RR_FIXED.size > len(data):
        raise _cut(f"record header cut at {pos}")
    rtype, _rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
    start = pos + _RR_FIXED.size
    end = start + rdlength
    if end > len(data):
        raise _cut(f"RDATA of {rdlength} bytes runs past the end of the message")
    rdata = data[start:end]
    txt: tuple[str, ...] = ()
    if rtype == TYPE_A:
        if rdlength != 4:
            raise _error(f"A record with {rdlength} bytes of RDATA")
        value = str(ipaddress.IPv4Address(rdata))
    elif rtype == TYPE_AAAA:
        if rdlength != 16:
            raise _error(f"AAAA record with {rdlength} bytes of RDATA")
        value = str(ipaddress.IPv6Address(rdata))
    elif rtype in _NAME_TYPES or rtype == TYPE_SOA:
        value = _rdata_name(data, start, end)
    elif rtype == TYPE_MX:
        if rdlength < 3:
            raise _error("MX RDATA too short")
        value = _rdata_name(data, start, end, skip=2)
    elif rtype == TYPE_SRV:
        if rdlength < 7:
            raise _error("SRV RDATA too short")
        value = _rdata_name(data, start, end, skip=6)
    elif rtype in _TEXT_TYPES:
        txt = _character_strings(rdata)
        value = " ".join(txt)
    else:
        value = rdata.hex()
    return DnsRecord(name, rtype, ttl, value, txt), end


def _check_counts(data: bytes, room: int | None = None) -> tuple[int, int, int, int, int, int]:
    """The header; its counts must fit in `room` bytes (default: the data's length)."""
    if len(data) < HEADER_LEN:
        raise _error(f"message of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    room = len(data) if room is None else room
    # Cheapest possible sizes: a question is a root name + 4 bytes, a record a root name + 10 bytes.
    if HEADER_LEN + qd * 5 + (an + ns + ar) * 11 > room:
        raise _error(f"counts qd={qd} an={an} ns={ns} ar={ar} cannot fit in {room} bytes")
    return ident, flags, qd, an, ns, ar


def parse(data: bytes, *, partial_ok: bool = False) -> DnsMessage:
    """Parse one DNS message (UDP payload, or one TCP message without its length prefix).

    With `partial_ok`, a message whose data ends inside a question or record is kept up to the last whole
    one, with `partial` set (see the module docstring); its counts need only fit in the largest message.
    """
    # A cut message counts more than it holds, but never more than a whole message could.
    ident, flags, qd, an, ns, ar = _check_counts(data, MAX_MESSAGE if partial_ok else None)
    pos = HEADER_LEN
    questions: list[Question] = []
    sections: tuple[list[DnsRecord], list[DnsRecord], list[DnsRecord]] = ([], [], [])
    partial = False
    try:
        # Each question or record read takes at least 5 bytes or raises, so with counts up to 65535 each the
        # loops end after len(data) / 5 steps at most, cut or not.
        for _ in range(qd):
            qname, pos = read_name(data, pos)
            if pos + _Q_FIXED.size > len(data):
                raise _cut(f"question cut at {pos}")
            qtype, qclass = _Q_FIXED.unpack_from(data, pos)
            pos += _Q_FIXED.size
            questions.append((qname, qtype, qclass))
        for records, count in zip(sections, (an, ns, ar), strict=True):
            for _ in range(count):
                record, pos = _record(data, pos)
                records.append(record)
    except _Cut:
        # A cut before anything whole leaves nothing to say the data was DNS at all: an error, as before.
        if not partial_ok or not (questions or any(sections)):
            raise
        partial = True
    return DnsMessage(
        id=ident,
        is_response=bool(flags & 0x8000),
        opcode=(flags >> 11) & 0xF,
        rcode=flags & 0xF,
        questions=tuple(questions),
        answers=tuple(sections[0]),
        authority=tuple(sections[1]),
        additional=tuple(sections[2]),
        flags=flags,
        partial=partial,
    )


# NetBIOS name service (RFC 1002, udp/137) uses DNS's wire format, but its names are one 32-letter label:
# the NetBIOS name in "first-level encoding", each half-byte as a letter A-P.
_NETBIOS_LABEL_LEN = 32
_NETBIOS_LETTERS = frozenset(b"ABCDEFGHIJKLMNOP")


def looks_like(payload: bytes) -> bool:
    """Cheap check: a header whose counts fit in the payload, a known opcode, and a question in a query.

    NetBIOS name service messages (a first name that is a NetBIOS-encoded label) are not DNS."""
    try:
        _ident, flags, qd, an, ns, ar = _check_counts(payload)
    except AnalyzerError:
        return False
    opcode = (flags >> 11) & 0xF
    if opcode not in (0, 1, 2, 4, 5, 6):
        return False
    if qd + an + ns + ar == 0:
        return False
    if _netbios_name(payload):
        return False
    # mDNS queries may carry known answers, so only require that a query asks something.
    return bool(flags & 0x8000) or qd >= 1


def _netbios_name(payload: bytes) -> bool:
    """Is the first name of the message (right after the header) a NetBIOS first-level encoded name?"""
    start = HEADER_LEN + 1
    label = payload[start : start + _NETBIOS_LABEL_LEN]
    return (
        len(payload) > HEADER_LEN
        and payload[HEADER_LEN] == _NETBIOS_LABEL_LEN
        and len(label) == _NETBIOS_LABEL_LEN
        and _NETBIOS_LETTERS.issuperset(label)
    )


def split_tcp_messages(stream: bytes, *, partial_ok: bool = False) -> list[bytes]:
    """Cut a DNS-over-TCP byte stream into messages (each was prefixed by its 2-byte length).

    A last message cut short raises AnalyzerError, unless `partial_ok`, when it is left out.
    """
    out, rest = _split_framed(stream)
    if rest and not partial_ok:
        if len(rest) < 2:
            raise _error("TCP stream ends inside a length prefix")
        raise _error(f"TCP stream ends inside a {int.from_bytes(rest[:2], 'big')}-byte message")
    return out


def _split_framed(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole length-prefixed messages at the start of ``data``, and what follows them."""
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data):
        end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
        if end > len(data):
            break
        out.append(data[pos + 2 : end])
        pos = end
    return out, data[pos:]


# ------------------------------------------------------------------------------ protocol binding

# Aliases followed from the question to an address record: more than this is a loop or a lie.
_MAX_CHAIN = 16


def resolved_addresses(msg: DnsMessage) -> tuple[ResolvedAddress, ...]:
    """The A/AAAA answers of a response on the chain from its (first) question through its CNAMEs, each
    with the names of that chain and its smallest TTL. Records for other names (out of the question's
    chain: unsolicited, or a poisoning attempt) are left out: they explain nothing the device asked."""
    if not msg.questions or msg.rcode != 0:
        return ()
    aliases: dict[str, tuple[str, int]] = {}
    for rec in msg.answers:
        if rec.rtype == TYPE_CNAME:
            aliases.setdefault(rec.name, (rec.value, rec.ttl))
    # The chain: each name reached from the question, with the smallest TTL on the way to it.
    chain = [msg.questions[0][0]]
    ttls = [1 << 31]
    while len(chain) <= _MAX_CHAIN:
        step = aliases.get(chain[-1])
        if step is None or step[0] in chain:
            break
        chain.append(step[0])
        ttls.append(min(ttls[-1], step[1]))
    where = {name: i for i, name in enumerate(chain)}
    out: list[ResolvedAddress] = []
    for rec in msg.answers:
        i = where.get(rec.name)
        if i is not None and rec.rtype in (TYPE_A, TYPE_AAAA) and rec.value:
            out.append(ResolvedAddress(rec.value, min(ttls[i], rec.ttl), tuple(chain[: i + 1])))
    return tuple(out)


@dataclass(slots=True)
class _TcpStream:
    """One direction of DNS over TCP: the bytes of a message not complete yet (RFC 7766 8: a message may
    span segments, and its 2-byte length may come alone)."""

    pending: bytes = b""


# A DNS message over TCP is at most 65,535 bytes after its length: more held is not DNS.
_MAX_TCP_PENDING: Final = 2 + 65_535


def _tcp_messages(flow: Flow, from_src: bool, payload: bytes) -> list[bytes]:
    stream = flow_state(flow, ("dns-tcp", from_src), _TcpStream)
    if stream.pending:
        out, rest = _split_framed(stream.pending + payload)
        if not out:
            # What was held may be no message's start (a session met mid-stream: a "length" read from the
            # middle of one). A segment that is whole messages by itself starts afresh.
            alone, alone_rest = _split_framed(payload)
            if alone and not alone_rest:
                out, rest = alone, b""
    else:
        out, rest = _split_framed(payload)
    stream.pending = rest if len(rest) <= _MAX_TCP_PENDING else b""
    return out


def handle_dns(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.proto == 6:
        msgs = [parse(m) for m in _tcp_messages(flow, from_src, payload)]
        if not msgs:
            return False  # a message's start (its length, or its first segment): read with what follows
    else:
        # The analysis hands over the IP packet's payload as captured (monitor/analysis.py cuts it at the IP
        # length and the snap length, never at the UDP length): the first fragment of an answer larger than
        # the path MTU (EDNS0, up to 4096 bytes; fragments are not reassembled) arrives cut, and nothing here
        # tells it from a message that ends early. The records that are whole are the resolver's answer all
        # the same, and the name rules need them: without them the device's next flow looks unexplained.
        msgs = [parse(payload, partial_ok=True)]
    for msg in msgs:
        if not msg.is_response:
            for name, qtype, _qclass in msg.questions:
                ctx.emit(DnsQuery(ts, flow, from_src, name, qtype))
            continue
        for rec in msg.answers:
            if rec.rtype in (TYPE_A, TYPE_AAAA) and rec.value:
                # Resolve the chain back to the asked name: the flow that follows goes to the address,
                # but the person on call knows the name that was asked.
                ctx.resolved(rec.value, msg.questions[0][0] if msg.questions else rec.name, ts)
        addresses = resolved_addresses(msg)
        if addresses:
            # Who received it matters (the name-based allow rules): the answer is the asker's.
            ctx.emit(DnsAnswer(ts, flow, from_src, msg.questions[0][0], addresses))
    return True


def handle_local(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    """mDNS and LLMNR: recognised and counted; nothing in them is judged yet. On their ports but to a global
    unicast address they are not (both are link-local by definition, RFC 6762 and RFC 4795): plain DNS to a
    resolver that answers there (OpenDNS on 5353), read as DNS."""
    to_ip = (flow.dst if from_src else flow.src)[0]
    if _global_unicast(to_ip):
        return handle_dns(ctx, flow, from_src, payload, ts)
    parse(payload)
    return True


@lru_cache(maxsize=4096)
def _global_unicast(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_global and not addr.is_multicast


PROTOCOLS = (
    ProtocolSpec(
        name="dns",
        handler=handle_dns,
        udp_ports=(53,),
        tcp_ports=(53,),
        sniff=looks_like,
        udp_guess=30,
        control=True,
        emits=(DnsQuery, DnsAnswer),
    ),
    ProtocolSpec(name="mdns", handler=handle_local, udp_ports=(5353,), control=True),
    ProtocolSpec(name="llmnr", handler=handle_local, udp_ports=(5355,), control=True),
)
