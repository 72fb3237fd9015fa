"""HTTP analyzer: golden checks against Zeek, nDPI and Arkime, hand-built camera fixtures, malformed input.

Golden sources: Zeek `http.log` (wikipedia.pcap, http/get.pcap), nDPI's `[URL]`, `[User-Agent]` and
`[StatusCode]` flow attributes on every nDPI capture with HTTP flows, and Arkime `http-simple-get.test`.
The corpus holds no camera HTTP, so the Hikvision/Xiongmai fingerprints are checked on hand-built
fixtures (`tests/data/fixtures/http/`, see its README).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError
from monitor.analyzers.http import (
    MAX_HEAD,
    Challenge,
    Headers,
    HttpRequest,
    HttpResponse,
    HttpStreamParser,
    looks_like,
    parse,
    parse_challenges,
    redact_url,
    safe_headers,
    split_head,
)
from tests.monitor.analyzers.payloads import tcp_streams
from tests.truth.arkime import read_arkime_test
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import arkime_pairs, ndpi_pairs, zeek_log_pairs
from tests.truth.zeek import as_int, as_str, read_zeek_log, unescape

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "http"

Key = tuple[str, int, str, int]


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _feed_all(data: bytes, size: int = 1448) -> tuple[list[HttpRequest | HttpResponse], HttpStreamParser]:
    parser = HttpStreamParser()
    out: list[HttpRequest | HttpResponse] = []
    for chunk in _chunks(data, size):
        out.extend(parser.feed(chunk))
    return out, parser


def _conversation(streams: dict[Key, bytes], key: Key) -> tuple[list[HttpRequest], list[HttpResponse]]:
    orig_h, orig_p, resp_h, resp_p = key
    requests, _ = _feed_all(streams.get(key, b""))
    responses, _ = _feed_all(streams.get((resp_h, resp_p, orig_h, orig_p), b""))
    return (
        [m for m in requests if isinstance(m, HttpRequest)],
        [m for m in responses if isinstance(m, HttpResponse)],
    )


def _table(title: str, rows: list[tuple[str, int, int]]) -> None:
    print(f"\n{title}")
    print(f"  {'source':<48} {'checked':>8} {'agree':>8}")
    for name, checked, agree in rows:
        print(f"  {name:<48} {checked:>8} {agree:>8}")


# --- golden: Zeek http.log ---------------------------------------------------------------------------

_ZEEK_HTTP = [(cap, log) for cap, log in zeek_log_pairs() if log.name == "http.log"]


@pytest.mark.parametrize("capture,log_path", _ZEEK_HTTP, ids=[c.name for c, _ in _ZEEK_HTTP])
def test_zeek_http_log(capture: Path, log_path: Path) -> None:
    log = read_zeek_log(log_path)
    streams = tcp_streams(capture)
    checked = agree = 0
    mismatches: list[str] = []
    cache: dict[Key, tuple[list[HttpRequest], list[HttpResponse]]] = {}
    for row in log.rows:
        key = (
            as_str(row["id.orig_h"]) or "",
            as_int(row["id.orig_p"]) or 0,
            as_str(row["id.resp_h"]) or "",
            as_int(row["id.resp_p"]) or 0,
        )
        if key not in cache:
            cache[key] = _conversation(streams, key)
        requests, responses = cache[key]
        depth = (as_int(row["trans_depth"]) or 1) - 1
        req = requests[depth] if depth < len(requests) else None
        resp = responses[depth] if depth < len(responses) else None
        expected = {
            "method": as_str(row["method"]),
            "host": as_str(row["host"]),
            "uri": as_str(row["uri"]),
            "user_agent": as_str(row["user_agent"]),
            "status_code": as_int(row["status_code"]),
            "status_msg": as_str(row["status_msg"]),
        }
        expected = {k: unescape(v) if isinstance(v, str) else v for k, v in expected.items()}
        got = {
            "method": req.method if req else None,
            "host": req.host if req else None,
            "uri": req.target if req else None,
            "user_agent": req.user_agent if req else None,
            "status_code": resp.status if resp else None,
            "status_msg": resp.reason if resp else None,
        }
        checked += 1
        if got == expected:
            agree += 1
        else:
            mismatches.append(f"{key} depth {depth + 1}: expected {expected}, got {got}")
    _table(f"Zeek {log_path.parent.name} http.log vs camwatch http", [(capture.name, checked, agree)])
    assert checked > 0
    assert not mismatches, "\n".join(mismatches[:10])


# --- golden: nDPI ---------------------------------------------------------------------------------------


def _ndpi_http_cases() -> list[tuple[Path, Path]]:
    cases = []
    for cap, out in ndpi_pairs():
        text = out.read_text(encoding="utf-8", errors="replace")
        if "[URL: " in text or "[StatusCode: " in text:
            cases.append((cap, out))
    return cases


_NDPI_HTTP = _ndpi_http_cases()


@pytest.mark.parametrize("capture,out", _NDPI_HTTP, ids=[c.name for c, _ in _NDPI_HTTP])
def test_ndpi_http_attributes(capture: Path, out: Path) -> None:
    """nDPI reports the flow's first request (URL = Host + target, User-Agent) and first status code."""
    result = read_ndpi_out(out)
    flows = [
        f
        for f in result.flows
        if f.l4 == "TCP" and ("URL" in f.attrs or "StatusCode" in f.attrs) and "RTSP" not in f.protocol
    ]
    streams = tcp_streams(capture)
    checked = agree = 0
    mismatches = []
    for flow in flows:
        requests, responses = _conversation(streams, (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port))
        req = requests[0] if requests else None
        expected: dict[str, str | None] = {}
        got: dict[str, str | None] = {}
        if "URL" in flow.attrs:
            expected["url"] = flow.attrs["URL"]
            got["url"] = (req.host or "") + req.target if req else None
        if "User-Agent" in flow.attrs:
            expected["user_agent"] = flow.attrs["User-Agent"]
            got["user_agent"] = req.user_agent if req else None
        if "StatusCode" in flow.attrs:
            expected["status"] = flow.attrs["StatusCode"]
            got["status"] = str(responses[0].status) if responses else None
        if flow.hostname is not None and req is not None and req.host is not None:
            expected["host"] = flow.hostname
            got["host"] = req.host.rsplit(":", 1)[0] if req.host.count(":") == 1 else req.host
        checked += 1
        if got == expected:
            agree += 1
        else:
            mismatches.append(f"flow {flow.index}: expected {expected}, got {got}")
    _table("nDPI HTTP attributes vs camwatch http", [(capture.name, checked, agree)])
    assert checked > 0
    assert not mismatches, "\n".join(mismatches[:10])


def test_arkime_http_simple_get() -> None:
    pairs = [(c, t) for c, t in arkime_pairs() if c.name == "http-simple-get.pcap"]
    assert pairs, "arkime http-simple-get capture missing"
    capture, truth = pairs[0]
    session = read_arkime_test(truth)[0]
    expected = session["http"]
    streams = tcp_streams(capture)
    src, dst = session["source"], session["destination"]
    requests, responses = _conversation(streams, (src["ip"], src["port"], dst["ip"], dst["port"]))
    assert [r.method for r in requests] == expected["method"]
    assert [r.host for r in requests] == expected["host"]
    assert [r.target for r in requests] == expected["path"]
    assert [r.user_agent for r in requests] == expected["useragent"]
    assert [r.version.removeprefix("HTTP/") for r in requests] == expected["clientVersion"]
    assert [r.status for r in responses] == expected["statuscode"]
    assert [r.version.removeprefix("HTTP/") for r in responses] == expected["serverVersion"]
    # Arkime lowercases header names and values.
    assert sorted({n.lower() for n, _ in responses[0].headers.fields}) == expected["responseHeader"]
    assert responses[0].server is not None
    assert responses[0].server.lower() in expected["responseHeaderValue"]
    _table("Arkime http-simple-get vs camwatch http", [(capture.name, 1, 1)])


# --- hand-built camera fixtures ------------------------------------------------------------------------


def test_hikvision_app_webs_401() -> None:
    msg = parse(_fixture("hikvision_app_webs_401.http"))
    assert isinstance(msg, HttpResponse)
    assert (msg.status, msg.reason, msg.server) == (401, "Unauthorized", "App-webs/")
    assert msg.realm == "IP Camera(F1234)"
    assert [c.scheme for c in msg.challenges] == ["Digest"]
    assert dict(msg.challenges[0].params)["qop"] == "auth"
    data = _fixture("hikvision_app_webs_401.http")
    assert msg.complete and msg.content_length == len(data) - msg.head_length == 172


def test_hikvision_webs_basic_realm() -> None:
    msg = parse(_fixture("hikvision_webs_401.http"))
    assert isinstance(msg, HttpResponse)
    assert msg.server == "Hikvision-Webs"
    assert msg.challenges == (Challenge("Basic", (("realm", "Hikvision"),)),)
    assert msg.realm == "Hikvision"


def test_request_credentials_are_dropped() -> None:
    msg = parse(_fixture("hikvision_isapi_request.http"))
    assert isinstance(msg, HttpRequest)
    assert (msg.method, msg.target, msg.host) == ("GET", "/ISAPI/System/deviceInfo", "10.20.0.11")
    assert msg.authorization_scheme == "Digest"
    assert "authorization" not in msg.headers and "cookie" not in msg.headers
    assert "response=" not in repr(msg) and "WebSession" not in repr(msg)


def test_upnp_soap_action() -> None:
    data = _fixture("upnp_add_port_mapping.http")
    msg = parse(data)
    assert isinstance(msg, HttpRequest)
    assert msg.soap_action == "urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"
    assert msg.host == "10.20.0.1:5000"
    assert msg.user_agent is not None and "Portable SDK for UPnP" in msg.user_agent
    assert msg.content_length == len(data) - msg.head_length
    # The SOAP body is skipped by the stream parser: two requests back to back give two heads.
    msgs, parser = _feed_all(data + data, 97)
    assert [m.soap_action for m in msgs if isinstance(m, HttpRequest)] == [msg.soap_action] * 2
    assert parser.error is None and parser.body_bytes == 2 * msg.content_length


def test_xiongmai_uc_httpd() -> None:
    data = _fixture("xiongmai_uc_httpd_200.http")
    msg = parse(data)
    assert isinstance(msg, HttpResponse)
    assert (msg.version, msg.status, msg.server) == ("HTTP/1.0", 200, "uc-httpd 1.0.0")
    assert msg.content_length is None
    msgs, parser = _feed_all(data)
    assert len(msgs) == 1 and parser.opaque and parser.error is None  # body runs until close
    assert b"NETSurveillance WEB" in data[msg.head_length :]


# --- behaviour ---------------------------------------------------------------------------------------------


def test_incomplete_head_parses_complete_lines() -> None:
    data = _fixture("hikvision_app_webs_401.http")
    cut = data.index(b"WWW-Authenticate")
    msg = parse(data[:cut])
    assert isinstance(msg, HttpResponse)
    assert not msg.complete and msg.server == "App-webs/" and msg.challenges == ()
    assert msg.head_length == cut


def test_headers_case_insensitive_lf_and_folding() -> None:
    data = b"GET / HTTP/1.1\nhOsT: cam.local\nuser-AGENT: a\n  b\nX: 1\n\n"
    msg = parse(data)
    assert isinstance(msg, HttpRequest)
    assert msg.host == "cam.local" and msg.user_agent == "a b" and msg.complete
    assert msg.headers.get("x") == "1" and msg.headers.get_all("X") == ("1",)


def test_header_lookups_built_by_the_splitter_and_by_hand_agree() -> None:
    """The lowercased names the splitter hands over, and those made for headers built by hand (or filtered),
    give the same answers: first value, every value in wire order, absent names."""
    head = split_head(b"HTTP/1.1 401 No\r\nSet-Cookie: a=1\r\nVia: x\r\nVIA: y\r\nServer: s\r\n\r\n")
    by_hand = Headers(head.headers.fields)
    for h in (head.headers, by_hand):
        assert h.names == ("set-cookie", "via", "via", "server")
        assert h.get("via") == "x" and h.get_all("Via") == ("x", "y") and h.get_all("www-authenticate") == ()
        assert h.get("absent") is None and "SERVER" in h and "absent" not in h
        assert h.has_any(frozenset({"set-cookie"})) and not h.has_any(frozenset({"cookie"}))
    safe = safe_headers(head.headers)
    assert safe.fields == (("Via", "x"), ("VIA", "y"), ("Server", "s"))
    assert safe.names == ("via", "via", "server")
    plain = split_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").headers
    assert safe_headers(plain) is plain  # nothing to drop: no copy
    assert by_hand == head.headers  # the names are not part of equality


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/ISAPI/System/deviceInfo", "/ISAPI/System/deviceInfo"),  # neither '@' nor '=': returned as is
        ("/cgi?password=x&ch=1", "/cgi?password=***&ch=1"),
        ("rtsp://admin:pw@10.0.0.1/ch1", "rtsp://10.0.0.1/ch1"),
        ("/a@b/c", "/a@b/c"),  # an '@' without a scheme is not userinfo
    ],
)
def test_redact_url_with_and_without_the_fast_path(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_conflicting_content_length_is_malformed() -> None:
    with pytest.raises(AnalyzerError, match="Content-Length"):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
    msg = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n")
    assert isinstance(msg, HttpResponse) and msg.content_length == 5


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1",  # no line end yet
        b"\r\n",
        b"GET HTTP/1.1\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/x.1\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n bad fold\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_malformed_examples(data: bytes) -> None:
    with pytest.raises(AnalyzerError):
        parse(data)


def test_challenges() -> None:
    got = parse_challenges(
        'Basic realm="a, b", Digest realm="DH_00408CA5EA04", nonce="x", stale=FALSE, qop="auth";'
    )
    assert [(c.scheme, c.realm) for c in got] == [("Basic", "a, b"), ("Digest", "DH_00408CA5EA04")]
    assert dict(got[1].params)["stale"] == "FALSE"
    got = parse_challenges("Negotiate, NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==")
    assert [(c.scheme, c.token68) for c in got] == [("Negotiate", None), ("NTLM", got[1].token68)]
    assert got[1].token68 is not None and got[1].token68.endswith("==")
    assert parse_challenges('Digest realm="x\\"y"')[0].realm == 'x"y'
    assert parse_challenges("") == ()


def test_redact_url() -> None:
    assert redact_url("/cgi-bin/a?user=admin&password=x1&ch=1") == "/cgi-bin/a?user=admin&password=***&ch=1"
    assert (
        redact_url("/System/configurationFile?auth=YWRtaW46MTEK")
        == "/System/configurationFile?auth=YWRtaW46MTEK"
    )
    assert redact_url("http://u:p@h/x") == "http://h/x"


def test_stream_chunked_pipelined_interim_and_upgrade() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    )
    for size in range(1, 40):
        msgs, parser = _feed_all(data, size)
        assert [m.status for m in msgs if isinstance(m, HttpResponse)] == [100, 200, 204, 101], size
        assert parser.opaque and parser.error is None


def test_stream_head_response() -> None:
    parser = HttpStreamParser()
    parser.expect_no_body()
    msgs = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n")
    assert [m.status for m in msgs if isinstance(m, HttpResponse)] == [200, 404]


def test_stream_bounded_on_endless_head() -> None:
    parser = HttpStreamParser(max_buffer=1024)
    parser.feed(b"GET / HTTP/1.1\r\n")
    for _ in range(100):
        parser.feed(b"X-Filler: " + b"a" * 100 + b"\r\n")
        assert parser.buffered <= 1024
    # The head is dropped (line by line, nothing held), not the connection: a later request is read.
    assert parser.error is not None and not parser.opaque and parser.messages == 0
    (msg,) = parser.feed(b"\r\nGET /next HTTP/1.1\r\n\r\n")
    assert isinstance(msg, HttpRequest) and msg.target == "/next"


@given(st.lists(st.binary(min_size=0, max_size=4096), max_size=50))
@settings(max_examples=200, deadline=None)
def test_stream_bounded_on_garbage(chunks: list[bytes]) -> None:
    parser = HttpStreamParser(max_buffer=2048)
    for chunk in chunks:
        parser.feed(chunk)
        assert parser.buffered <= 2048


def test_looks_like() -> None:
    assert looks_like(b"GET / HTTP/1.1\r\n") and looks_like(b"HTTP/1.1 200 OK\r\n")
    assert looks_like(b"M-SEARCH * HTTP/1.1\r\n") and looks_like(b"POST /x HTTP/1.0\r\n")
    assert not looks_like(b"HTTP/2 200") and not looks_like(b"RTSP/1.0 200 OK\r\n")
    assert not looks_like(b"get / HTTP/1.1") and not looks_like(b"") and not looks_like(b"\x16\x03\x01")


# --- malformed input: only AnalyzerError -------------------------------------------------------------------


def _samples() -> list[bytes]:
    samples = [p.read_bytes() for p in sorted(FIXTURES.glob("*.http"))]
    streams = tcp_streams(
        Path(__file__).parents[2] / "data" / "corpus" / "pcaps" / "zeek" / "http" / "get.pcap"
    )
    samples.extend(v[:2000] for v in streams.values() if v)
    return samples


_SAMPLES = _samples()


def _parse_or_analyzer_error(data: bytes) -> HttpRequest | HttpResponse | None:
    try:
        return parse(data)
    except AnalyzerError:
        return None


@pytest.mark.parametrize("index", range(len(_SAMPLES)))
def test_truncation_at_every_length(index: int) -> None:
    data = _SAMPLES[index]
    for cut in range(len(data) + 1):
        msg = _parse_or_analyzer_error(data[:cut])
        if msg is not None and msg.complete:
            assert msg.head_length <= cut


@given(st.binary(max_size=512))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    _parse_or_analyzer_error(data)
    looks_like(data)


@given(st.sampled_from(_SAMPLES), st.integers(0, 4000), st.binary(min_size=1, max_size=8))
@settings(max_examples=500, deadline=None)
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, junk: bytes) -> None:
    where %= len(data) + 1
    _parse_or_analyzer_error(data[:where] + junk + data[where + len(junk) :])


@given(st.sampled_from(_SAMPLES), st.lists(st.integers(1, 300), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_stream_segmentation_does_not_matter(data: bytes, sizes: list[int]) -> None:
    whole, _ = _feed_all(data, len(data) or 1)
    parser = HttpStreamParser()
    pieces: list[HttpRequest | HttpResponse] = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        pieces.extend(parser.feed(data[pos : pos + size]))
        pos += size
        i += 1
    assert pieces == whole


def test_split_head_limits() -> None:
    with pytest.raises(AnalyzerError, match="longer than"):
        split_head(b"G" * MAX_HEAD)
    head = split_head(b"GET / HTTP/1.1\r\n" + (b"X: " + b"y" * 1000 + b"\r\n") * 50)
    assert not head.complete and head.length <= MAX_HEAD
    with pytest.raises(AnalyzerError, match="header fields"):
        split_head(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 500)
