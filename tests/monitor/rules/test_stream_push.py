"""A watched camera pushing its stream to an RTSP server (ANNOUNCE, SETUP with ``mode=record``, RECORD,
then interleaved RTP from the camera), as cameras' "RTSP push" to a media platform does, and as a
compromised camera could: ``stream.egress`` whatever the bitrate, and never ``stream.unauthorized_client``
(the camera is not pulling video from the server).

Before: a push to the Internet below the sustained-upload rate (0.5 Mbit/s) raised only
``egress.unexpected_destination``; a push to the site's recorder was reported as the camera "pulling video"
from the recorder.
"""

from __future__ import annotations

import pytest

from lab import payloads, personas
from monitor.analyzers.rtsp import RtspRequest, parse_transport
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from tests.enginerun import run_frames, vendors
from tests.monitor.rules.traffic import GW, HIK, MS, OFFICE, POLICY, RECORDER, T0, Host, alerts, of_rule

MEDIA_SERVER = Host("203.0.113.50", GW.mac)
RECORD_TRANSPORT = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"


def push(server: Host, frames: int = 40) -> list[tuple[int, bytes]]:
    """The camera announces its stream to ``server``, sets it up for recording and records: 40 interleaved RTP
    packets of 200 bytes, 1 ms apart (a low-rate substream)."""
    url = f"rtsp://{server.ip}/live/cam1"
    sdp = personas.SDP_H264.encode()
    announce = personas.rtsp_request(
        "ANNOUNCE", url, 1, f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n"
    )
    turns = [
        (announce + sdp, personas.rtsp_response(1, "ZLMediaKit")),
        (
            personas.rtsp_request("SETUP", url + "/trackID=1", 2, RECORD_TRANSPORT),
            personas.rtsp_response(2, "ZLMediaKit", RECORD_TRANSPORT + "Session: 9\r\n"),
        ),
        (personas.rtsp_request("RECORD", url, 3, "Session: 9\r\n"), personas.rtsp_response(3, "ZLMediaKit")),
    ]
    rtp = b"$\x00\x00\xc8" + b"\x80\x60" + bytes(198)
    turns += [(rtp, b"") for _ in range(frames)]
    return personas.tcp_exchange(T0, HIK.mac, server.mac, HIK.ip, server.ip, 41000, 554, turns)


def test_a_push_to_the_internet_is_video_leaving_whatever_its_bitrate() -> None:
    (a,) = of_rule(alerts(push(MEDIA_SERVER)), "stream.egress")
    message = str(a["message"])
    assert (
        "is pushing its video stream to the RTSP server 203.0.113.50:554, outside the site (RTSP ANNOUNCE)"
        in message
    )
    assert a["source"]["ip"] == HIK.ip and a["destination"]["ip"] == MEDIA_SERVER.ip  # type: ignore[index]
    assert a["network"]["protocol"] == "rtsp"  # type: ignore[index]


def test_a_push_to_the_recorder_is_neither_egress_nor_a_pull() -> None:
    records = alerts(push(RECORDER))
    assert not of_rule(records, "stream.egress")
    assert not of_rule(records, "stream.unauthorized_client")


def test_a_push_to_an_office_pc_goes_to_a_non_viewer() -> None:
    records = alerts(push(OFFICE))
    (a,) = of_rule(records, "stream.egress")
    assert "which is not an allowed viewer" in str(a["message"])
    assert not of_rule(records, "stream.unauthorized_client")


@pytest.mark.parametrize(
    ("mode", "records"),
    [
        ("record", True),
        ('"RECORD"', True),
        ("receive", True),
        ("play", False),
        ('"PLAY"', False),
        (None, False),
    ],
)
def test_the_transport_mode(mode: str | None, records: bool) -> None:
    text = "RTP/AVP;unicast;client_port=5000-5001" + (f";mode={mode}" if mode else "")
    (transport,) = parse_transport(text)
    assert transport.records is records


def test_which_requests_push() -> None:
    def request(method: str, extra: str = "") -> RtspRequest:
        return RtspRequest.parse(personas.rtsp_request(method, "rtsp://10.0.0.1/s", 1, extra))

    assert request("ANNOUNCE").pushes and request("record").pushes
    assert request("SETUP", RECORD_TRANSPORT).pushes
    assert not request("SETUP", "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n").pushes
    assert not request("DESCRIBE").pushes and not request("PLAY").pushes


def rtmp_publish(server: Host) -> list[tuple[int, bytes]]:
    """The camera connects to an RTMP platform, publishes with its stream key, and sends a little video."""
    c2 = bytes(1536)
    connect = payloads.rtmp_command(
        "connect", 1, {"app": "live2", "tcUrl": f"rtmp://{server.ip}/live2?auth=x"}
    )
    publish = payloads.rtmp_command("publish", 5, None, "abcd-efgh-s3cret", "live")
    video = payloads.rtmp_message(6, 9, bytes(300), stream_id=1)
    turns = [
        (payloads.rtmp_handshake(), payloads.rtmp_handshake() + c2),
        (c2 + connect, payloads.rtmp_command("_result", 1, None)),
        (payloads.rtmp_command("createStream", 2, None), payloads.rtmp_command("_result", 2, None, 1)),
        (publish, payloads.rtmp_command("onStatus", 0, None, {"code": "NetStream.Publish.Start"})),
    ]
    turns += [(video, b"") for _ in range(20)]
    return personas.tcp_exchange(T0, HIK.mac, server.mac, HIK.ip, server.ip, 41000, 1935, turns)


def test_an_rtmp_publish_to_the_internet_is_video_leaving_and_keeps_the_stream_key_secret() -> None:
    records = alerts(rtmp_publish(MEDIA_SERVER))
    (a,) = of_rule(records, "stream.egress")
    message = str(a["message"])
    assert "its video stream to the RTMP server 203.0.113.50:1935, outside the site (RTMP publish)" in message
    assert a["network"]["protocol"] == "rtmp"  # type: ignore[index]
    assert "s3cret" not in repr(records) and "auth=x" not in repr(records)


def test_an_rtmp_publish_to_the_recorder_is_not_egress() -> None:
    assert not of_rule(alerts(rtmp_publish(RECORDER)), "stream.egress")


def test_a_setup_with_mode_record_and_no_announce_is_a_pull() -> None:
    # live555 ignores mode= and streams after a SETUP with a Range: without an ANNOUNCE first, such a SETUP
    # pulls video like any other (before, it was taken for a push and the pull went unreported).
    transport = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\nRange: npt=0.000-\r\n"
    setup = personas.rtsp_request("SETUP", f"rtsp://{HIK.ip}/Streaming/Channels/101/trackID=1", 1, transport)
    answer = personas.rtsp_response(1, "Hikvision-Webs", transport + "Session: 7\r\n")
    frames = personas.tcp_exchange(T0, OFFICE.mac, HIK.mac, OFFICE.ip, HIK.ip, 40100, 554, [(setup, answer)])
    (a,) = of_rule(alerts(frames), "stream.unauthorized_client")
    assert a["event"]["outcome"] == "success"  # type: ignore[index]


def _rtmp_client_stream(key: str = "abcd-efgh-s3cret") -> bytes:
    connect = payloads.rtmp_command("connect", 1, {"app": "live2", "tcUrl": "rtmp://x/live2?auth=t0ken"})
    publish = payloads.rtmp_command("publish", 5, None, key, "live")
    return (
        payloads.rtmp_handshake()
        + bytes(1536)
        + connect
        + payloads.rtmp_command("createStream", 2, None)
        + publish
    )


def test_an_rtmp_publish_in_small_segments_is_read() -> None:
    # A budget counted in packets ran out before the publish in 64-byte segments: the connection is read until
    # the client says what it is for.
    data = _rtmp_client_stream()
    sends = [(T0 + i * MS, True, data[i : i + 64]) for i in range(0, len(data), 64)]
    sends.insert(1, (T0 + MS // 2, False, payloads.rtmp_handshake() + bytes(1536)))
    frames = personas.tcp_timeline(HIK.mac, GW.mac, HIK.ip, MEDIA_SERVER.ip, 41000, 1935, sends)
    assert of_rule(alerts(frames), "stream.egress")


def test_the_stream_key_is_not_in_the_evidence() -> None:
    stream, answer = _rtmp_client_stream(), payloads.rtmp_handshake() + bytes(1536)
    turns = [
        (stream[:1537], answer),
        (stream[1537:], b""),
    ]  # C0 C1, then (after S0 S1 S2) C2 and the commands
    frames = personas.tcp_exchange(T0, HIK.mac, GW.mac, HIK.ip, MEDIA_SERVER.ip, 41000, 1935, turns)
    parser = CaptureParser("frames", 65536)
    engine = Engine(POLICY, vendors(), EngineConfig())
    raised = [a for b in [*parser.feed(pcap_bytes(frames)), *parser.flush()] for a in engine.feed(b).alerts]
    (egress,) = [a for a in raised if a.rule.id == "stream.egress"]
    assert egress.evidence is not None and egress.evidence.packets
    blob = b"".join(p.frame for p in egress.evidence.packets)
    assert b"s3cret" not in blob and b"t0ken" not in blob


def test_rtp_over_tcp_starting_like_rtmp_stays_rtp() -> None:
    # An RFC 4571 frame of 768-1023 bytes starts with 0x03, as RTMP's C0: RTP is tried first, and its video to
    # the Internet is still stream.egress.
    sends = []
    for i in range(20):
        rtp = (
            bytes([0x80, 96])
            + i.to_bytes(2, "big")
            + (1000 + i * 3000).to_bytes(4, "big")
            + bytes([0, 0, 18, 52])
        )
        rtp += bytes(1023 - len(rtp))
        sends.append((T0 + i * 20 * MS, True, len(rtp).to_bytes(2, "big") + rtp))
    frames = personas.tcp_timeline(HIK.mac, GW.mac, HIK.ip, MEDIA_SERVER.ip, 41000, 5004, sends)
    _, flows, records = run_frames(frames, policy=POLICY)
    assert [f.protocol for f in flows if f.proto == 6] == ["rtp"]
    assert of_rule(records, "stream.egress")
