"""The HTTP binding's requests and answers (AppRequest/AppResponse): pairing, body starts, logins, and
what the answers mean; the stream parser's ``keep_body``.

A real capture first (nDPI's ``http_auth.pcap``: a browser's Basic login refused with a chunked 401), then
hand-built exchanges of the camera cases the corpus lacks (Digest challenge-response, ONVIF faults, Dahua's
two-step JSON login), built from their public descriptions (lab/attacks.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import attacks
from monitor.analyzers.http import (
    KEEP_BODY,
    LOGIN_EXTRA_PACKETS,
    MAX_PENDING,
    HttpRequest,
    HttpStreamParser,
    handle_http,
)
from monitor.analyzers.logins import CHALLENGE, FAILURE, SUCCESS
from monitor.events import AppRequest, AppResponse
from tests.monitor.analyzers.payloads import tcp_streams
from tests.monitor.analyzers.recording import make_flow, run

CORPUS = Path(__file__).parents[2] / "data" / "corpus" / "pcaps"


def _exchange(*turns: tuple[bytes, bytes]) -> tuple[list[AppRequest], list[AppResponse]]:
    flow = make_flow("10.0.0.9", 40000, "10.0.0.64", 80)
    segments = [seg for req, resp in turns for seg in ((True, req), (False, resp))]
    ctx = run(handle_http, flow, segments, "http")
    return ctx.of(AppRequest), ctx.of(AppResponse)  # type: ignore[return-value]


def test_a_refused_basic_login_in_a_real_capture() -> None:
    streams = tcp_streams(CORPUS / "ndpi" / "http_auth.pcap", 80)
    (client_key, request), (_, response) = sorted(streams.items(), key=lambda kv: kv[0][1] != 54337)
    assert client_key[3] == 80
    flow = make_flow(client_key[0], client_key[1], client_key[2], 80)
    segments = [(True, request), *((False, response[i : i + 1448]) for i in range(0, len(response), 1448))]
    ctx = run(handle_http, flow, segments, "http")
    (req,) = ctx.of(AppRequest)
    (resp,) = ctx.of(AppResponse)
    assert isinstance(req, AppRequest) and isinstance(resp, AppResponse)
    assert req.login is not None and req.login.scheme == "Basic" and req.login.account == "test"
    assert req.login.default is None
    assert resp.status == 401 and resp.request == req and resp.auth == FAILURE
    assert resp.body.startswith(b"<!DOCTYPE html")  # chunked, decoded
    assert "fail2" not in repr(req) + repr(resp)


def test_digest_challenge_then_success_is_no_failure() -> None:
    """A recorder's normal login: a 401 asking for credentials, then Digest accepted."""
    host = "10.0.0.64"
    challenge = attacks.http_response(
        401, b"", extra='WWW-Authenticate: Digest realm="Hikvision", nonce="abc", qop="auth"\r\n'
    )
    reqs, resps = _exchange(
        (attacks.http_request("GET", "/ISAPI/System/deviceInfo", host), challenge),
        (
            attacks.http_request(
                "GET",
                "/ISAPI/System/deviceInfo",
                host,
                authorization=attacks.digest_auth_header(
                    "admin", "Hikvision", "abc", "/ISAPI/System/deviceInfo"
                ),
            ),
            attacks.http_response(200, b"<DeviceInfo/>", content_type="application/xml"),
        ),
    )
    assert [r.auth for r in resps] == [CHALLENGE, SUCCESS]
    assert [r.request for r in resps] == reqs and [r.seq for r in reqs] == [0, 1]
    assert reqs[1].login is not None and reqs[1].login.account == "admin"


def test_stale_nonce_is_a_challenge() -> None:
    host = "10.0.0.64"
    auth = attacks.digest_auth_header("admin", "Hikvision", "old", "/")
    stale = attacks.http_response(
        401, extra='WWW-Authenticate: Digest realm="Hikvision", nonce="new", stale=true\r\n'
    )
    _, resps = _exchange((attacks.http_request("GET", "/", host, authorization=auth), stale))
    assert resps[0].auth == CHALLENGE


def test_onvif_fault_is_a_failure_and_an_answer_a_success() -> None:
    host = "10.0.0.64"
    header = attacks.ws_username_token("admin", "wrong", b"n" * 16, "2024-05-01T10:00:00Z")
    fault = attacks.http_response(400, attacks.ONVIF_NOT_AUTHORIZED, content_type="application/soap+xml")
    ok = attacks.http_response(
        200, b"<s:Envelope><s:Body/></s:Envelope>", content_type="application/soap+xml"
    )
    reqs, resps = _exchange(
        (attacks.onvif_request(host, header), fault), (attacks.onvif_request(host, header), ok)
    )
    assert reqs[0].login is not None and reqs[0].login.scheme == "WS-UsernameToken"
    assert [r.auth for r in resps] == [FAILURE, SUCCESS]
    # Without a token (GetSystemDateAndTime is open to anyone), no login is involved.
    _, anon = _exchange((attacks.onvif_request(host, action="GetSystemDateAndTime"), ok))
    assert anon[0].auth is None and anon[0].request is not None and anon[0].request.login is None


def test_dahua_two_step_login() -> None:
    host = "10.0.0.65"
    first = attacks.rpc_login_body("admin")
    step1 = {"error": {"code": 268632079}, "params": {"random": "1", "realm": "Login to x"}, "result": False}
    second = attacks.rpc_login_body(
        "admin", password="0" * 32, passwordType="Default", authorityType="Default"
    )
    post = "/RPC2_Login"
    ctype = "application/x-www-form-urlencoded"
    reqs, resps = _exchange(
        (
            attacks.http_request("POST", post, host, body=first, content_type=ctype),
            attacks.http_response(200, json.dumps(step1).encode(), content_type="application/json"),
        ),
        (
            attacks.http_request("POST", post, host, body=second, content_type=ctype),
            attacks.http_response(
                200, b'{"error":{"code":268632071},"result":false}', content_type="application/json"
            ),
        ),
    )
    assert [r.auth for r in resps] == [CHALLENGE, FAILURE]
    assert reqs[0].param("method") == "global.login" and reqs[0].param("clientType") == "Web3.0"
    assert reqs[1].param("password") == "given" and "0" * 32 not in repr(reqs[1])


def test_bodies_split_across_segments_and_chunked() -> None:
    body = attacks.weblanguage_body("id")
    request = attacks.http_request("PUT", "/SDK/webLanguage", "x", body=body, content_type="text/xml")
    head, _, rest = request.partition(b"\r\n\r\n")
    parser = HttpStreamParser(keep_body=KEEP_BODY)
    assert parser.feed(head + b"\r\n\r\n") == []  # held until its body is in
    (msg,) = parser.feed(rest[:10]) + parser.feed(rest[10:])
    assert isinstance(msg, HttpRequest) and msg.body == body
    chunked = (
        b"PUT /SDK/webLanguage HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:7], body[7:]))
        + b"0\r\n\r\n"
    )
    (msg2,) = HttpStreamParser(keep_body=KEEP_BODY).feed(chunked)
    assert isinstance(msg2, HttpRequest) and msg2.body == body
    # Only the start of a big body is kept, and the message comes once that much arrived.
    big = attacks.http_request("POST", "/upload", "x", body=b"a" * (3 * KEEP_BODY))
    (msg3,) = HttpStreamParser(keep_body=KEEP_BODY).feed(big[: len(big) - KEEP_BODY])
    assert len(msg3.body) == KEEP_BODY
    # Without keep_body, heads come at once and nothing is kept (the default).
    (msg4,) = HttpStreamParser().feed(head + b"\r\n\r\n")
    assert msg4.body == b""


def test_garbage_after_a_held_head_still_gives_the_message() -> None:
    bad = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nZZZ\r\n"
    parser = HttpStreamParser(keep_body=KEEP_BODY)
    (msg,) = parser.feed(bad)
    assert msg.body == b"abcd" and parser.error is not None
    # The bad size line ends the message; the parser goes on with the next one.
    (nxt,) = parser.feed(b"GET /next HTTP/1.1\r\n\r\n")
    assert isinstance(nxt, HttpRequest) and nxt.target == "/next"


def test_login_attempts_raise_the_flows_budget_by_a_fixed_amount() -> None:
    flow = make_flow("10.0.0.9", 40000, "10.0.0.64", 80)
    flow.inspect_left = 3
    auth = attacks.basic_auth("admin", "guess")
    segments = [
        (True, attacks.http_request("GET", "/", "x", authorization=auth)),
        (False, attacks.http_response(401)),
    ]
    run(handle_http, flow, segments, "http")
    # One more for the request with credentials, one more for the refusal: added, so the packets read do
    # not depend on where batches end.
    assert flow.inspect_left == 3 + 2 * LOGIN_EXTRA_PACKETS


@pytest.mark.parametrize("size", [1, 7, 100])
def test_pairing_survives_any_segmentation(size: int) -> None:
    host = "10.0.0.64"
    req = attacks.http_request(
        "GET", "/a", host, authorization=attacks.basic_auth("admin", "x")
    ) + attacks.http_request("GET", "/b", host)
    resp = attacks.http_response(401, b"no") + attacks.http_response(200, b"ok")
    flow = make_flow("10.0.0.9", 40000, host, 80)
    segments = [(True, req[i : i + size]) for i in range(0, len(req), size)]
    segments += [(False, resp[i : i + size]) for i in range(0, len(resp), size)]
    ctx = run(handle_http, flow, segments, "http")
    got = [(r.request.target if r.request else None, r.status, r.auth, r.body) for r in ctx.of(AppResponse)]  # type: ignore[attr-defined]
    assert got == [("/a", 401, FAILURE, b"no"), ("/b", 200, None, b"ok")]


def test_unanswered_requests_are_bounded_and_answers_pair_in_order() -> None:
    """Pipelined requests wait for their answers (at most MAX_PENDING: the oldest pair with nothing), and
    answers pair with the requests in order."""
    host = "10.0.0.64"
    flow = make_flow("10.0.0.9", 40000, host, 80)
    count = MAX_PENDING + 3
    pipelined = b"".join(attacks.http_request("GET", f"/r{i}", host) for i in range(count))
    answers = b"".join(attacks.http_response(200, b"") for _ in range(3))
    ctx = run(handle_http, flow, [(True, pipelined), (False, answers)], "http")
    reqs, resps = ctx.of(AppRequest), ctx.of(AppResponse)
    assert len(reqs) == count and len(resps) == 3
    paired = [r.request.target for r in resps if isinstance(r, AppResponse) and r.request is not None]
    assert paired == ["/r3", "/r4", "/r5"]  # /r0../r2 were dropped at the bound
