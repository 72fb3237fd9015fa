"""STUN, DTLS and SRTP on one 5-tuple, as WebRTC (cloud live view, P2P viewing) multiplexes them.

The three protocols are declared here together because a WebRTC flow carries all of them, told
apart packet by packet by the first byte (RFC 7983, ``srtp.demux``): ICE checks (STUN) first, then the
DTLS handshake that keys SRTP, then media. Such a flow is labelled ``stun``, then ``dtls``, then
``srtp`` as it goes (a label only moves up: :attr:`ProtocolSpec.mux_rank`). A plain STUN exchange
with a server is the same ``stun`` protocol and never gets further.

Cost: after DTLS starts, the flow is read for :data:`DTLS_PACKETS` more packets (the first SRTP
packet follows the handshake within a few flights), and after the first media for :data:`SRTP_PACKETS`
more (enough to see the other side's media too), then not at all: video costs only counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitor.analyzers import AnalyzerError, dtls, rtp, srtp, stun, tls
from monitor.decode import PROTO_TCP
from monitor.events import MediaSeen, P2pSignal
from monitor.protocol import Context, ProtocolSpec, flow_state, peek_state, stop_inspecting
from monitor.vendors.fingerprints import CERT_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

# Packets of a WebRTC flow still analysed once DTLS starts, and once media is seen.
DTLS_PACKETS = 32
SRTP_PACKETS = 8

_STATE = "webrtc"


class WebRtcState:
    """What the analysis of a multiplexed flow learned: DTLS seen, the SRTP profile, who sent media, and
    how many more packets the flow is worth (None: no limit yet)."""

    __slots__ = ("certificates", "dtls", "left", "media_from", "offered_profiles", "srtp_profile")

    def __init__(self) -> None:
        self.dtls = False
        self.offered_profiles: tuple[int, ...] = ()
        self.srtp_profile: int | None = None
        self.certificates: list[str] = []  # subjects, at most two (one per peer)
        self.media_from: set[bool] = set()  # from_src values of the senders of (S)RTP media
        self.left: int | None = None


def webrtc_state(flow: Flow) -> WebRtcState | None:
    """The flow's multiplexing state, once a DTLS or SRTP packet was analysed on it."""
    return peek_state(flow, _STATE, WebRtcState)


def _state(flow: Flow) -> WebRtcState:
    return flow_state(flow, _STATE, WebRtcState)


def _budget(flow: Flow, state: WebRtcState, packets: int) -> None:
    """Look at ``packets`` more packets of the flow (here and in the flow table), then stop."""
    state.left = packets
    flow.inspect_left = packets


def _spend(flow: Flow, state: WebRtcState) -> None:
    if state.left is not None:
        state.left -= 1
        if state.left <= 0:
            stop_inspecting(flow)


def _muxed(flow: Flow) -> bool:
    return flow.protocol in ("stun", "dtls", "srtp")


def handle_stun(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.proto == PROTO_TCP:
        return _stun_tcp(ctx, flow, from_src, payload, ts)
    if _muxed(flow):
        return _mux(ctx, flow, from_src, payload, ts)
    return _stun(ctx, flow, from_src, payload, ts)


def looks_like_stun_tcp(payload: bytes) -> bool:
    """STUN over TCP: a message as is (RFC 8489), or framed by a 2-byte length (RFC 4571, ICE-TCP)."""
    if stun.looks_like(payload[: 20 + ((payload[2] << 8) | payload[3])] if len(payload) >= 4 else b""):
        return True
    packets = rtp.framed(payload)
    return bool(packets) and stun.looks_like(packets[0])


def _stun_tcp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    """STUN on a TCP connection; one P2P signal per segment (each of its messages is one exchange)."""
    packets = rtp.framed(payload)
    message = packets[0] if packets and stun.looks_like(packets[0]) else payload
    messages, _ = stun.split_stream(message)
    if not messages:
        raise AnalyzerError("stun", "no complete STUN message in the segment")
    first = messages[0]
    kind = "turn" if isinstance(first, stun.ChannelData) or first.method != 1 else "stun"
    ctx.emit(P2pSignal(ts, flow, from_src, "stun", None, kind, None))
    return True


def handle_dtls(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if _muxed(flow):
        return _mux(ctx, flow, from_src, payload, ts)
    return _dtls(ctx, flow, from_src, payload, ts)


def handle_srtp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    return _mux(ctx, flow, from_src, payload, ts)


def _stun(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = stun.parse(payload)
    kind = "turn" if isinstance(msg, stun.ChannelData) or msg.method != 1 else "stun"
    ctx.emit(P2pSignal(ts, flow, from_src, "stun", None, kind, None))
    return True


def _dtls(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = dtls.parse(payload)
    state = _state(flow)
    if not state.dtls:
        state.dtls = True
        ctx.upgrade(flow, "dtls")
        # ICE checks are over; the first SRTP packet follows the handshake within a few flights.
        _budget(flow, state, DTLS_PACKETS)
    for m in msg.messages:
        if isinstance(m, dtls.ClientHello):
            state.offered_profiles = m.srtp_profiles
        elif isinstance(m, dtls.ServerHello):
            state.srtp_profile = m.srtp_profile
        elif isinstance(m, tls.CertificateInfo) and len(state.certificates) < 2:
            state.certificates.append(str(m.subject))
            org = m.subject.organization
            vendor = vendor_from(org, CERT_VENDORS)
            if vendor:
                ctx.fact(flow, from_src, "dtls_cert", f"O={org}", vendor=vendor, protocol="dtls")
    return True


def _mux(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    """A packet of a flow labelled stun, dtls or srtp: demultiplexed by its first byte (RFC 7983)."""
    try:
        kind = srtp.demux(payload)
        if kind in ("stun", "turn-channel") or (kind == "quic" and payload[0] <= 127):
            # 64-127: TURN ChannelData, whose channel numbers the STUN analyzer takes up to 0x7FFF.
            return _stun(ctx, flow, from_src, payload, ts)
        if kind == "dtls":
            return _dtls(ctx, flow, from_src, payload, ts)
        if kind == "rtp":
            return _srtp_media(ctx, flow, from_src, payload, ts)
        if kind == "rtcp":
            known = _state(flow)
            srtp.SrtcpPacket.parse(payload, known.srtp_profile if known.dtls else None)
            return True
        raise AnalyzerError("stun", f"first byte {payload[:1].hex() or 'none'}: not STUN, DTLS or SRTP")
    finally:
        # Every packet counts against the budget, malformed ones too.
        state = webrtc_state(flow)
        if state is not None:
            _spend(flow, state)


def _srtp_media(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    state = _state(flow)
    # After DTLS on the flow the media is DTLS-SRTP; without DTLS (keys from signalling, or no keys) it
    # is only known to be RTP-framed.
    srtp.SrtpPacket.parse(payload, state.srtp_profile if state.dtls else None)
    if state.dtls:
        ctx.upgrade(flow, "srtp")
    if not state.media_from:
        # Enough to see the other side's media too (a two-way call), then nothing more of the video.
        _budget(flow, state, SRTP_PACKETS)
    if from_src not in state.media_from:
        state.media_from.add(from_src)
        ctx.emit(MediaSeen(ts, flow, from_src, "srtp" if state.dtls else "rtp"))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name="stun",
        handler=handle_stun,
        udp_ports=(3478, 3479, 19302),
        tcp_ports=(3478,),
        sniff=stun.looks_like,
        tcp_sniff=looks_like_stun_tcp,
        udp_guess=10,
        tcp_guess=50,
        control=True,
        mux_rank=0,
        emits=(P2pSignal, MediaSeen),
    ),
    ProtocolSpec(
        name="dtls",
        handler=handle_dtls,
        sniff=dtls.looks_like,
        udp_guess=20,
        mux_rank=1,
        emits=(P2pSignal, MediaSeen),
    ),
    ProtocolSpec(name="srtp", handler=handle_srtp, mux_rank=2, emits=(P2pSignal, MediaSeen)),
)
