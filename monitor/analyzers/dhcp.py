"""DHCPv4 (RFC 2131/2132): the BOOTP header and the options camwatch reads to identify a client.

A message is the 236-byte BOOTP header, the magic cookie 99.130.83.99 and options (code, length,
value), 0 being padding and 255 the end. Options that repeat are concatenated (RFC 3396); option 52
(overload) continues the options in the `file` and/or `sname` fields. A message with no END option is
accepted (several embedded stacks omit it); an option running past the data is not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.analyzers import AnalyzerError
from monitor.events import AddressClaim, DeviceFact, RouterAdvert
from monitor.protocol import Context, ProtocolSpec
from monitor.vendors.fingerprints import SERVER_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL = "dhcp"

BOOTP_LEN = 236
MAGIC_COOKIE = b"\x63\x82\x53\x63"
OPTIONS_START = BOOTP_LEN + len(MAGIC_COOKIE)

OPT_PAD = 0
OPT_HOST_NAME = 12
OPT_REQUESTED_ADDRESS = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_REQUEST_LIST = 55
OPT_VENDOR_CLASS = 60
OPT_CLIENT_ID = 61
OPT_CLIENT_FQDN = 81
OPT_END = 255

MESSAGE_TYPES = {
    1: "discover",
    2: "offer",
    3: "request",
    4: "decline",
    5: "ack",
    6: "nak",
    7: "release",
    8: "inform",
    9: "forcerenew",
    10: "leasequery",
    11: "leaseunassigned",
    12: "leaseunknown",
    13: "leaseactive",
    14: "bulkleasequery",
    15: "leasequerydone",
    16: "activeleasequery",
    17: "leasequerystatus",
    18: "tls",
}


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def _text(raw: bytes) -> str:
    # Host names and vendor classes are meant to be ASCII; some clients NUL-terminate them.
    return raw.rstrip(b"\x00").decode("utf-8", errors="backslashreplace")


def _ipv4(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """One DHCPv4 message. Addresses are dotted text; `options` keeps every option, concatenated."""

    op: int  # 1 request (client to server), 2 reply
    xid: int
    htype: int
    hlen: int
    chaddr: int  # the first `hlen` bytes of chaddr; the MAC for Ethernet (htype 1, hlen 6)
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    flags: int
    message_type: str | None  # option 53 by name ("discover", "ack", ...), None for plain BOOTP
    host_name: str | None
    vendor_class: str | None
    parameter_request_list: tuple[int, ...]
    client_id: bytes | None  # option 61 as sent: type octet, then the identifier
    requested_address: str | None
    server_id: str | None
    client_fqdn: str | None  # option 81's domain name
    lease_time: int | None
    options: tuple[tuple[int, bytes], ...]

    @property
    def mac(self) -> str:
        """`chaddr` as colon-separated hex (the MAC for Ethernet)."""
        return ":".join(f"{b:02x}" for b in self.chaddr.to_bytes(self.hlen, "big"))

    def option(self, code: int) -> bytes | None:
        """Value of an option, or None when absent."""
        for c, value in self.options:
            if c == code:
                return value
        return None

    @classmethod
    def parse(cls, data: bytes) -> DhcpMessage:
        """Parse one message (a UDP payload); raises AnalyzerError when it is malformed."""
        return parse(data)


def _walk_options(data: bytes, start: int, end: int, into: dict[int, bytearray]) -> None:
    pos = start
    while pos < end:
        code = data[pos]
        if code == OPT_END:
            return
        if code == OPT_PAD:
            pos += 1
            continue
        if pos + 1 >= end:
            raise _error(f"option {code} cut before its length at {pos}")
        length = data[pos + 1]
        value_end = pos + 2 + length
        if value_end > end:
            raise _error(f"option {code} of {length} bytes runs past the data at {pos}")
        into.setdefault(code, bytearray()).extend(data[pos + 2 : value_end])
        pos = value_end


def _fqdn(value: bytes) -> str | None:
    # RFC 4702: flags, two deprecated rcodes, then the name; wire-encoded when the E flag is set.
    if len(value) < 3:
        return None
    flags, name = value[0], value[3:]
    if not flags & 0x04:
        return _text(name) or None
    labels: list[str] = []
    pos = 0
    while pos < len(name):
        length = name[pos]
        if length == 0 or length & 0xC0:
            break
        labels.append(_text(name[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return ".".join(labels) or None


def parse(data: bytes) -> DhcpMessage:
    """Parse a DHCPv4 message; the magic cookie is required."""
    if len(data) < OPTIONS_START:
        raise _error(f"message of {len(data)} bytes is shorter than BOOTP + magic cookie ({OPTIONS_START})")
    if data[BOOTP_LEN:OPTIONS_START] != MAGIC_COOKIE:
        raise _error("no DHCP magic cookie at offset 236")
    op, htype, hlen = data[0], data[1], data[2]
    if op not in (1, 2):
        raise _error(f"BOOTP op {op} is neither request (1) nor reply (2)")
    if hlen > 16:
        raise _error(f"hardware address length {hlen} exceeds chaddr (16)")
    raw: dict[int, bytearray] = {}
    _walk_options(data, OPTIONS_START, len(data), raw)
    overload = raw.get(OPT_OVERLOAD)
    if overload:
        # RFC 2131 4.1: the file field is read before sname.
        if overload[0] & 1:
            _walk_options(data, 108, 236, raw)
        if overload[0] & 2:
            _walk_options(data, 44, 108, raw)
    opts = {code: bytes(value) for code, value in raw.items()}

    def addr(code: int) -> str | None:
        value = opts.get(code)
        return _ipv4(value) if value is not None and len(value) == 4 else None

    mtype = opts.get(OPT_MESSAGE_TYPE)
    message_type = MESSAGE_TYPES.get(mtype[0], f"type{mtype[0]}") if mtype else None
    host = opts.get(OPT_HOST_NAME)
    vendor = opts.get(OPT_VENDOR_CLASS)
    lease = opts.get(OPT_LEASE_TIME)
    fqdn = opts.get(OPT_CLIENT_FQDN)
    return DhcpMessage(
        op=op,
        xid=int.from_bytes(data[4:8], "big"),
        htype=htype,
        hlen=hlen,
        chaddr=int.from_bytes(data[28 : 28 + hlen], "big"),
        ciaddr=_ipv4(data[12:16]),
        yiaddr=_ipv4(data[16:20]),
        siaddr=_ipv4(data[20:24]),
        giaddr=_ipv4(data[24:28]),
        flags=int.from_bytes(data[10:12], "big"),
        message_type=message_type,
        host_name=_text(host) if host is not None else None,
        vendor_class=_text(vendor) if vendor is not None else None,
        parameter_request_list=tuple(opts.get(OPT_PARAMETER_REQUEST_LIST, b"")),
        client_id=opts.get(OPT_CLIENT_ID),
        requested_address=addr(OPT_REQUESTED_ADDRESS),
        server_id=addr(OPT_SERVER_ID),
        client_fqdn=_fqdn(fqdn) if fqdn is not None else None,
        lease_time=int.from_bytes(lease, "big") if lease is not None and len(lease) == 4 else None,
        options=tuple(sorted(opts.items())),
    )


def looks_like(payload: bytes) -> bool:
    """Cheap check: BOOTP op 1/2 and the magic cookie at offset 236."""
    return (
        len(payload) >= OPTIONS_START
        and payload[0] in (1, 2)
        and payload[BOOTP_LEN:OPTIONS_START] == MAGIC_COOKIE
    )


# ------------------------------------------------------------------------------ protocol binding

HTYPE_ETHERNET = 1
OPT_ROUTER = 3


def handle_dhcp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = parse(payload)
    # Only an Ethernet address (htype 1, hlen 6) is a MAC: another hardware type's chaddr is no inventory key.
    ethernet = msg.chaddr and msg.htype == HTYPE_ETHERNET and msg.hlen == 6
    if msg.op == 2 and ethernet and msg.message_type == "ack" and msg.yiaddr != "0.0.0.0":
        # The lease: the client's address on its own segment, and the routers it is to use.
        ctx.emit(AddressClaim(ts, msg.chaddr, msg.yiaddr, PROTOCOL))
        routers = msg.option(OPT_ROUTER) or b""
        for i in range(0, len(routers) - 3, 4):
            ctx.emit(RouterAdvert(ts, 0, str(ipaddress.IPv4Address(routers[i : i + 4])), PROTOCOL))
    # A client's request names its MAC (chaddr), host name and vendor class.
    if msg.op == 1 and ethernet:
        detail = ", ".join(
            f"{k}={v}" for k, v in (("host_name", msg.host_name), ("vendor_class", msg.vendor_class)) if v
        )
        if detail:
            ip, _ = flow.src if from_src else flow.dst
            vendor = vendor_from(msg.vendor_class, SERVER_VENDORS)
            ctx.emit(DeviceFact(ts, msg.chaddr, ip, "dhcp", detail, vendor=vendor))
    return True


PROTOCOLS = (
    ProtocolSpec(name="dhcp", handler=handle_dhcp, udp_ports=(67, 68), control=True, emits=(DeviceFact,)),
)
