"""The engine on RTSP sessions whose SETUP sends the camera's RTP to a third address (`destination=`).

RFC 2326 12.39: a SETUP's Transport header may name a `destination` other than the client: the camera
then streams to that address. Off site, that is video leaving (`stream.egress`, naming the address); on
site, a recorder fanning out. Either way the media flow to that address is labelled RTP from the SETUP
when it starts, with the camera as its sender, even when the receiver sends the flow's first packet.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lab.personas import SDP_H264, rtsp_request, rtsp_response, tcp_exchange
from lab.synth import RtpTemplate, udp4_frame
from monitor.flows import Flow
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.enginerun import NO_TIMEOUTS, run_engine

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
CAM_MAC, CAM_IP = "44:19:b6:00:00:01", "192.168.1.64"  # a Hikvision OUI
NVR_MAC, NVR_IP = "00:11:32:00:00:02", "192.168.1.10"
GW_MAC = "02:00:00:00:00:01"
POLICY = SitePolicy.from_yaml("site: s\nmonitored: {networks: [192.168.1.0/24]}\n")
CLIENT_PORT, SERVER_PORT = 50000, 60000
FRAMES = 200


def _session(tmp_path: Path, destination: str, dest_mac: str, written: str | None = None) -> tuple[Path, int]:
    """The NVR sets the camera's stream up towards `destination` (in the Transport as `written`, if given);
    the camera answers with the same Transport and no `server_port` (some do not send one), so only
    `destination=` says where the RTP goes. Returns the capture and the time of the media flow's first
    packet."""
    url = f"rtsp://{CAM_IP}/Streaming/Channels/101"
    transport = (
        f"RTP/AVP;unicast;destination={written or destination};client_port={CLIENT_PORT}-{CLIENT_PORT + 1}"
    )
    turns = [
        (
            rtsp_request("DESCRIBE", url, 1, "Accept: application/sdp\r\n"),
            rtsp_response(1, "Hikvision-Webs", "Content-Type: application/sdp\r\n", SDP_H264),
        ),
        (
            rtsp_request("SETUP", url + "/trackID=1", 2, f"Transport: {transport}\r\n"),
            rtsp_response(2, "Hikvision-Webs", f"Transport: {transport}\r\nSession: 1234\r\n"),
        ),
        (
            rtsp_request("PLAY", url, 3, "Session: 1234\r\n"),
            rtsp_response(3, "Hikvision-Webs", "Session: 1234\r\n"),
        ),
    ]
    packets = tcp_exchange(T0, NVR_MAC, CAM_MAC, NVR_IP, CAM_IP, 40000, 554, turns)
    t = packets[-1][0] + NS // 10
    # The receiver opens its NAT/firewall first with an empty RTP packet (FFmpeg does), so the flow's first
    # packet is not the camera's: only the SETUP says which side sends the video.
    punch = struct.pack("!BBHII", 0x80, 0, 0, 0, 0)
    packets.append((t, udp4_frame(dest_mac, CAM_MAC, destination, CAM_IP, CLIENT_PORT, SERVER_PORT, punch)))
    video = RtpTemplate(CAM_MAC, dest_mac, CAM_IP, destination, SERVER_PORT, CLIENT_PORT, 1100, 0x1234)
    packets += [(t + (i + 1) * NS // 50, video.frame(i, i * 1800)) for i in range(FRAMES)]
    path = tmp_path / "rtsp-destination.pcap"
    path.write_bytes(pcap_bytes(packets))
    return path, t


def _media_flow(flows: list[Flow], destination: str) -> Flow:
    (flow,) = [f for f in flows if f.proto == 17 and destination in (f.src[0], f.dst[0])]
    return flow


def _timestamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_setup_to_an_outside_destination_is_stream_egress_naming_it(tmp_path: Path) -> None:
    outside = "198.51.100.20"
    capture, media_start = _session(tmp_path, outside, GW_MAC)
    _, flows, alerts = run_engine(capture, NO_TIMEOUTS, POLICY)
    rules = [a["rule"]["id"] for a in alerts]  # type: ignore[index]
    # The SETUP is judged when it is seen (request and response name the same address: one incident); the
    # media flow to that address as soon as it starts, with the camera as the sender although the receiver
    # sent the first packet (the flow is inbound, so no egress.unexpected_destination).
    # device.new comes 5 s after each device is first watched, after the session's alerts.
    assert rules == ["stream.egress", "stream.egress", "device.new", "device.new"]
    setup, media_alert = alerts[0], alerts[1]
    assert f"to send its video to {outside}, outside the site" in str(setup["message"])
    assert setup["source"] == {"ip": CAM_IP, "port": 554, "mac": "44-19-b6-00-00-01"}
    assert setup["destination"] == {"ip": outside, "port": CLIENT_PORT}  # where the video goes, not the NVR
    assert setup["network"]["protocol"] == "rtsp"  # type: ignore[index]
    assert media_alert["source"] == {"ip": CAM_IP, "port": SERVER_PORT, "mac": "44-19-b6-00-00-01"}
    assert media_alert["destination"] == {"ip": outside, "port": CLIENT_PORT}
    assert media_alert["network"]["protocol"] == "rtp"  # type: ignore[index]
    assert media_alert["@timestamp"] == _timestamp(media_start)  # labelled from the SETUP, not by content
    media = _media_flow(flows, outside)
    assert (media.protocol, media.packets, media.start_ns) == ("rtp", FRAMES + 1, media_start)
    assert (media.src, media.dst, media.media_from_src) == (
        (outside, CLIENT_PORT),
        (CAM_IP, SERVER_PORT),
        False,
    )


@pytest.mark.parametrize(
    ("written", "setup_alerts"),
    [("[::ffff:198.51.100.20]", 1), ("NVR.example.com", 0), ("[not an address]", 0), ("198.51.100.020", 0)],
)
def test_a_destination_written_otherwise_is_read_or_left_never_an_error(
    tmp_path: Path, written: str, setup_alerts: int
) -> None:
    # An address in brackets (RFC 7826's form), IPv4-mapped, is the address; a host name (RFC 2326 allows
    # one) or junk is not judged from the SETUP: the video's own flow still is, by its address.
    outside = "198.51.100.20"
    capture, _ = _session(tmp_path, outside, GW_MAC, written)
    _, _, alerts = run_engine(capture, NO_TIMEOUTS, POLICY)
    egress = [a for a in alerts if a["rule"]["id"] == "stream.egress"]  # type: ignore[index]
    from_setup = [a for a in egress if a["network"]["protocol"] == "rtsp"]  # type: ignore[index]
    assert len(from_setup) == setup_alerts
    assert all(a["destination"]["ip"] == outside for a in egress)  # type: ignore[index]
    assert any(a["network"]["protocol"] == "rtp" for a in egress)  # type: ignore[index]


def test_setup_to_another_site_address_labels_its_rtp_without_alert(tmp_path: Path) -> None:
    other_recorder, other_mac = "192.168.1.11", "00:11:32:00:00:03"
    capture, media_start = _session(tmp_path, other_recorder, other_mac)
    _, flows, alerts = run_engine(capture, NO_TIMEOUTS, POLICY)
    media = _media_flow(flows, other_recorder)
    assert (media.protocol, media.packets, media.start_ns) == ("rtp", FRAMES + 1, media_start)
    assert (
        media.media_from_src is False
    )  # the SETUP named the camera as the sender, not the punching receiver
    assert [a["rule"]["id"] for a in alerts] == ["device.new"] * 3  # type: ignore[index]
