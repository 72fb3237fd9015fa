"""``stream.unauthorized_client`` says what happened: a client that got its stream pulled video (reported at
the answer), one that only got 401s was refused and got no video (reported after the hold, with its count)."""

from __future__ import annotations

from lab import attacks, personas
from tests.monitor.rules.traffic import HIK, MS, OFFICE, T0, alerts, exchange, of_rule

RULE = "stream.unauthorized_client"
URL = f"rtsp://{HIK.ip}/Streaming/Channels/101"
REFUSED = (
    b'RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm="IP Camera", nonce="n"\r\n\r\n'
)


def test_a_client_served_pulled_video() -> None:
    turns = [
        (
            personas.rtsp_request("DESCRIBE", URL, 1),
            personas.rtsp_response(1, "Hik", "Content-Type: application/sdp\r\n", personas.SDP_H264),
        )
    ]
    (a,) = of_rule(alerts(exchange(T0, OFFICE, HIK, 40000, 554, turns)), RULE)
    assert "pulled video" in str(a["message"]) and a["event"]["outcome"] == "success"  # type: ignore[index]
    assert a["@timestamp"] == "2023-11-14T22:13:20.004Z"  # at the camera's answer
    # The request answered is the one asked: said once ("... and was served", not "... served (DESCRIBE)").
    assert f"it asked with RTSP DESCRIBE {URL} and was served:" in str(a["message"])


def test_a_client_that_only_got_401s_did_not_pull_video() -> None:
    frames = []
    for i in range(3):
        auth = f"Authorization: {attacks.digest_auth_header('admin', 'IP Camera', 'n', URL)}\r\n" if i else ""
        frames += exchange(
            T0 + i * 100 * MS,
            OFFICE,
            HIK,
            40000 + i,
            554,
            [(personas.rtsp_request("DESCRIBE", URL, 1, auth), REFUSED)],
        )
    (a,) = of_rule(alerts(frames), RULE)
    message = str(a["message"])
    assert "pulled video" not in message and "refused each time (401)" in message and "3 requests" in message
    assert a["event"]["outcome"] == "failure" and a["@timestamp"] == "2023-11-14T22:13:25.003Z"  # type: ignore[index]


def test_refused_then_served_within_the_hold_is_a_pull() -> None:
    frames = exchange(T0, OFFICE, HIK, 40000, 554, [(personas.rtsp_request("DESCRIBE", URL, 1), REFUSED)])
    auth = f"Authorization: {attacks.digest_auth_header('admin', 'IP Camera', 'n', URL)}\r\n"
    frames += exchange(
        T0 + 500 * MS,
        OFFICE,
        HIK,
        40001,
        554,
        [(personas.rtsp_request("DESCRIBE", URL, 1, auth), personas.rtsp_response(1, "Hik"))],
    )
    (a,) = of_rule(alerts(frames), RULE)
    assert "pulled video" in str(a["message"]) and a["event"]["outcome"] == "success"  # type: ignore[index]


def test_no_answer_seen() -> None:
    frames = exchange(T0, OFFICE, HIK, 40000, 554, [(personas.rtsp_request("SETUP", URL, 1), b"")])
    (a,) = of_rule(alerts(frames), RULE)
    assert "answer was not seen" in str(a["message"]) and a["event"]["outcome"] == "unknown"  # type: ignore[index]


def test_a_malformed_field_line_does_not_hide_the_pull() -> None:
    # A first OPTIONS with a header line without a colon (junk a camera's server ignores), then the pull: the
    # connection is still read, as lenient servers read it.
    turns = [
        (
            personas.rtsp_request("OPTIONS", URL, 1, "this line has no colon\r\n"),
            personas.rtsp_response(1, "Hik", "Public: OPTIONS, DESCRIBE, SETUP, PLAY\r\n"),
        ),
        (
            personas.rtsp_request("DESCRIBE", URL, 2),
            personas.rtsp_response(2, "Hik", "Content-Type: application/sdp\r\n", personas.SDP_H264),
        ),
    ]
    (a,) = of_rule(alerts(exchange(T0, OFFICE, HIK, 40000, 554, turns)), RULE)
    assert "pulled video" in str(a["message"])
