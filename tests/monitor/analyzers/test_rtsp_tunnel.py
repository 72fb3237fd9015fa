"""RTSP tunnelled in HTTP (rtsp_tunnel.py): the base64 stream, the opening heads, and the handler's reading of
both connections. The rules' view (who pulled video, with which login) is in
tests/monitor/rules/test_rtsp_tunnel_rules.py."""

from __future__ import annotations

import base64

import pytest

from lab import payloads
from monitor.analyzers import AnalyzerError, http, rtsp_tunnel
from monitor.analyzers.rtsp_tunnel import Base64Stream, handle_rtsp_tunnel
from monitor.events import AppRequest, AppResponse, StreamRequest
from monitor.flows import Flow
from tests.monitor.analyzers.recording import RecordingContext, make_flow


def dispatch(ctx: RecordingContext, flow: Flow, from_src: bool, payload: bytes, ts: int = 0) -> None:
    """As the analysis offers a segment on tcp/80: to the flow's label's handler, else to HTTP's, which
    labels the flow (unless it handed it over to this reader)."""
    handler = handle_rtsp_tunnel if flow.protocol == rtsp_tunnel.PROTOCOL else http.handle_http
    if handler(ctx, flow, from_src, payload, ts) and flow.protocol is None:
        flow.protocol = "http"


PATH = "/Streaming/Channels/101"
URL = f"rtsp://10.0.0.5{PATH}"
DESCRIBE = payloads.rtsp_request("DESCRIBE", URL, 1, "Accept: application/sdp\r\n")
SETUP = payloads.rtsp_request("SETUP", URL + "/trackID=1", 2, "Transport: RTP/AVP/TCP;interleaved=0-1\r\n")


def test_base64_messages_each_padded_decode_wherever_the_segments_end() -> None:
    # Each request is encoded by itself (its padding ends it); the stream is cut at every byte.
    plain = [b"DESCRIBE x", b"SETUP yy", b"PLAY zzz\r\n"]
    text = b"".join(base64.b64encode(p) for p in plain)
    assert b"=" in text
    for cut in range(len(text) + 1):
        stream = Base64Stream()
        assert stream.feed(text[:cut]) + stream.feed(text[cut:]) == b"".join(plain), cut


def test_base64_line_ends_and_spaces_are_ignored() -> None:
    stream = Base64Stream()
    encoded = base64.encodebytes(DESCRIBE)  # MIME style: a line end every 76 characters
    assert b"\n" in encoded
    assert stream.feed(encoded[:30]) + stream.feed(b"\r\n " + encoded[30:]) == DESCRIBE


@pytest.mark.parametrize(
    ("junk", "replaced", "dropped"), [(b"<xml", 1, 0), (b"Q===", 0, 1), (b"\x00\xff..", 4, 0)]
)
def test_what_is_not_base64_is_read_as_servers_read_it(junk: bytes, replaced: int, dropped: int) -> None:
    # live555 reads a character base64 does not use as "A" and decodes on: so does this reader, and what
    # follows is still decoded (the RTSP parser skips the junk bytes to the next request).
    stream = Base64Stream()
    out = stream.feed(base64.b64encode(b"OPTIONS") + junk + base64.b64encode(DESCRIBE))
    assert out.startswith(b"OPTIONS") and out.endswith(DESCRIBE)
    assert (stream.replaced, stream.dropped) == (replaced, dropped)


def test_the_opening_heads() -> None:
    get = payloads.rtsp_tunnel_get(PATH, "abc")
    post = payloads.rtsp_tunnel_post(PATH, "abc")
    assert http.tunnel_head(get) == http.TunnelHead("GET", "abc", len(get))
    assert http.tunnel_head(b"\r\n" + post + b"QUJD") == http.TunnelHead("POST", "abc", len(post) + 2)
    # Header names in any case, the content type in any case.
    shouted = get.replace(b"x-sessioncookie", b"X-SessionCookie").upper()
    assert http.tunnel_head(shouted.replace(b"GET ", b"get ", 1))
    # The cookie is what servers go by: a GET or POST with it and no tunnel type opens a half (live555).
    assert http.tunnel_head(get.replace(b"Accept: application/x-rtsp-tunnelled\r\n", b""))
    assert http.tunnel_head(post.replace(b"Content-Type: application/x-rtsp-tunnelled\r\n", b""))
    # Not a tunnel: no cookie; another method; a head not yet whole; an answer.
    assert http.tunnel_head(get.replace(b"x-sessioncookie", b"x-other")) is None
    assert http.tunnel_head(get.replace(b"GET ", b"PUT ", 1)) is None
    assert http.tunnel_head(get[:-2]) is None
    assert http.tunnel_head(payloads.rtsp_tunnel_ok("Hikvision-Webs")) is None


def test_the_head_s_last_line_end_alone_in_a_segment_still_opens_the_tunnel() -> None:
    # HTTP holds the head without its final CRLF; the CRLF alone completes it: HTTP hands the connection
    # over with exactly what it held (a guess lost those two bytes, and the tunnel, before).
    ctx = RecordingContext()
    flow = make_flow("10.0.0.9", 40001, "10.0.0.5", 80)
    post = payloads.rtsp_tunnel_post(PATH, "c1")
    dispatch(ctx, flow, True, post[:-2], 0)
    assert flow.protocol == "http"  # a head start: HTTP's until it is whole and says it opens a tunnel
    dispatch(ctx, flow, True, post[-2:], 1)
    dispatch(ctx, flow, True, base64.b64encode(DESCRIBE), 2)
    assert flow.protocol == rtsp_tunnel.PROTOCOL
    assert [e.method for e in ctx.of(StreamRequest)] == ["DESCRIBE"]  # type: ignore[attr-defined]


def test_leading_nuls_before_a_request_are_skipped() -> None:
    # "AAAA" decodes to three NUL bytes, which live555 skips before a request: so does the parser here.
    ctx = RecordingContext()
    flow = make_flow("10.0.0.9", 40001, "10.0.0.5", 80)
    dispatch(ctx, flow, True, payloads.rtsp_tunnel_post(PATH, "c1") + b"AAAA" + base64.b64encode(DESCRIBE), 0)
    assert [e.method for e in ctx.of(StreamRequest)] == ["DESCRIBE"]  # type: ignore[attr-defined]


def test_http_hands_the_connection_over_at_a_tunnel_s_request_first_or_later() -> None:
    get = payloads.rtsp_tunnel_get(PATH, "abc")
    ctx = RecordingContext()
    first = make_flow("10.0.0.9", 40000, "10.0.0.5", 80)
    assert http.handle_http(ctx, first, True, get, 0) and first.protocol == rtsp_tunnel.PROTOCOL
    # Later in a kept-alive connection, after an HTTP request answered.
    later = make_flow("10.0.0.9", 40001, "10.0.0.5", 80)
    dispatch(ctx, later, True, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    dispatch(ctx, later, False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert later.protocol == "http"
    dispatch(ctx, later, True, get)
    assert later.protocol == rtsp_tunnel.PROTOCOL
    # Each request is still read as HTTP (the exploit and login rules see it), once.
    assert [(e.flow, e.method) for e in ctx.of(AppRequest)] == [
        (first, "GET"),
        (later, "OPTIONS"),
        (later, "GET"),
    ]  # type: ignore[attr-defined]
    # This reader is reached only by that handover.
    with pytest.raises(AnalyzerError):
        handle_rtsp_tunnel(ctx, make_flow("10.0.0.9", 40002, "10.0.0.5", 80), True, get, 0)


def _tunnel(ctx: RecordingContext, requests_text: bytes, answers: bytes) -> tuple[object, object]:
    """Both connections of one session from 10.0.0.9 to 10.0.0.5:80 (GET opened first)."""
    get_flow = make_flow("10.0.0.9", 40000, "10.0.0.5", 80)
    post_flow = make_flow("10.0.0.9", 40001, "10.0.0.5", 80)
    dispatch(ctx, get_flow, True, payloads.rtsp_tunnel_get(PATH, "c1"), 0)
    dispatch(ctx, get_flow, False, payloads.rtsp_tunnel_ok("Hikvision-Webs"), 1)
    dispatch(ctx, post_flow, True, payloads.rtsp_tunnel_post(PATH, "c1") + requests_text, 2)
    dispatch(ctx, get_flow, False, answers, 3)
    assert get_flow.protocol == post_flow.protocol == rtsp_tunnel.PROTOCOL
    return get_flow, post_flow


def test_requests_in_the_post_are_answered_in_the_get() -> None:
    ctx = RecordingContext()
    sdp = "Content-Type: application/sdp\r\n"
    answers = payloads.rtsp_response(1, "Hikvision-Webs", sdp, payloads.SDP_H264)
    answers += b"$\x00\x00\x04abcd" + payloads.rtsp_response(2, "Hikvision-Webs", "Session: 1\r\n")
    get_flow, post_flow = _tunnel(ctx, base64.b64encode(DESCRIBE) + base64.b64encode(SETUP), answers)
    rtsp_requests = [e for e in ctx.of(AppRequest) if e.protocol == "rtsp"]  # type: ignore[attr-defined]
    assert [(r.method, r.flow) for r in rtsp_requests] == [("DESCRIBE", post_flow), ("SETUP", post_flow)]  # type: ignore[attr-defined]
    # Numbered with the POST connection's HTTP requests (the POST itself is one): no two share a number.
    http_seqs = [e.seq for e in ctx.of(AppRequest) if e.flow is post_flow and e.protocol == "http"]  # type: ignore[attr-defined]
    assert len({*http_seqs, *(r.seq for r in rtsp_requests)}) == len(http_seqs) + 2  # type: ignore[attr-defined]
    rtsp_answers = [e for e in ctx.of(AppResponse) if e.protocol == "rtsp"]  # type: ignore[attr-defined]
    assert [(a.flow, a.status, a.request) for a in rtsp_answers] == [  # type: ignore[attr-defined]
        (get_flow, 200, rtsp_requests[0]),
        (get_flow, 200, rtsp_requests[1]),
    ]
    assert [e.url for e in ctx.of(StreamRequest)] == [URL, URL + "/trackID=1"]  # type: ignore[attr-defined]


def test_a_post_body_that_is_not_base64_is_still_read_as_http() -> None:
    ctx = RecordingContext()
    flow = make_flow("10.0.0.9", 40001, "10.0.0.5", 80)
    body = b"<?xml version='1.0'?><language>$(reboot)</language>"
    dispatch(ctx, flow, True, payloads.rtsp_tunnel_post(PATH, "c1") + body, 0)
    dispatch(ctx, flow, True, body * 200, 1)
    assert flow.protocol == rtsp_tunnel.PROTOCOL and not ctx.of(StreamRequest)
    (post,) = ctx.of(AppRequest)
    assert post.method == "POST" and post.body.startswith(body)  # type: ignore[attr-defined]


def test_an_answer_met_without_its_get_reports_nothing() -> None:
    # A mirror that saw the connection from its middle: the camera's side alone, RTSP answers and media.
    ctx = RecordingContext()
    flow = make_flow("10.0.0.9", 40000, "10.0.0.5", 80)
    flow.protocol = rtsp_tunnel.PROTOCOL
    handle_rtsp_tunnel(ctx, flow, False, payloads.rtsp_response(3, "Hikvision-Webs", "Session: 1\r\n"), 0)
    handle_rtsp_tunnel(ctx, flow, False, b"$\x00\x00\x04abcd" * 100, 1)
    assert not ctx.events
