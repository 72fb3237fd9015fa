"""The HTTP stream parser stays in step with the connection: answers framed by the request they answer
(HEAD, CONNECT, RFC 9112 6.3), malformed messages read past instead of ending the connection, requests
hidden in a body some servers do not read, empty lines before a request line, and a first segment that
does not say yet whether it is HTTP or RTSP.

Each case follows a reproducer in which a request or an answer was lost: the messages are built from
the public descriptions of the requests (lab/attacks.py) and the smuggling shapes of RFC 9112 6.1/11.2.
"""

from __future__ import annotations

import pytest

from lab import attacks
from monitor.analyzers import AnalyzerError, rtsp
from monitor.analyzers import http as http_module
from monitor.analyzers.http import (
    KEEP_ANSWER,
    KEEP_BODY,
    MAX_FIELDS,
    HttpRequest,
    HttpResponse,
    HttpStreamParser,
    handle_http,
    looks_like,
)
from monitor.analyzers.logins import FAILURE
from monitor.events import AppRequest, AppResponse
from tests.monitor.analyzers.recording import RecordingContext, make_flow, run

HOST = "10.0.0.64"
EXPLOIT = attacks.http_request(
    "PUT",
    "/SDK/webLanguage",
    HOST,
    body=attacks.weblanguage_body("id>/webLib/x"),
    content_type="application/xml",
)
OK = attacks.http_response(200, b"<ok/>")


def _flow() -> object:
    return make_flow("10.0.0.9", 40000, HOST, 80)


def _requests(ctx: RecordingContext) -> list[AppRequest]:
    return [e for e in ctx.of(AppRequest) if isinstance(e, AppRequest)]


def _responses(ctx: RecordingContext) -> list[AppResponse]:
    return [e for e in ctx.of(AppResponse) if isinstance(e, AppResponse)]


def _exploit_seen(ctx: RecordingContext) -> bool:
    return any(
        r.target == "/SDK/webLanguage" and b"<language>$(id>/webLib/x)</language>" in r.body
        for r in _requests(ctx)
    )


# --- answers framed by what they answer ---------------------------------------------------------------------


def _head_401(body_length: int) -> bytes:
    # The length a GET would get, no body (RFC 9110 9.3.2).
    return (
        "HTTP/1.1 401 Unauthorized\r\nServer: App-webs/\r\nContent-Type: application/xml\r\n"
        f'WWW-Authenticate: Basic realm="DS-2CD2043G2"\r\nContent-Length: {body_length}\r\n\r\n'
    ).encode()


def test_password_guessing_with_head_requests_keeps_every_answer() -> None:
    flow = make_flow("203.0.113.7", 42000, HOST, 80)
    segments: list[tuple[bool, bytes]] = []
    for i in range(15):
        auth = attacks.basic_auth("admin", f"guess{i}")
        segments.append(
            (True, attacks.http_request("HEAD", "/ISAPI/Security/userCheck", HOST, authorization=auth))
        )
        segments.append((False, _head_401(96)))
    ctx = run(handle_http, flow, segments, "http")
    responses = _responses(ctx)
    assert [r.status for r in responses] == [401] * 15
    assert [r.auth for r in responses] == [FAILURE] * 15
    assert [r.request.seq if r.request else None for r in responses] == list(range(15))


def test_pipelined_head_get_head_answers_in_order() -> None:
    requests = b"".join(
        attacks.http_request(m, t, HOST) for m, t in (("HEAD", "/a"), ("GET", "/b"), ("head", "/c"))
    )
    answers = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  # HEAD: no body
        b"HTTP/1.1 100 Continue\r\n\r\n"  # interim: the next final answer is still the GET's
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"  # GET: its body
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 50\r\n\r\n"  # HEAD (any case): no body
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"  # unasked, 304: no body either
        b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"
    )
    for size in (1, 7, len(answers)):
        flow = _flow()
        segments = [(True, requests)] + [(False, answers[i : i + size]) for i in range(0, len(answers), size)]
        ctx = run(handle_http, flow, segments, "http")
        got = [(r.request.target if r.request else None, r.status, r.body) for r in _responses(ctx)]
        assert got == [
            ("/a", 200, b""),
            ("/b", 200, b"hello"),
            ("/c", 404, b""),
            (None, 304, b""),
            (None, 204, b""),
        ]


def test_connect_answered_2xx_is_a_tunnel() -> None:
    flow = _flow()
    tunnelled = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"  # inside the tunnel: not an answer
    segments = [
        (True, b"CONNECT cloud.example:443 HTTP/1.1\r\nHost: cloud.example:443\r\n\r\n"),
        (False, b"HTTP/1.1 200 Connection established\r\nContent-Length: 0\r\n\r\n" + tunnelled),
    ]
    ctx = run(handle_http, flow, segments, "http")
    assert [r.status for r in _responses(ctx)] == [200]
    # Refused, the connection stays HTTP.
    parser = HttpStreamParser()
    parser.expect_answer("CONNECT")
    msgs = parser.feed(
        b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert [m.status for m in msgs if isinstance(m, HttpResponse)] == [407, 200] and not parser.opaque


def test_methods_kept_for_the_answers_are_bounded() -> None:
    parser = HttpStreamParser()
    for _ in range(3 * http_module.MAX_ASKED):
        parser.expect_answer("HEAD")
    msgs = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n" * (http_module.MAX_ASKED + 1) + b"abc")
    assert len(msgs) == http_module.MAX_ASKED + 1  # MAX_ASKED answers to HEAD, then one with its body


# --- malformed messages: read past, not the end of the connection -------------------------------------------

_MALFORMED_FIRST = {
    "field_line_without_colon": b"GET / HTTP/1.1\r\nHost: h\r\nX-Junk\r\n\r\n",
    "control_character_in_a_value": b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n",
    "too_many_fields": b"GET / HTTP/1.1\r\n"
    + b"".join(b"X-%d: a\r\n" % i for i in range(MAX_FIELDS + 1))
    + b"\r\n",
    "conflicting_lengths": b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "continuation_first": b"GET / HTTP/1.1\r\n folded\r\nHost: h\r\n\r\n",
    "http09_line": b"GET /\r\n",
    "garbage_line": b"\x16\x03\x01 not http at all\r\n",
    "te_chunked_and_cl_0": b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    "get_whose_body_is_the_request": b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
    % len(EXPLOIT),
    "bad_chunk_size": b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    "line_longer_than_a_head": b"GET /" + b"a" * (http_module.MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n",
    "head_longer_than_max_head": b"GET / HTTP/1.1\r\n"
    + b"X-Filler: aaaa\r\n" * (http_module.MAX_HEAD // 16 + 1),
}


@pytest.mark.parametrize("name", sorted(_MALFORMED_FIRST))
def test_a_malformed_message_does_not_hide_the_next_request(name: str) -> None:
    flow = _flow()
    ctx = run(
        handle_http, flow, [(True, _MALFORMED_FIRST[name]), (False, OK), (True, EXPLOIT), (False, OK)], "http"
    )
    assert _exploit_seen(ctx), name
    # The exploit's answer pairs with it.
    assert any(r.request is not None and r.request.target == "/SDK/webLanguage" for r in _responses(ctx))


@pytest.mark.parametrize("name", sorted(_MALFORMED_FIRST))
def test_resynchronising_does_not_depend_on_segmentation(name: str) -> None:
    data = _MALFORMED_FIRST[name] + EXPLOIT + b"GET /last HTTP/1.1\r\n\r\n"
    whole = HttpStreamParser(keep_body=KEEP_BODY).feed(data)
    assert [m.target for m in whole if isinstance(m, HttpRequest)][-2:] == ["/SDK/webLanguage", "/last"]
    sizes = (1, 2, 3, 5, 64, 1448) if len(data) < 4096 else (1448, 4000)
    for size in sizes:
        parser = HttpStreamParser(keep_body=KEEP_BODY)
        pieces = [m for i in range(0, len(data), size) for m in parser.feed(data[i : i + size])]
        assert pieces == whole, (name, size)
        assert parser.buffered <= parser.max_buffer + KEEP_BODY


def test_a_malformed_request_is_read_as_a_lenient_server_reads_it() -> None:
    # An embedded server that ignores lines it does not know (thttpd, mini_httpd) runs this exploit.
    flow = _flow()
    bad = EXPLOIT.replace(b"User-Agent", b"X-Junk\r\nX-Ctl: a\x7fb\r\nUser-Agent")
    ctx = run(handle_http, flow, [(True, bad), (False, OK)], "http")
    assert _exploit_seen(ctx)
    (req,) = _requests(ctx)
    assert req.method == "PUT"


def test_a_request_in_a_body_servers_may_not_read() -> None:
    hidden = attacks.http_request("GET", "/System/configurationFile?auth=YWRtaW46MTEK", HOST)
    chunked_then_request = b"0\r\n\r\n" + hidden
    cases = {
        # Transfer-Encoding wins (RFC 9112 6.1): a server that follows it reads the request after the chunks.
        "cl_te": b"POST /x HTTP/1.1\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s"
        % (len(chunked_then_request), chunked_then_request),
        # A server that takes Content-Length (4) reads the request the chunk holds.
        "te_cl": b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden),
        # Many embedded servers read no body to GET (a "CL.0" desync).
        "get_body": b"GET / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(hidden), hidden),
        # A coding list naming chunked with Content-Length.
        "te_list_cl": b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n" + hidden,
    }
    for name, data in cases.items():
        for size in (1, 9, len(data)):
            parser = HttpStreamParser(keep_body=KEEP_BODY)
            msgs = [m for i in range(0, len(data), size) for m in parser.feed(data[i : i + size])]
            targets = [m.target for m in msgs if isinstance(m, HttpRequest)]
            assert "/System/configurationFile?auth=YWRtaW46MTEK" in targets, (name, size, targets)


def test_both_lengths_give_the_matchers_the_decoded_chunks() -> None:
    # A server that follows Transfer-Encoding joins the chunks: the command split across two must be seen.
    body = attacks.weblanguage_body("id>/webLib/x")
    cut = body.index(b"$") + 1
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (cut, body[:cut], len(body) - cut, body[cut:])
    data = (
        b"PUT /SDK/webLanguage HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: %d\r\n\r\n" % len(chunks) + chunks
    )
    (msg,) = HttpStreamParser(keep_body=KEEP_BODY).feed(data)
    assert isinstance(msg, HttpRequest) and msg.body == body


def test_an_ordinary_post_body_is_not_read_for_requests() -> None:
    # Every server reads a POST's Content-Length: a request line inside is data.
    inner = attacks.http_request("GET", "/inner", HOST)
    data = attacks.http_request("POST", "/upload", HOST, body=inner) + b"GET /after HTTP/1.1\r\n\r\n"
    msgs = HttpStreamParser(keep_body=KEEP_BODY).feed(data)
    assert [m.target for m in msgs if isinstance(m, HttpRequest)] == ["/upload", "/after"]
    assert msgs[0].body == inner


def test_garbage_is_dropped_without_holding_it() -> None:
    parser = HttpStreamParser(max_buffer=1024)
    for _ in range(50):
        parser.feed(b"\x00" * 700)  # no line end: nothing a start line can begin with
        assert parser.buffered == 0
    for _ in range(50):
        parser.feed(b"GET /" + b"a" * 700)  # a line longer than a head may be
        assert parser.buffered <= 1024
    (msg,) = parser.feed(b"\r\nGET /ok HTTP/1.1\r\n\r\n")
    assert isinstance(msg, HttpRequest) and msg.target == "/ok" and parser.ignored_bytes > 0


def test_a_malformed_answer_still_pairs() -> None:
    flow = _flow()
    auth = attacks.basic_auth("admin", "x")
    bad_401 = b"HTTP/1.1 401 Unauthorized\r\nX-Junk\r\nContent-Length: 2\r\n\r\nno"
    segments = [
        (True, attacks.http_request("GET", "/a", HOST, authorization=auth)),
        (False, bad_401),
        (True, attacks.http_request("GET", "/b", HOST)),
        (False, attacks.http_response(200, b"ok")),
    ]
    ctx = run(handle_http, flow, segments, "http")
    got = [(r.request.target if r.request else None, r.status, r.auth) for r in _responses(ctx)]
    assert got == [("/a", 401, FAILURE), ("/b", 200, None)]
    assert KEEP_ANSWER >= 2


# --- the first segment: empty lines first, cut before it says what it is ------------------------------------


def _unlabelled(segments: list[bytes], port: int = 80) -> tuple[RecordingContext, object]:
    """Feed the client's segments as the analysis does on an unlabelled flow: label on True, skip on error."""
    flow = make_flow("10.0.0.9", 40000, HOST, port)
    ctx = RecordingContext()
    for i, seg in enumerate(segments):
        try:
            if handle_http(ctx, flow, True, seg, i) and flow.protocol is None:
                flow.protocol = "http"
        except AnalyzerError:
            pass
    return ctx, flow


def test_empty_lines_before_the_first_request_line() -> None:
    assert looks_like(b"\r\n" + EXPLOIT) and looks_like(b"\n\r\n\r\n" + EXPLOIT)
    assert looks_like(b"\r\n" * 100 + b"HTTP/1.1 200 OK\r\n\r\n")
    assert not looks_like(b"\r\n") and not looks_like(b"\r\nRTSP/1.0 200 OK\r\n")
    for segments in (
        [b"\r\n" + EXPLOIT],
        [b"\r\n\r\n", EXPLOIT],
        [b"\r\nPU", EXPLOIT[2:]],
        [b"\r\n" * 30 + EXPLOIT],
    ):
        ctx, flow = _unlabelled(segments)
        assert _exploit_seen(ctx) and getattr(flow, "protocol", None) == "http", segments[0][:8]


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 15])
def test_a_request_cut_after_a_few_bytes_at_the_start(cut: int) -> None:
    ctx, _ = _unlabelled([EXPLOIT[:cut], EXPLOIT[cut:]])
    assert _exploit_seen(ctx)


def test_a_stale_start_does_not_prefix_the_next_request() -> None:
    ctx, _ = _unlabelled([b"GE", b"xyz\r\n", EXPLOIT])
    assert [r.method for r in _requests(ctx)] == ["PUT"]


def test_options_cut_before_its_version_is_not_claimed() -> None:
    assert not looks_like(b"OPTIONS rtsp://192.168.1.64/Stre")
    assert not looks_like(b"OPTIONS / HTTP/1.1"[:12])
    assert looks_like(b"OPTIONS / HTTP/1.1\r\n") and not looks_like(b"OPTIONS rtsp://h/ RTSP/1.0\r\n")
    assert looks_like(b"GET /very/long/path")  # a method RTSP does not have still says enough
    # On an HTTP port the line is kept until its version shows.
    ctx, flow = _unlabelled([b"OPTIONS /ISAPI/Sys", b"tem HTTP/1.1\r\nHost: h\r\n\r\n"])
    assert [r.method for r in _requests(ctx)] == ["OPTIONS"] and getattr(flow, "protocol", None) == "http"
    ctx, flow = _unlabelled([b"OPTIONS rtsp://h/Stre", b"aming RTSP/1.0\r\nCSeq: 1\r\n\r\n"])
    assert _requests(ctx) == [] and getattr(flow, "protocol", None) is None


def test_methods_shared_with_rtsp_are_the_ones_listed() -> None:
    http_methods = {m.rstrip(b" ") for m in http_module._LOOKS_LIKE_REQUEST}
    shared = {m.rstrip(b" ") for m in http_module._SHARED_WITH_RTSP}
    assert shared == http_methods & set(rtsp._METHODS)
