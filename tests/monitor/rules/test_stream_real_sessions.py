"""Video-stream rules on sessions as clients, cameras and mirrors really produce them (a review of
``stream.unauthorized_client`` and ``stream.egress``): each test failed before its fix.

- a password typed after a 401 (a pull 6 s after a refusal) was reported as "refused, got no video", and the
  pull itself was held back as a repeat;
- a request cut before its version in the connection's first segment was never read;
- a session met mid-stream (the agent restarted while a client was pulling) was never reported;
- multicast RTP, which the policy says is not egress, raised "its video is leaving";
- a SETUP asking for a third destination was judged on the request: refused, or answered with the camera's
  own destination, it still raised "told ... to send its video to" an address no packet went to;
- RTSP/2.0 and a lower-case method were not read;
- video to an on-site non-viewer was called "outside the site".
"""

from __future__ import annotations

from lab import attacks, personas, synth
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from tests.enginerun import vendors
from tests.monitor.rules.traffic import (
    ATTACKER,
    DAHUA,
    HIK,
    MS,
    NS,
    OFFICE,
    POLICY,
    RECORDER,
    T0,
    Host,
    alerts,
    exchange,
    of_rule,
)

URL = f"rtsp://{HIK.ip}/Streaming/Channels/101"
PULL = "stream.unauthorized_client"
EGRESS = "stream.egress"
REFUSED = (
    b'RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm="IP Camera", nonce="n"\r\n\r\n'
)
DESCRIBE = personas.rtsp_request("DESCRIBE", URL, 1, "Accept: application/sdp\r\n")
DESCRIBED = personas.rtsp_response(1, "Hik", "Content-Type: application/sdp\r\n", personas.SDP_H264)


def _outcomes(records: list[dict[str, object]], rule: str = PULL) -> list[str]:
    return [r["event"]["outcome"] for r in of_rule(records, rule)]  # type: ignore[index]


def test_a_pull_after_a_refusal_is_reported_as_a_pull() -> None:
    auth = f"Authorization: {attacks.digest_auth_header('admin', 'IP Camera', 'n', URL)}\r\n"
    frames = exchange(T0, ATTACKER, HIK, 40000, 554, [(DESCRIBE, REFUSED)])
    # The user types the password after the 5 s the rule waits: a new connection, served.
    frames += exchange(
        T0 + 6 * NS, ATTACKER, HIK, 40001, 554, [(DESCRIBE[:-2] + auth.encode() + b"\r\n", DESCRIBED)]
    )
    # And refused again later: nothing new to say about this client.
    frames += exchange(T0 + 20 * NS, ATTACKER, HIK, 40002, 554, [(DESCRIBE, REFUSED)])
    records = alerts(frames)
    assert _outcomes(records) == ["failure", "success"]
    assert "pulled video" in str(of_rule(records, PULL)[1]["message"])


def test_a_first_request_cut_before_its_version_is_read() -> None:
    sends = [(T0, True, DESCRIBE[:20]), (T0 + MS, True, DESCRIBE[20:]), (T0 + 2 * MS, False, DESCRIBED)]
    frames = personas.tcp_timeline(ATTACKER.mac, HIK.mac, ATTACKER.ip, HIK.ip, 40000, 554, sends)
    assert _outcomes(alerts(frames)) == ["success"]


def _midstream(client: Host, seconds: int = 30, per_second: int = 34) -> list[tuple[int, bytes]]:
    """An interleaved pull already running when the capture starts: ``per_second`` RTP packets of 1.4 kB
    (34: 384 kbit/s) in the camera's TCP connection, and the client's keep-alive in the session every 20 s."""
    ack, psh = synth.TCP_ACK, synth.TCP_PSH
    out: list[tuple[int, bytes]] = []
    seq_c, seq_s, n = 100_000, 900_000, 0
    for s in range(seconds):
        for i in range(per_second):
            rtp = (
                bytes([0x80, 96])
                + (n & 0xFFFF).to_bytes(2, "big")
                + (n * 3000).to_bytes(4, "big")
                + bytes(1392)
            )
            data = b"$\x00" + len(rtp).to_bytes(2, "big") + rtp
            t = T0 + s * NS + i * (NS // per_second)
            out.append((t, synth.tcp4_frame(HIK.mac, client.mac, HIK.ip, client.ip, 554, 40000, data,
                                             flags=ack | psh, seq=seq_s, ack=seq_c)))  # fmt: skip
            seq_s, n = seq_s + len(data), n + 1
        if s % 20 == 5:
            keepalive = personas.rtsp_request("GET_PARAMETER", URL, 10 + s, "Session: 1234\r\n")
            answer = personas.rtsp_response(10 + s, "Hik", "Session: 1234\r\n")
            t = T0 + s * NS + 1
            out.append((t, synth.tcp4_frame(client.mac, HIK.mac, client.ip, HIK.ip, 40000, 554, keepalive,
                                            flags=ack | psh, seq=seq_c, ack=seq_s)))  # fmt: skip
            seq_c += len(keepalive)
            out.append((t + 1, synth.tcp4_frame(HIK.mac, client.mac, HIK.ip, client.ip, 554, 40000, answer,
                                                flags=ack | psh, seq=seq_s, ack=seq_c)))  # fmt: skip
            seq_s += len(answer)
    return out


def test_a_pull_met_mid_session_is_reported_by_its_keepalive() -> None:
    records = alerts(_midstream(ATTACKER))
    (a,) = of_rule(records, PULL)
    assert "was already pulling video" in str(a["message"]) and a["event"]["outcome"] == "success"  # type: ignore[index]
    assert a["@timestamp"] == "2023-11-14T22:13:25.000Z"  # its first keep-alive's answer
    # The recorder's own running pull is its business.
    assert not of_rule(alerts(_midstream(RECORDER)), PULL)


def _rtp(src: Host, dst_ip: str, dst_mac: str, n: int = 60) -> list[tuple[int, bytes]]:
    template = synth.RtpTemplate(src.mac, dst_mac, src.ip, dst_ip, 40002, 5000, 1200, 0x1234)
    return [(T0 + i * 10 * MS, template.frame(1 + i, i * 3000)) for i in range(n)]


def test_multicast_video_is_not_egress() -> None:
    assert not of_rule(alerts(_rtp(DAHUA, "239.1.1.2", "01:00:5e:01:01:02")), EGRESS)
    # The control: the same RTP to the Internet is.
    assert of_rule(alerts(_rtp(DAHUA, "198.51.100.9", "02:00:00:00:00:01")), EGRESS)


def _setup(answer: bytes, client: Host = RECORDER) -> list[tuple[int, bytes]]:
    transport = "Transport: RTP/AVP;unicast;destination=203.0.113.9;client_port=6000-6001\r\n"
    request = personas.rtsp_request("SETUP", URL + "/trackID=1", 1, transport)
    return exchange(T0, client, HIK, 40000, 554, [(request, answer)])


def test_a_setup_to_a_third_address_is_judged_by_the_camera_s_answer() -> None:
    unsupported = b"RTSP/1.0 461 Unsupported Transport\r\nCSeq: 1\r\n\r\n"
    assert not of_rule(alerts(_setup(unsupported)), EGRESS)
    own = personas.rtsp_response(
        1, "LIVE555", f"Transport: RTP/AVP;unicast;destination={RECORDER.ip};client_port=6000-6001\r\n"
    )
    assert not of_rule(alerts(_setup(own)), EGRESS)  # the camera streams to the recorder, not 203.0.113.9
    granted = personas.rtsp_response(1, "Hik", "Session: 5\r\n")  # a 2xx without a Transport: granted
    (a,) = of_rule(alerts(_setup(granted)), EGRESS)
    assert "to send its video to 203.0.113.9, outside the site:" in str(a["message"])
    (unseen,) = of_rule(alerts(_setup(b"")), EGRESS)
    assert "(the camera's answer was not seen)" in str(unseen["message"])


def test_rtsp_2_and_a_lower_case_method_are_read() -> None:
    v2 = DESCRIBE.replace(b"RTSP/1.0", b"RTSP/2.0"), DESCRIBED.replace(b"RTSP/1.0", b"RTSP/2.0")
    assert _outcomes(alerts(exchange(T0, ATTACKER, HIK, 40000, 554, [v2]))) == ["success"]
    lower = DESCRIBE.replace(b"DESCRIBE", b"describe", 1), DESCRIBED
    assert _outcomes(alerts(exchange(T0, ATTACKER, HIK, 40000, 554, [lower]))) == ["success"]


def test_video_to_an_on_site_non_viewer_is_not_called_a_leak() -> None:
    (a,) = of_rule(alerts(_rtp(HIK, OFFICE.ip, OFFICE.mac)), EGRESS)
    message = str(a["message"])
    assert "which is not an allowed viewer" in message and "outside the site" not in message


def test_video_to_an_on_site_non_viewer_is_judged_while_it_runs() -> None:
    # 2 Mbit/s interleaved to an office PC: reported while the pull runs (it may last for days), as video to
    # the Internet is, not only when the connection ends.
    frames = sorted(_midstream(OFFICE, seconds=30, per_second=180))
    engine = Engine(POLICY, vendors(), EngineConfig())
    parser = CaptureParser("frames", 256)
    running = [
        a.rule.id for b in [*parser.feed(pcap_bytes(frames)), *parser.flush()] for a in engine.feed(b).alerts
    ]
    assert EGRESS in running


def test_a_web_ui_download_to_an_office_pc_is_not_video() -> None:
    # A browser on the camera's web UI downloads the 6 MB plugin in 3 s, then polls on the same connection:
    # bulk management traffic, not video, though its average rate is a camera's.
    sends = [(T0 + 10 * MS, True, attacks.http_request("GET", "/codebase/WebComponentsKit.exe", HIK.ip))]
    size = 6_000_000
    head = attacks.http_response(200, content_type="application/octet-stream")
    sends.append(
        (T0 + 20 * MS, False, head.replace(b"Content-Length: 0", f"Content-Length: {size}".encode()))
    )
    sends += [(T0 + 21 * MS + k * 700_000, False, bytes(1400)) for k in range(size // 1400 + 1)]
    for k in range(1, 10):
        t = T0 + 4 * NS + k * 2 * NS
        sends.append((t, True, attacks.http_request("GET", "/ISAPI/System/status", HIK.ip)))
        sends.append((t + 5 * MS, False, attacks.http_response(200, b"<DeviceStatus/>")))
    frames = personas.tcp_timeline(OFFICE.mac, HIK.mac, OFFICE.ip, HIK.ip, 51500, 80, sends)
    assert not of_rule(alerts(frames), EGRESS)


def test_mjpeg_over_http_to_the_internet_is_video_leaving() -> None:
    mjpeg = attacks.http_response(200, content_type="multipart/x-mixed-replace; boundary=frame")
    request = attacks.http_request("GET", "/ISAPI/Streaming/channels/102/httpPreview", HIK.ip)
    frames = exchange(T0, ATTACKER, HIK, 40000, 80, [(request, mjpeg + b"--frame\r\n" + bytes(1000))])
    (a,) = of_rule(alerts(frames), EGRESS)
    assert "video over HTTP" in str(a["message"])
