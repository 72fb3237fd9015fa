"""What a protocol module declares about itself, and what its handler may do.

Each analyzer module under ``monitor/analyzers/`` that camwatch dispatches packets to ends with a
``PROTOCOLS`` tuple of :class:`ProtocolSpec`: the label, the ports it is expected on, a cheap content
sniffer and its rank among the guesses, whether every packet of such a flow is read, and the handler
that parses a packet and reports what it means through a :class:`Context`. ``monitor/registry.py``
collects them (as Zeek's ``register_for_ports`` and DPD signatures sit beside each analyzer, and
nDPI's ``init_*_dissector`` beside each dissector): adding a protocol is one module.

A handler is ``handler(ctx, flow, from_src, payload, ts_ns) -> bool``: it parses ``payload`` (one
packet's L4 payload, sent by the flow's source when ``from_src``) and returns True when the payload is
that protocol; it raises ``AnalyzerError`` when it is not (or is malformed). It never raises anything
else on packet content.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeVar

from monitor.analyzers import AnalyzerError
from monitor.decode import PROTO_TCP

if TYPE_CHECKING:
    from monitor.events import Event
    from monitor.flows import Flow
    from monitor.reassembly import TcpOrder

T = TypeVar("T")


class Context(Protocol):
    """What a protocol handler may do (implemented by ``monitor.analysis.Analysis``)."""

    def emit(self, event: Event) -> None:
        """Report an event for the site model and the rules."""

    def fact(
        self,
        flow: Flow,
        from_src: bool,
        kind: str,
        detail: str,
        *,
        vendor: str | None = None,
        model: str | None = None,
        firmware: str | None = None,
        serial: str | None = None,
        protocol: str | None = None,
    ) -> None:
        """Evidence about the device that sent this packet."""

    def upgrade(self, flow: Flow, name: str) -> None:
        """Relabel a multiplexed flow (STUN, DTLS, SRTP) with what it turned out to carry."""

    def resolved(self, ip: str, name: str, ts_ns: int) -> None:
        """A DNS answer: ``ip`` was the answer to a question about ``name``."""

    def handover(self, flow: Flow, name: str, from_src: bool, payload: bytes, ts_ns: int) -> None:
        """The rest of the connection is ``name``'s (an RTSP tunnel opened in a kept-alive HTTP connection):
        relabel the flow, and give this payload to that protocol's handler."""

    def shared(self, key: Hashable, cls: type[T]) -> T:
        """State that several flows share (the two HTTP connections of one tunnelled RTSP session), under
        ``key``, created with ``cls()`` on first use. Bounded: the least recently used is forgotten."""

    def watched(self, flow: Flow) -> bool:
        """Whether a watched device is on either side of the flow: the requests, answers and logins that
        only the rules about watched devices read (``AppRequest``, ``AppResponse``) are reported for such
        flows only."""


# The states of a flow that has none (most flows: a datagram or two): one shared, read-only mapping instead of
# an empty dict per flow (64 bytes each, 200,000 flows at the default bound).
NO_STATES: Mapping[Hashable, object] = MappingProxyType({})


class FlowApp:
    """The analyzers' state of one flow (``Flow.app``), created before its first packet is analysed."""

    __slots__ = (
        "datagrams", "done", "failures", "limit", "offered", "skip_offer", "states", "tcp_dst", "tcp_src",
        "tried", "watched",
    )  # fmt: skip

    def __init__(self) -> None:
        # Read through ``states``; written through :meth:`own_states`, which makes it the flow's own dict.
        self.states: Mapping[Hashable, object] = NO_STATES
        self.tried = 0  # packets tried against candidate protocols while unlabelled
        self.failures = 0
        # Set when the analyzers want no more of this flow: packets the flow table had already
        # selected in the current batch are skipped too.
        self.done = False
        self.offered = 0  # packets of the flow offered to the analyzers so far
        # Analyse only while offered < limit (a label that caps the budget: media, encrypted sessions).
        # The flow table picked a batch's packets with the budget it had then; this keeps a label given
        # in the middle of a batch from letting more (or fewer) through than one batch per packet would.
        self.limit: int | None = None
        # The analysis's own per-flow state (monitor/analysis.py, monitor/reassembly.py): each TCP
        # direction's sequencer, and the recent datagrams (mirror copies): (key, ts_ns) pairs flattened, in
        # the order first seen (Analysis._repeated; a tuple of two for the usual one, where a dict took 224
        # bytes).
        self.tcp_src: TcpOrder | None = None
        self.tcp_dst: TcpOrder | None = None
        self.datagrams: tuple[int, ...] | None = None
        # Whether a watched device is on either side (decided at the first analysed packet, see
        # Analysis.involves_watched): only such flows keep evidence and report logins and requests.
        self.watched: bool | None = None
        # What the handler just said it does not need of the stream (see offer_skip), for the analysis.
        self.skip_offer: tuple[bool, int, Callable[[int], None]] | None = None

    def own_states(self) -> dict[Hashable, object]:
        """``states`` as this flow's own dict, to write to (created on first use)."""
        states = self.states
        if states is NO_STATES:
            states = self.states = {}
        assert isinstance(states, dict)
        return states


def flow_state(flow: Flow, key: Hashable, cls: type[T], factory: Callable[[], T] | None = None) -> T:
    """The flow's analyzer state under ``key`` (stream parsers per direction, what the WebRTC
    demultiplexer learned...), created with ``factory`` (default ``cls()``) on first use."""
    states = _app(flow).own_states()
    value = states.get(key)
    if not isinstance(value, cls):
        value = states[key] = (factory or cls)()
    return value


def peek_state(flow: Flow, key: Hashable, cls: type[T]) -> T | None:
    """The flow's analyzer state under ``key`` if there is one."""
    app = flow.app
    value = app.states.get(key) if app is not None else None
    return value if isinstance(value, cls) else None


def offer_skip(flow: Flow, from_src: bool, nbytes: int, accept: Callable[[int], None]) -> None:
    """The next ``nbytes`` this side sends, after the payload the handler was just given, are not needed
    (the rest of an upload's body). If the analysis agrees (a flow in request mode whose stream is in order)
    it calls ``accept(nbytes)``, and the flow table stops showing those segments; else nothing happens and
    the handler goes on reading them."""
    _app(flow).skip_offer = (from_src, nbytes, accept)


def stop_inspecting(flow: Flow) -> None:
    """No more packets of this flow for the analyzers (not even those already selected)."""
    flow.inspect_left = 0
    _app(flow).done = True


class _Messages:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def read_at_most(flow: Flow, key: Hashable, limit: int) -> None:
    """One more message of the flow read under ``key``; at ``limit`` the flow is left alone (a protocol read
    for its first messages only: a registration comes first, a long session need not be parsed)."""
    state = flow_state(flow, (key, "messages"), _Messages)
    state.count += 1
    if state.count >= limit:
        stop_inspecting(flow)


class _Head:
    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""


def read_message(
    flow: Flow,
    key: str,
    from_src: bool,
    payload: bytes,
    *,
    looks_like: Callable[[bytes], bool],
    starts: Callable[[bytes], bool],
    whole: Callable[[bytes], bool],
    limit: int,
    budget: int,
) -> bytes | None:
    """The message this packet completes, for a text protocol read by its first messages (SIP, EHome, under
    their label ``key``). A datagram is one; on TCP a direction's segments are joined from one that ``starts``
    a message until ``whole`` says it is complete or ``limit`` bytes came (a small MSS cuts a request in
    pieces). None, counted against the flow's ``budget`` of packets (``read_at_most``): a message still
    coming, or the rest of one on a flow already labelled ``key``. Raises AnalyzerError when an unlabelled
    flow's packet is not the protocol (``looks_like``)."""
    data: bytes | None = payload
    if flow.proto == PROTO_TCP:
        head = flow_state(flow, (key, from_src), _Head)
        joined = head.data + payload
        if head.data or starts(joined):
            if not whole(joined) and len(joined) < limit:
                head.data, data = joined, None
                read_at_most(flow, key, budget * 4)  # a head coming in small segments
            else:
                head.data, data = b"", joined
    if data is None or looks_like(data):
        return data
    if flow.protocol != key:
        raise AnalyzerError(key, "not a message's start")
    read_at_most(flow, key, budget)  # the rest of a message: a body, a segment that continues one
    return None


class _Sides:
    __slots__ = ("said",)

    def __init__(self) -> None:
        self.said: set[bool] = set()


def report_first_per_side(
    ctx: Context, flow: Flow, key: str, from_src: bool, event: Event | None, budget: int
) -> None:
    """Report ``event`` (a message worth reporting, or None) if it is its side's first on the flow: the
    other side's may come first (a platform's INVITE on a flow the device registered on before camwatch
    started, its keep-alive next). Once both sides have spoken the flow is left alone; until then it is read
    for ``budget`` packets (``read_at_most``)."""
    if event is not None:
        sides = flow_state(flow, (key, "sides"), _Sides).said
        if from_src not in sides:
            sides.add(from_src)
            ctx.emit(event)
        if len(sides) == 2:
            stop_inspecting(flow)
            return
    read_at_most(flow, key, budget)


def _app(flow: Flow) -> FlowApp:
    app = flow.app
    if app is None:
        app = flow.app = FlowApp()
    return app


Handler = Callable[["Context", "Flow", bool, bytes, int], bool]
# A link-layer protocol's handler: (ctx, source MAC, destination MAC, payload after the ethertype, ts_ns).
LinkHandler = Callable[["Context", int, int, bytes, int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolSpec:
    """Everything the dispatcher needs to know about one protocol label."""

    name: str
    """The ``network.protocol`` label (lowercase)."""
    handler: Handler
    udp_ports: tuple[int, ...] = ()
    tcp_ports: tuple[int, ...] = ()
    """Ports the protocol is expected on: tried first, before any content guess."""
    sniff: Callable[[bytes], bool] | None = None
    """A cheap content check that never raises, for the protocol on a port it does not usually use."""
    tcp_sniff: Callable[[bytes], bool] | None = None
    """The check for TCP when the protocol looks different there (RFC 4571 framing); default ``sniff``."""
    udp_guess: int | None = None
    tcp_guess: int | None = None
    """Rank among the content guesses on that transport (lower is tried first); None: never guessed."""
    ip_protocol: int | None = None
    ip_guess: int | None = None
    """A protocol carried by IP without ports (NDP in ICMPv6: 58), and its rank among that protocol's
    guesses. Its handler gets the whole IP payload (the ICMP header included)."""
    control: bool = False
    """A small control protocol: once a flow has this label, every packet of it is read."""
    after_label: int | None = None
    """Once labelled, read at most this many more packets of the flow (media, encrypted sessions)."""
    requests: bool = False
    """Requests the attack rules match (HTTP, Dahua DVRIP): on a flow of a watched device, every data
    segment the client sends is read for the whole connection, past the first packets (not the answers)."""
    mux_rank: int | None = None
    """For labels that share one 5-tuple (RFC 7983: STUN, DTLS, SRTP): a flow's label only moves up."""
    emits: tuple[type[Event], ...] = ()
    """The event types the handler reports (documentation, and checked by the tests)."""

    def __post_init__(self) -> None:
        if (self.udp_guess, self.ip_guess) != (None, None) and self.sniff is None:
            raise ValueError(f"protocol {self.name}: a content guess needs a sniff function")
        if self.tcp_guess is not None and self.sniff is None and self.tcp_sniff is None:
            raise ValueError(f"protocol {self.name}: a content guess needs a sniff function")
        if (self.ip_guess is None) != (self.ip_protocol is None):
            raise ValueError(f"protocol {self.name}: ip_protocol and ip_guess go together")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """A link-layer protocol that is not IP (ARP): frames of ``ethertype`` go to ``handler``."""

    name: str
    ethertype: int
    handler: LinkHandler
    emits: tuple[type[Event], ...] = ()
