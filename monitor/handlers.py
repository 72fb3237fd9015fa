"""Adapters from each analyzer to what the engine needs: labels, observations, device facts.

A handler takes (analysis, flow, from_src, payload, ts_ns), parses the payload with its analyzer
(raising AnalyzerError when the payload is not that protocol) and returns True when the payload is
that protocol. Stream protocols keep a parser per direction in the flow's analyzer state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitor.analyzers import (
    AnalyzerError,
    dhcp,
    dhip,
    dns,
    dtls,
    http,
    mqtt,
    ntp,
    p2p,
    rtp,
    rtsp,
    sadp,
    srtp,
    ssdp,
    stun,
    tls,
    wsd,
)

if TYPE_CHECKING:
    from monitor.analysis import Analysis
    from monitor.flows import Flow

Handler = Callable[["Analysis", "Flow", bool, bytes, int], bool]

# Packets of a WebRTC flow still analysed once DTLS starts (the first SRTP packet must come by then), and
# once media is seen (to see the other side's media too).
DTLS_PACKETS = 32
SRTP_PACKETS = 8

# Passive fingerprints of camera makers (DESIGN 3: nmap-service-probes, rapid7/recog).
SERVER_VENDORS: tuple[tuple[str, str], ...] = (
    ("app-webs", "hikvision"),
    ("hikvision-webs", "hikvision"),
    ("dnvrs-webs", "hikvision"),
    ("dvrdvs-webs", "hikvision"),
    ("dahua rtsp server", "dahua"),
    ("dahua", "dahua"),
    ("h264dvr", "xiongmai"),
    ("uc-httpd", "xiongmai"),
    ("netsurveillance", "xiongmai"),
    ("hipcam", "xiongmai"),
)
REALM_VENDORS: tuple[tuple[str, str], ...] = (
    ("hikvision", "hikvision"),
    ("dahua", "dahua"),
    ("ezviz", "ezviz"),
)
CERT_VENDORS: tuple[tuple[str, str], ...] = (
    ("hikvision", "hikvision"),
    ("dahua", "dahua"),
    ("ezviz", "ezviz"),
)


def vendor_from(text: str | None, table: tuple[tuple[str, str], ...]) -> str | None:
    if not text:
        return None
    low = text.lower()
    for needle, vendor in table:
        if needle in low:
            return vendor
    return None


def _stream(a: Analysis, flow: Flow, from_src: bool, proto: str, factory: Callable[[], Any]) -> Any:
    app = flow.app
    assert app is not None
    parsers: dict[tuple[str, bool], Any] = app.parsers  # type: ignore[attr-defined]
    key = (proto, from_src)
    parser = parsers.get(key)
    if parser is None:
        parser = parsers[key] = factory()
    return parser


# --------------------------------------------------------------------------------------- UDP


def handle_dns(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.proto == 6:
        msgs = [dns.parse(m) for m in dns.split_tcp_messages(payload, partial_ok=True)]
        if not msgs:
            raise AnalyzerError("dns", "no complete message in the segment")
    else:
        msgs = [dns.parse(payload)]
    for msg in msgs:
        if not msg.is_response:
            for name, qtype, _qclass in msg.questions:
                a.observe("dns_query", flow, from_src, ts, name=name, qtype=qtype)
        else:
            for rec in msg.answers:
                if rec.rtype in (1, 28) and rec.value:
                    # Resolve the chain back to the asked name: the flow that follows goes to the
                    # address, but the person on call knows the name that was asked.
                    asked = msg.questions[0][0] if msg.questions else rec.name
                    a.resolutions.add(rec.value, asked, ts)
            a.observe("dns_answer", flow, from_src, ts, names=[q[0] for q in msg.questions], rcode=msg.rcode)
    return True


def handle_mdns(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = dns.parse(payload)
    for rec in (*msg.answers, *msg.additional):
        if rec.rtype == 16 and rec.txt:
            a.observe("mdns_txt", flow, from_src, ts, name=rec.name, txt=list(rec.txt))
    return True


def handle_llmnr(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    dns.parse(payload)
    return True


def handle_dhcp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = dhcp.parse(payload)
    if msg.op == 1 and msg.chaddr:
        detail = ", ".join(
            f"{k}={v}" for k, v in (("host_name", msg.host_name), ("vendor_class", msg.vendor_class)) if v
        )
        if detail:
            ip, _ = flow.src if from_src else flow.dst
            from monitor.analysis import DeviceFact

            a.device_facts.append(
                DeviceFact(
                    msg.chaddr,
                    ip,
                    "dhcp",
                    detail,
                    vendor=vendor_from(msg.vendor_class, SERVER_VENDORS),
                    ts_ns=ts,
                )
            )
        a.observe(
            "dhcp",
            flow,
            from_src,
            ts,
            host_name=msg.host_name,
            vendor_class=msg.vendor_class,
            message_type=msg.message_type,
            mac=msg.chaddr,
        )
    return True


def handle_ntp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    ntp.parse(payload)
    return True


def handle_ssdp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = ssdp.parse(payload)
    if msg.kind == "search" and msg.is_igd_search:
        a.observe("igd_search", flow, from_src, ts, target=msg.st)
    vendor = vendor_from(msg.server, SERVER_VENDORS)
    if msg.server and vendor:
        a.device_fact(flow, from_src, "ssdp_server", msg.server, vendor=vendor, protocol="ssdp")
    return True


def handle_wsd(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = wsd.parse(payload)
    if msg.action.lower() in ("probematches", "hello", "resolvematches"):
        for item in msg.items:
            maker = getattr(item, "manufacturer", None)
            model = item.model
            if maker or model:
                vendor = vendor_from(" ".join(filter(None, (maker, model, item.name))), _MAKER_VENDORS)
                a.device_fact(
                    flow,
                    from_src,
                    "wsd",
                    f"manufacturer={maker} model={model}",
                    vendor=vendor,
                    model=model,
                    protocol="wsd",
                )
    return True


_MAKER_VENDORS: tuple[tuple[str, str], ...] = (
    ("hikvision", "hikvision"),
    ("hik", "hikvision"),
    ("dahua", "dahua"),
    ("ezviz", "ezviz"),
    ("imou", "imou"),
    ("uniview", "uniview"),
    ("unv", "uniview"),
    ("tiandy", "tiandy"),
    ("xiongmai", "xiongmai"),
    ("axis", "axis"),
)


def _discovery_fact(
    a: Analysis,
    flow: Flow,
    from_src: bool,
    ts: int,
    kind: str,
    vendor: str,
    ip: str | None,
    mac: int | None,
    model: str | None,
    serial: str | None,
    firmware: str | None,
) -> None:
    """A discovery reply describes its sender: model, serial and firmware, and who made it."""
    from monitor.analysis import DeviceFact

    a.device_facts.append(
        DeviceFact(
            mac or (flow.src_mac if from_src else flow.dst_mac),
            ip or (flow.src if from_src else flow.dst)[0],
            kind,
            f"model={model} serial={serial} firmware={firmware}",
            vendor=vendor,
            model=model,
            firmware=firmware,
            serial=serial,
            protocol=kind,
            ts_ns=ts,
        )
    )


def handle_sadp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = sadp.parse(payload)
    if msg.is_reply:
        _discovery_fact(
            a, flow, from_src, ts, "sadp", "hikvision", msg.ipv4, msg.mac, msg.model, msg.serial, msg.firmware
        )
    return True


def handle_dhip(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = dhip.parse(payload)
    if msg.is_reply:
        _discovery_fact(
            a,
            flow,
            from_src,
            ts,
            "dhip",
            "dahua",
            msg.ipv4,
            msg.mac,
            msg.device_type,
            msg.serial,
            msg.firmware,
        )
    return True


def handle_stun(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol in MUX_LABELS:
        return _mux(a, flow, from_src, payload, ts)
    return _stun(a, flow, from_src, payload, ts)


def _stun(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = stun.parse(payload)
    kind = "turn" if isinstance(msg, stun.ChannelData) or (msg.method not in (1,)) else "stun"
    a.observe("p2p", flow, from_src, ts, protocol="stun", vendor=None, message=kind, serial=None)
    return True


# ------------------------------------------------------------- WebRTC: STUN, DTLS and SRTP on one 5-tuple

# Labels of a flow that multiplexes ICE, DTLS and SRTP (RFC 7983), in precedence order.
MUX_LABELS: dict[str | None, int] = {"stun": 0, "dtls": 1, "srtp": 2}


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
    app = flow.app
    state = getattr(app, "webrtc", None)
    return state if isinstance(state, WebRtcState) else None


def _state(flow: Flow) -> WebRtcState:
    app = flow.app
    assert app is not None
    state = app.webrtc  # type: ignore[attr-defined]
    if state is None:
        state = app.webrtc = WebRtcState()  # type: ignore[attr-defined]
    assert isinstance(state, WebRtcState)
    return state


def _budget(flow: Flow, state: WebRtcState, packets: int) -> None:
    """Look at ``packets`` more packets of the flow (here and in the flow table), then stop."""
    state.left = packets
    flow.inspect_left = packets


def _spend(flow: Flow, state: WebRtcState) -> None:
    if state.left is not None:
        state.left -= 1
        if state.left <= 0:
            flow.inspect_left = 0
            flow.app.done = True  # type: ignore[attr-defined]


def handle_dtls(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol in MUX_LABELS:
        return _mux(a, flow, from_src, payload, ts)
    return _dtls(a, flow, from_src, payload, ts)


def _dtls(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = dtls.parse(payload)
    state = _state(flow)
    if not state.dtls:
        state.dtls = True
        a.upgrade(flow, "dtls")
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
                a.device_fact(flow, from_src, "dtls_cert", f"O={org}", vendor=vendor, protocol="dtls")
    return True


def handle_srtp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    return _mux(a, flow, from_src, payload, ts)


def _mux(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    """A packet of a flow labelled stun, dtls or srtp: demultiplexed by its first byte (RFC 7983)."""
    try:
        kind = srtp.demux(payload)
        if kind in ("stun", "turn-channel") or (kind == "quic" and payload[0] <= 127):
            # 64-127: TURN ChannelData, whose channel numbers the STUN analyzer takes up to 0x7FFF.
            return _stun(a, flow, from_src, payload, ts)
        if kind == "dtls":
            return _dtls(a, flow, from_src, payload, ts)
        if kind == "rtp":
            return _srtp_media(a, flow, from_src, payload, ts)
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


def _srtp_media(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    state = _state(flow)
    # After DTLS on the flow the media is DTLS-SRTP; without DTLS (keys from signalling, or no keys) it
    # is only known to be RTP-framed.
    srtp.SrtpPacket.parse(payload, state.srtp_profile if state.dtls else None)
    if state.dtls:
        a.upgrade(flow, "srtp")
    if not state.media_from:
        # Enough to see the other side's media too (a two-way call), then nothing more of the video.
        _budget(flow, state, SRTP_PACKETS)
    if from_src not in state.media_from:
        state.media_from.add(from_src)
        a.observe("media", flow, from_src, ts, protocol="srtp" if state.dtls else "rtp")
    return True


def handle_rtp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    rtp.RtpHeader.parse(payload)
    if not rtp.looks_like_rtp(payload):
        raise AnalyzerError("rtp", "not a plausible RTP header")
    a.observe("media", flow, from_src, ts, protocol="rtp")
    return True


def handle_rtcp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    rtp.RtcpCompound.parse(payload)
    return True


def _p2p_parsers() -> dict[str, tuple[Callable[[bytes], Any], ...]]:
    return {
        "pppp": (p2p.Cs2PpppMessage.parse,),
        "dahua-p2p": (p2p.DahuaP2pMessage.parse, p2p.DahuaPtcpPacket.parse),
        "ezviz-p2p": (p2p.EzvizXmlMessage.parse,),
    }


def handle_p2p(proto: str) -> Handler:
    def handler(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
        error: AnalyzerError | None = None
        for parse in _p2p_parsers()[proto]:
            try:
                msg = parse(payload).summary()
            except AnalyzerError as exc:
                error = exc
                continue
            a.observe(
                "p2p",
                flow,
                from_src,
                ts,
                protocol=msg.protocol,
                vendor=msg.vendor,
                message=msg.kind,
                serial=msg.serial,
            )
            return True
        assert error is not None
        raise error

    return handler


# --------------------------------------------------------------------------------------- TCP


def handle_http(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    parser = _stream(a, flow, from_src, "http", http.HttpStreamParser)
    if flow.protocol is None and not http.looks_like(payload):
        raise AnalyzerError("http", "not an HTTP message start")
    for msg in parser.feed(payload):
        if isinstance(msg, http.HttpRequest):
            if msg.soap_action and "portmapping" in msg.soap_action.lower():
                a.observe("port_mapping", flow, from_src, ts, action=msg.soap_action, request=payload)
            if msg.host:
                a.observe(
                    "http_request", flow, from_src, ts, host=msg.host, method=msg.method, target=msg.target
                )
        else:
            vendor = vendor_from(msg.server, SERVER_VENDORS)
            if msg.server:
                a.device_fact(flow, from_src, "http_server", msg.server, vendor=vendor, protocol="http")
            for ch in msg.challenges:
                realm = ch.realm
                rv = vendor_from(realm, REALM_VENDORS)
                if realm and rv:
                    a.device_fact(flow, from_src, "realm", realm, vendor=rv, protocol="http")
    return True


def handle_tls(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not tls.looks_like(payload):
        raise AnalyzerError("tls", "not a TLS record")
    parser = _stream(a, flow, from_src, "tls", tls.TlsStreamParser)
    for msg in parser.feed(payload):
        if isinstance(msg, tls.ClientHello) and msg.server_name:
            flow.server_name = msg.server_name
            a.observe("tls_sni", flow, from_src, ts, sni=msg.server_name)
        elif isinstance(msg, tls.CertificateInfo):
            org = msg.subject.organization
            vendor = vendor_from(org, CERT_VENDORS)
            if vendor:
                a.device_fact(flow, from_src, "tls_cert", f"O={org}", vendor=vendor, protocol="tls")
    return True


def handle_rtsp(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not rtsp.looks_like(payload):
        raise AnalyzerError("rtsp", "not an RTSP message start")
    parser = _stream(a, flow, from_src, "rtsp", lambda: rtsp.RtspStreamParser(report_frames=False))
    for msg in parser.feed(payload):
        if isinstance(msg, rtsp.RtspRequest):
            a.observe("rtsp_request", flow, from_src, ts, method=msg.method, url=msg.url)
            for t in msg.transports:
                a.observe("rtsp_transport", flow, from_src, ts, transport=t, request=True)
        elif isinstance(msg, rtsp.RtspResponse):
            vendor = vendor_from(msg.server, SERVER_VENDORS)
            if msg.server:
                a.device_fact(flow, from_src, "rtsp_server", msg.server, vendor=vendor, protocol="rtsp")
            realm = msg.realm
            rv = vendor_from(realm, REALM_VENDORS)
            if realm and rv:
                a.device_fact(flow, from_src, "realm", realm, vendor=rv, protocol="rtsp")
            for t in msg.transports:
                a.observe("rtsp_transport", flow, from_src, ts, transport=t, request=False)
            if msg.sdp is not None:
                codecs = sorted({codec for m in msg.sdp.media for _, codec, _, _ in m.rtpmap})
                a.observe("sdp", flow, from_src, ts, codecs=codecs)
    return True


def handle_mqtt(a: Analysis, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not mqtt.looks_like(payload):
        raise AnalyzerError("mqtt", "not an MQTT CONNECT")
    msg = mqtt.parse(payload)
    if isinstance(msg, mqtt.MqttConnect):
        a.observe("mqtt_connect", flow, from_src, ts, client_id=msg.client_id, username=msg.username)
        if msg.username:
            a.device_fact(
                flow, from_src, "mqtt_user", f"client_id={msg.client_id} user={msg.username}", protocol="mqtt"
            )
    return True


HANDLERS: dict[str, Handler] = {
    "dns": handle_dns,
    "mdns": handle_mdns,
    "llmnr": handle_llmnr,
    "dhcp": handle_dhcp,
    "ntp": handle_ntp,
    "ssdp": handle_ssdp,
    "wsd": handle_wsd,
    "sadp": handle_sadp,
    "dhip": handle_dhip,
    "stun": handle_stun,
    "dtls": handle_dtls,
    "srtp": handle_srtp,
    "rtp": handle_rtp,
    "rtcp": handle_rtcp,
    "pppp": handle_p2p("pppp"),
    "ezviz-p2p": handle_p2p("ezviz-p2p"),
    "dahua-p2p": handle_p2p("dahua-p2p"),
    "http": handle_http,
    "tls": handle_tls,
    "rtsp": handle_rtsp,
    "mqtt": handle_mqtt,
}


def _dahua_looks_like(payload: bytes) -> bool:
    return p2p.DahuaP2pMessage.looks_like(payload) or p2p.DahuaPtcpPacket.looks_like(payload)


LOOKS_LIKE: dict[str, Callable[[bytes], bool]] = {
    "dns": dns.looks_like,
    "stun": stun.looks_like,
    "dtls": dtls.looks_like,
    "rtp": rtp.looks_like_rtp,
    "rtcp": rtp.looks_like_rtcp,
    "ssdp": ssdp.looks_like,
    "wsd": wsd.looks_like,
    "sadp": sadp.looks_like,
    "dhip": dhip.looks_like,
    "pppp": p2p.Cs2PpppMessage.looks_like,
    "dahua-p2p": _dahua_looks_like,
    "ezviz-p2p": p2p.EzvizXmlMessage.looks_like,
    "http": http.looks_like,
    "rtsp": rtsp.looks_like,
    "tls": tls.looks_like,
    "mqtt": mqtt.looks_like,
}
