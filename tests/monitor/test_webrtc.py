"""WebRTC live view through the engine: the golden capture ``tests/data/fixtures/webrtc/liveview.pcap``.

The capture is our own (see the README beside it): a Hikvision-MAC lab camera 10.20.0.11 asks the STUN server
203.0.113.10:3478 for its reflexive address, posts its offer over HTTP to 203.0.113.10:8080, and streams H.264
to the cloud peer 203.0.113.10 over ICE, DTLS and SRTP on one UDP 5-tuple. The cloud's ICE check is the
first packet of that 5-tuple, so the cloud "opened" the media flow: the camera's media egress must be judged
by who sends the media. Variants of the same packets (addresses rewritten, ICE checks repeated, video
stretched) check the site-internal case, the inspect budget and batch independence.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest

from agents.capture.pcap_source import PcapFileSource
from monitor.alerts import iso_timestamp
from monitor.analyzers import srtp
from monitor.analyzers.webrtc import webrtc_state
from monitor.engine import Engine
from monitor.flows import Flow
from monitor.pcapwrite import pcap_bytes
from monitor.records import flow_record
from tests.enginerun import run_engine

CAPTURE = Path(__file__).parents[1] / "data" / "fixtures" / "webrtc" / "liveview.pcap"
CAMERA, CAMERA_MAC = "10.20.0.11", "44-19-b6-00-00-11"
CLOUD = "203.0.113.10"
NS = 1_000_000_000

Packet = tuple[int, bytes]  # (ts_ns, frame)
Alert = dict[str, Any]


def capture() -> list[Packet]:
    out: list[Packet] = []
    for batch in PcapFileSource(CAPTURE, 4096).batches():
        out += [(int(batch.ts_ns[i]), batch.packet(i)) for i in range(len(batch))]
    return out


def replay(
    tmp_path: Path, packets: list[Packet], batch_size: int = 65536, *, live: bool = False
) -> tuple[Engine, list[Flow], list[Alert]]:
    """Replay the packets; with ``live`` the flows still running (their analyzers' state is there)."""
    path = tmp_path / f"variant-{batch_size}.pcap"
    path.write_bytes(pcap_bytes(packets))
    return run_engine(path, batch_size=batch_size, live=live)


def udp_payload(frame: bytes) -> tuple[str, int, str, int, bytes] | None:
    """(src, sport, dst, dport, payload) of an Ethernet/IPv4/UDP frame, else None."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
    src, dst = str(ipaddress.IPv4Address(frame[26:30])), str(ipaddress.IPv4Address(frame[30:34]))
    return src, sport, dst, dport, frame[14 + ihl + 8 :]


def media_flow(flows: list[Flow]) -> Flow:
    (flow,) = [f for f in flows if f.proto == 17 and 3478 not in (f.src[1], f.dst[1])]
    return flow


def summary(alerts: list[Alert]) -> set[tuple[str, str, str | None, int | None, str | None]]:
    return {
        (
            a["rule"]["id"],
            a["source"]["ip"],
            a.get("destination", {}).get("ip"),
            a.get("destination", {}).get("port"),
            a.get("network", {}).get("protocol"),
        )
        for a in alerts
    }


# --- the capture as it is -------------------------------------------------------------------------------


def test_flows_are_labelled_stun_dtls_srtp(tmp_path: Path) -> None:
    _, flows, _ = replay(tmp_path, capture())
    by_port = {f.dst[1] if f.src[0] == CAMERA else f.src[1]: f for f in flows if f.proto in (6, 17)}
    assert by_port[3478].protocol == "stun"  # the Binding to the STUN server
    assert by_port[8080].protocol == "http"  # the signalling
    media = media_flow(flows)
    # STUN checks, then DTLS, then SRTP on one 5-tuple: the label says what it finally carries.
    assert media.protocol == "srtp"
    assert media.src[0] == CLOUD  # the cloud's ICE check came first
    assert flow_record(media)["network"]["protocol"] == "srtp"
    kinds = [srtp.demux(p[4]) for _, f in capture() if (p := udp_payload(f)) and 3478 not in (p[1], p[3])]
    assert kinds[0] == "stun" and "dtls" in kinds and kinds.count("rtp") > 100


def test_dtls_handshake_fields_reach_the_engine(tmp_path: Path) -> None:
    _, flows, _ = replay(tmp_path, capture(), live=True)
    state = webrtc_state(media_flow(flows))
    assert state is not None and state.dtls
    assert state.offered_profiles == (0x0008, 0x0007, 0x0001)
    assert state.srtp_profile == 0x0008  # SRTP_AEAD_AES_256_GCM, what aiortc picks
    assert len(state.certificates) == 2 and all(c.startswith("CN=") for c in state.certificates)
    assert state.media_from == {False}  # only the camera (the flow's destination side) sends video


def test_alerts_with_the_default_policy(tmp_path: Path) -> None:
    packets = capture()
    _, flows, alerts = replay(tmp_path, packets)
    media = media_flow(flows)
    assert summary(alerts) == {
        ("device.new", CAMERA, None, None, None),
        ("egress.unexpected_destination", CAMERA, CLOUD, 3478, None),  # the camera opened these two
        ("egress.unexpected_destination", CAMERA, CLOUD, 8080, None),
        ("p2p.nat_traversal", CAMERA, CLOUD, 3478, "stun"),
        ("stream.egress", CAMERA, CLOUD, media.src[1], "srtp"),
    }
    assert len(alerts) == 5 and len({a["event"]["id"] for a in alerts}) == 5
    (egress,) = [a for a in alerts if a["rule"]["id"] == "stream.egress"]
    assert egress["source"] == {"ip": CAMERA, "port": media.dst[1], "mac": CAMERA_MAC}
    assert egress["device"]["manufacturer"] == "Hikvision"
    assert "WebRTC media" in egress["message"] and CLOUD in egress["message"]
    # Prompt: judged on the first SRTP packet, not at flow end (capture time, so deterministic).
    first_stun = next(ts for ts, f in packets if (p := udp_payload(f)) and p[3] == 3478)
    first_srtp = next(ts for ts, f in packets if (p := udp_payload(f)) and p[0] == CAMERA and p[4][0] >= 128)
    assert first_srtp - first_stun < 10 * NS
    assert egress["@timestamp"] == iso_timestamp(first_srtp)


def test_ice_checks_alone_are_nat_traversal(tmp_path: Path) -> None:
    # Without the STUN server (a live view with no STUN configured), the camera's ICE checks and
    # responses to the cloud peer are still STUN leaving the site.
    packets = [(ts, f) for ts, f in capture() if not ((p := udp_payload(f)) and 3478 in (p[1], p[3]))]
    _, flows, alerts = replay(tmp_path, packets)
    media = media_flow(flows)
    assert ("p2p.nat_traversal", CAMERA, CLOUD, media.src[1], "stun") in summary(alerts)
    assert ("stream.egress", CAMERA, CLOUD, media.src[1], "srtp") in summary(alerts)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batch_boundaries_do_not_matter(tmp_path: Path, batch_size: int) -> None:
    packets = capture()
    _, flows_big, alerts_big = replay(tmp_path, packets)
    _, flows, alerts = replay(tmp_path, packets, batch_size)
    assert sorted(str(f.protocol) for f in flows) == sorted(str(f.protocol) for f in flows_big)
    assert [a["event"]["id"] for a in alerts] == [a["event"]["id"] for a in alerts_big]


# --- variants of the same packets ------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rewrite(frame: bytes, ips: dict[str, str], macs: dict[str, str]) -> bytes:
    """The frame with addresses replaced and the IPv4, UDP and TCP checksums recomputed."""
    f = bytearray(frame)
    for off in (0, 6):
        mac = "-".join(f"{b:02x}" for b in f[off : off + 6])
        if mac in macs:
            f[off : off + 6] = bytes.fromhex(macs[mac].replace("-", ""))
    if f[12:14] != b"\x08\x00":
        return bytes(f)
    for off in (26, 30):
        ip = str(ipaddress.IPv4Address(bytes(f[off : off + 4])))
        if ip in ips:
            f[off : off + 4] = ipaddress.IPv4Address(ips[ip]).packed
    ihl = (f[14] & 0x0F) * 4
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", _checksum(bytes(f[14 : 14 + ihl])))
    proto, l4 = f[23], 14 + ihl
    total = struct.unpack_from("!H", f, 16)[0]
    segment = bytes(f[l4 : 14 + total])
    where = {17: 6, 6: 16}.get(proto)
    if where is not None:
        zeroed = segment[:where] + b"\0\0" + segment[where + 2 :]
        pseudo = bytes(f[26:34]) + struct.pack("!BBH", 0, proto, len(segment))
        f[l4 + where : l4 + where + 2] = struct.pack("!H", _checksum(pseudo + zeroed) or 0xFFFF)
    return bytes(f)


def test_same_session_between_two_site_addresses_raises_neither(tmp_path: Path) -> None:
    site_peer = "10.20.0.50"
    packets = [(ts, rewrite(f, {CLOUD: site_peer}, {})) for ts, f in capture()]
    _, flows, alerts = replay(tmp_path, packets)
    assert media_flow(flows).protocol == "srtp"  # still recognised...
    assert summary(alerts) == {("device.new", CAMERA, None, None, None)}  # ...but nothing leaves the site


def test_receiving_video_from_outside_is_not_egress(tmp_path: Path) -> None:
    """Roles swapped: the watched device (a Hikvision MAC at 10.20.0.50) is the one that receives the video
    from a peer outside; it sends ICE checks and RTCP but no media: NAT traversal, not stream egress."""
    outside, watched_mac = "198.51.100.20", "44-19-b6-00-00-99"
    gateway_mac = "02-cc-20-00-00-01"  # the frames from the cloud side come from the gateway's MAC
    packets = [
        (ts, rewrite(f, {CAMERA: outside, CLOUD: "10.20.0.50"}, {CAMERA_MAC: "02-00-00-00-00-07",
                                                                gateway_mac: watched_mac}))
        for ts, f in capture()
        if f[12:14] == b"\x08\x00"  # the capture's ARP would still name the original roles
    ]  # fmt: skip
    _, flows, alerts = replay(tmp_path, packets)
    rules = {a["rule"]["id"] for a in alerts if a["source"]["ip"] == "10.20.0.50"}
    assert media_flow(flows).protocol == "srtp"
    assert "p2p.nat_traversal" in rules and "stream.egress" not in rules
    # With the roles swapped the outside peer also opened the signalling connection to the device's tcp/8080,
    # which the device accepted: device.exposed, whose source is that client.
    assert all(
        a["source"]["ip"] == "10.20.0.50" or a["rule"]["id"] == "device.exposed"  # type: ignore[index]
        for a in alerts
    )
    assert [a["source"]["ip"] for a in alerts if a["rule"]["id"] == "device.exposed"] == [outside]  # type: ignore[index]


def ice_phase_stretched(extra_rounds: int) -> list[Packet]:
    """The capture with ``extra_rounds`` more rounds of the real ICE checks and responses (both ways)
    between the last ICE packet and the DTLS handshake, as a slow or retransmitting ICE would send."""
    packets = capture()
    media = [(i, p) for i, (_, f) in enumerate(packets) if (p := udp_payload(f)) and 3478 not in (p[1], p[3])]
    ice = [i for i, p in media if srtp.demux(p[4]) == "stun"]
    first_dtls = next(i for i, p in media if srtp.demux(p[4]) == "dtls")
    ts0, ts1 = packets[ice[-1]][0], packets[first_dtls][0]
    step = (ts1 - ts0) // (extra_rounds * len(ice) + 1)
    extra = [(ts0 + step * (k + 1), packets[ice[k % len(ice)]][1]) for k in range(extra_rounds * len(ice))]
    return packets[: ice[-1] + 1] + extra + packets[ice[-1] + 1 :]


@pytest.mark.parametrize("batch_size", [65536, 4])
def test_first_srtp_is_reached_after_a_long_ice_phase(tmp_path: Path, batch_size: int) -> None:
    packets = ice_phase_stretched(6)  # 24 more STUN packets: the first SRTP is packet ~36 of the flow
    _, flows, alerts = replay(tmp_path, packets, batch_size)
    assert media_flow(flows).protocol == "srtp"
    assert ("stream.egress", CAMERA, CLOUD) in {s[:3] for s in summary(alerts)}


def stretched_video(copies: int) -> list[Packet]:
    """The capture with the camera's SRTP packets sent ``copies`` more times after the session (sequence
    numbers continued), as a longer live view would."""
    packets = capture()
    video = [f for _, f in packets if (p := udp_payload(f)) and p[0] == CAMERA and srtp.demux(p[4]) == "rtp"]
    t = packets[-1][0]
    out = list(packets)
    seq = 0
    for _ in range(copies):
        for frame in video:
            seq += 1
            t += NS // 100
            b = bytearray(frame)
            struct.pack_into("!H", b, 42 + 2, (struct.unpack_from("!H", b, 44)[0] + seq) & 0xFFFF)
            out.append((t, bytes(b)))
    return out


@pytest.mark.parametrize("batch_size", [65536, 8])
def test_video_is_not_inspected(tmp_path: Path, batch_size: int) -> None:
    """After the first SRTP packet the budget ends: ten times more video adds no analyzer work."""
    engine, _, alerts = replay(tmp_path, capture(), batch_size)
    longer, flows, longer_alerts = replay(tmp_path, stretched_video(10), batch_size)
    assert media_flow(flows).packets > 1000
    assert longer.analysis.stats.packets == engine.analysis.stats.packets
    assert longer.analysis.stats.parse_errors == engine.analysis.stats.parse_errors == 0
    assert [a["event"]["id"] for a in longer_alerts] == [a["event"]["id"] for a in alerts]


def test_stun_flow_to_the_server_is_not_mistaken(tmp_path: Path) -> None:
    # A Binding to a STUN server followed by nothing else stays "stun" (no DTLS, no media): control
    # traffic keeps its unlimited budget, as before.
    packets = [(ts, f) for ts, f in capture() if (p := udp_payload(f)) and 3478 in (p[1], p[3])]
    _, flows, alerts = replay(tmp_path, packets, live=True)
    (flow,) = flows
    assert flow.protocol == "stun" and flow.inspect_left == -1 and webrtc_state(flow) is None
    assert "stream.egress" not in {a["rule"]["id"] for a in alerts}
