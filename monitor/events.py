"""Typed events: what the analyzers and the site model report, and what the rules judge.

Every event carries the capture time it happened at (``ts_ns``). Events about one packet of a flow
(:class:`FlowEvent`) also carry the flow and which side sent the packet. The engine sorts a batch's
events into capture order and hands each one to the components registered for its type (the site
model first, then the rules: see ``monitor/registry.py``), so a rule never depends on batch
boundaries or on the order the analyzers ran in.

Only events that somebody consumes exist here: an analyzer that learns something nobody acts on
keeps it to itself (or sets it on the flow, as the TLS SNI and the DNS names are). Added for the
name-based allow rules: :class:`DnsAnswer` (what a device resolved, with TTLs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.analyzers.logins import Login
    from monitor.analyzers.rtsp import Transport
    from monitor.devices import Device
    from monitor.flows import Flow


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at capture time ``ts_ns``."""

    ts_ns: int


# ------------------------------------------------------------------------------ the flow table


@dataclass(frozen=True, slots=True)
class FlowStarted(Event):
    """A flow's first packet (``flow.src`` sent it)."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class ResponderSeen(Event):
    """The responder of a flow sent its first packet: its address is now known to be its own."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class FlowEnded(Event):
    """A flow ended (idle, active timeout, TCP close, eviction or the end of input)."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class Clock(Event):
    """Capture time reached ``ts_ns`` (once per batch, and on idle ticks): for rules that judge flows while
    they run or hold an alert back for a while. ``final``: the end of input, let everything out."""

    final: bool = False


# ------------------------------------------------------------------------------ the analyzers


@dataclass(frozen=True, slots=True)
class DeviceFact(Event):
    """Evidence about the device that owns ``mac`` (and uses ``ip``): who made it, model, serial...

    ``kind`` is the evidence kind of the inventory record (``sadp``, ``dhip``, ``wsd``, ``http_server``,
    ``rtsp_server``, ``realm``, ``tls_cert``, ``dhcp``, ``mqtt_user``...)."""

    mac: int
    ip: str
    kind: str
    detail: str
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class AddressClaim(Event):
    """A station says, on its own segment, that ``ip`` is its address: an ARP sender, an NDP neighbour
    advertisement, a DHCP or DHCPv6 lease. ``source`` names the protocol (``arp``, ``ndp``, ``dhcp``,
    ``dhcpv6``). What the site model trusts over the MACs of routed traffic."""

    mac: int
    ip: str
    source: str


@dataclass(frozen=True, slots=True)
class RouterAdvert(Event):
    """A router made itself known: an NDP router advertisement (its MAC), a DHCP lease's router option
    (its address, ``mac`` 0). Its MAC forwards other hosts' packets and is no device's identity."""

    mac: int
    ip: str | None
    source: str


@dataclass(frozen=True, slots=True)
class FlowEvent(Event):
    """An event read from one packet of ``flow``; ``from_src`` says the flow's source sent it."""

    flow: Flow
    from_src: bool


@dataclass(frozen=True, slots=True)
class DnsQuery(FlowEvent):
    """A DNS question (over UDP or TCP)."""

    name: str
    qtype: int


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """One address a DNS answer gave: ``names`` runs from the asked name through its aliases (CNAME) to
    the address record's owner; ``ttl`` (seconds) is the smallest TTL along that chain."""

    address: str
    ttl: int
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DnsAnswer(FlowEvent):
    """A DNS response with addresses for the question ``name``, sent by ``from_src``'s side: the other
    side (the asker) received it. Only records on the chain from the question are in ``addresses``."""

    name: str
    addresses: tuple[ResolvedAddress, ...]


@dataclass(frozen=True, slots=True)
class TlsServerName(FlowEvent):
    """The server name a TLS (or DTLS) client asked for (SNI), sent by ``from_src``'s side."""

    name: str


@dataclass(frozen=True, slots=True)
class P2pSignal(FlowEvent):
    """A NAT-traversal or vendor P2P message: STUN/TURN, EZVIZ XML "STUN", Dahua DHGET/PTCP, CS2 PPPP.

    ``protocol`` names the message family (``stun``, ``turn``, ``ezviz_xml``, ``dahua_dhget``, ...),
    ``message`` its kind, ``serial`` the device serial the message carries, if any."""

    protocol: str
    vendor: str | None
    message: str
    serial: str | None


@dataclass(frozen=True, slots=True)
class IgdSearch(FlowEvent):
    """An SSDP M-SEARCH for an Internet Gateway Device (a router that maps ports)."""

    target: str | None


@dataclass(frozen=True, slots=True)
class PortMapping(FlowEvent):
    """A UPnP SOAP request about port mappings (``AddPortMapping``...), with the mapping's arguments when
    its body was read (``external_port``/``protocol``: what the router opens; ``internal_*``: where to)."""

    action: str
    external_port: int | None = None
    protocol: str | None = None
    internal_client: str | None = None
    internal_port: int | None = None


@dataclass(frozen=True, slots=True)
class StreamRequest(FlowEvent):
    """An RTSP request, or an RTMP ``publish`` (``from_src``: sent by the flow's source). ``push``: the client
    sends its media to the server (RTSP ANNOUNCE, RECORD, a SETUP with ``mode=record``; RTMP publish), as a
    camera pushing to a media server does. An RTMP ``url`` is the ``connect``'s tcUrl without its query, never
    the stream name (a platform's secret key)."""

    method: str
    url: str
    push: bool = False
    session: str | None = None
    """The ``Session`` the request names (RTSP): on a connection met after its start, a keep-alive in a
    session says a stream is already being pulled."""


@dataclass(frozen=True, slots=True)
class StreamTransport(FlowEvent):
    """An RTSP ``Transport`` header: where the media of a SETUP goes (``request``: in the request,
    else in the camera's response)."""

    transport: Transport
    request: bool

    @property
    def client_is_src(self) -> bool:
        """The RTSP client (the side that sends requests) is the flow's source."""
        return self.from_src if self.request else not self.from_src


@dataclass(frozen=True, slots=True)
class MediaSeen(FlowEvent):
    """The first media packet (RTP, or SRTP after DTLS) one side of the flow sent."""

    protocol: str


@dataclass(frozen=True, slots=True)
class AppRequest(FlowEvent):
    """A request of a request-response protocol sent by ``from_src``'s side, as the exploit and login
    rules read it: HTTP (``/RPC2_Login`` and ONVIF SOAP included), RTSP, Dahua's DHIP/DVRIP JSON on
    tcp/37777, Xiongmai's telnet enabler (tcp/9530) and debug console (tcp/9527).

    ``seq`` numbers the requests of one connection (0 first); the answer names its request. ``target``
    is redacted (no user information, password parameters masked). ``login`` is what credentials the
    request carried, reduced by the analyzer (scheme, account, whether it is a vendor's factory
    password): never the password itself. ``params`` holds the few scalar fields the matchers read (a
    Dahua login's ``clientType``...), secrets left out. ``body`` is the start of the request body (at
    most a few kB; never in a record or a log line: it may hold secrets)."""

    protocol: str
    method: str
    target: str
    seq: int
    login: Login | None = None
    params: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)

    def param(self, name: str) -> str | None:
        """The value of ``params[name]``, or None."""
        for key, value in self.params:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class AppResponse(FlowEvent):
    """The answer to ``request`` (None when the request was not seen), sent by ``from_src``'s side.

    ``status`` is the HTTP or RTSP status code (None for protocols without one). ``auth`` is the
    analyzer's reading of what the answer says about a login: ``success``, ``failure`` (credentials
    were tried and refused), ``challenge`` (a first 401 asking for credentials, a Digest nonce gone
    stale, the first step of a Dahua login) or None (no login involved). ``body`` is the start of the
    answer's body (repr=False, as for requests)."""

    protocol: str
    status: int | None
    request: AppRequest | None
    auth: str | None = None
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class TelnetSession(FlowEvent):
    """A telnet server answered on ``flow``: ``from_src``'s side sent option negotiation or text first
    (the server). ``banner`` is the start of what it printed (printable text only); what the client
    types is never read."""

    banner: str


@dataclass(frozen=True, slots=True)
class PlatformRegistration(FlowEvent):
    """A device and a video management platform speak their platform-access protocol on ``flow``: GB/T 28181
    (SIP, ``protocol`` ``gb28181``) or Hikvision's EHome/ISUP (``ehome``). ``message`` is what ``from_src``'s
    side sent (``REGISTER``, ``MESSAGE``, ``INVITE``...); ``sender_id`` and ``peer_id`` the codes naming the
    sender and the other side, when the message carries them; ``firmware``, ``agent`` (a SIP User-Agent) and
    ``version`` (the protocol's) what the sender says of itself."""

    protocol: str
    message: str
    sender_id: str | None
    peer_id: str | None
    firmware: str | None
    agent: str | None
    version: str | None


@dataclass(frozen=True, slots=True)
class BitTorrentMessage(FlowEvent):
    """``from_src``'s side sent a BitTorrent message on ``flow``: ``what`` says which (``DHT query
    (get_peers)``, ``uTP data``, ``peer handshake``)."""

    what: str


# ------------------------------------------------------------------------------ the site model


@dataclass(frozen=True, slots=True)
class DeviceWatched(Event):
    """A device became watched (``why`` completes "watched because ..."); ``ip`` is the address it
    was seen with, if any."""

    device: Device
    ip: str | None
    why: str
