"""Video pulled through the camera's web port: RTSP tunnelled in HTTP (Apple's QuickTime tunnelling, which
VLC, FFmpeg and camera web servers speak) is judged as RTSP is on tcp/554.

Before `monitor/analyzers/rtsp_tunnel.py`, such a pull by a non-viewer with the factory password raised
nothing but `device.new`: the two HTTP connections were read as a GET with an endless answer and a POST with
a 32 kB body.
"""

from __future__ import annotations

import base64

from lab import attacks, payloads, personas
from tests.enginerun import run_frames
from tests.monitor.rules.traffic import ATTACKER, HIK, MS, OFFICE, POLICY, RECORDER, T0, Host, alerts, of_rule

PATH = "/Streaming/Channels/101"
URL = f"rtsp://{HIK.ip}{PATH}"
COOKIE = "1f3c7b2a9e"
SESSION = "Session: 77\r\n"
INTERLEAVED = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
MEDIA = b"$\x00\x05\xdc" + b"\x80\x60" + bytes(1498)  # an interleaved RTP frame on channel 0


def _basic(user: str, password: str) -> str:
    return f"Authorization: {attacks.basic_auth(user, password)}\r\n"


def tunnel(
    client: Host,
    auth: str = "",
    *,
    statuses: tuple[int, int, int] = (200, 200, 200),
    t0: int = T0,
    split_post_head: bool = False,
    cookie: str = COOKIE,
    ports: tuple[int, int] = (40000, 40001),
    pieces: int = 1,
    body_prefix: bytes = b"",
    cookie_only: bool = False,
    options_first: bool = False,
) -> list[tuple[int, bytes]]:
    """A pull of the camera's stream tunnelled in HTTP on tcp/80: the GET (answers' half) opens first, then
    the POST (requests' half) carries DESCRIBE, SETUP and PLAY in base64, each answered on the GET a few ms
    later; then the video comes down the GET as interleaved frames."""
    requests = [
        personas.rtsp_request("DESCRIBE", URL, 1, "Accept: application/sdp\r\n" + auth),
        personas.rtsp_request("SETUP", URL + "/trackID=1", 2, INTERLEAVED + auth),
        personas.rtsp_request("PLAY", URL, 3, SESSION + auth),
    ]
    answers = [
        personas.rtsp_response(1, "Hikvision-Webs", "Content-Type: application/sdp\r\n", personas.SDP_H264),
        personas.rtsp_response(2, "Hikvision-Webs", INTERLEAVED + SESSION),
        personas.rtsp_response(3, "Hikvision-Webs", SESSION),
    ]
    for i, status in enumerate(statuses):
        if status != 200:
            answers[i] = (
                f"RTSP/1.0 {status} Unauthorized\r\nCSeq: {i + 1}\r\n"
                'WWW-Authenticate: Basic realm="IP Camera"\r\n\r\n'
            ).encode()
    get_head, head = payloads.rtsp_tunnel_get(PATH, cookie), payloads.rtsp_tunnel_post(PATH, cookie)
    if cookie_only:  # the cookie is all servers go by (live555): no tunnel content type
        get_head = get_head.replace(b"Accept: application/x-rtsp-tunnelled\r\n", b"")
        head = head.replace(b"Content-Type: application/x-rtsp-tunnelled\r\n", b"")
    get = [(t0, True, get_head), (t0 + MS, False, payloads.rtsp_tunnel_ok("Hikvision-Webs"))]
    post = [(t0 + 10 * MS, True, head[:40]), (t0 + 11 * MS, True, head[40:])] if split_post_head else []
    for i, (request, answer) in enumerate(zip(requests, answers, strict=True)):
        t = t0 + (20 + 10 * i) * MS
        encoded = (body_prefix if i == 0 else b"") + base64.b64encode(request)
        if i == 0 and not split_post_head:
            encoded = head + encoded
        step = -(-len(encoded) // pieces)
        post += [(t + k * MS // 10, True, encoded[k * step : (k + 1) * step]) for k in range(pieces)]
        get.append((t + 2 * MS, False, answer))
    if options_first:  # an HTTP request answered first on the POST's connection (kept alive)
        options = f"OPTIONS * HTTP/1.1\r\nHost: {HIK.ip}\r\n\r\n".encode()
        allowed = b"HTTP/1.1 200 OK\r\nAllow: OPTIONS, GET, POST\r\nContent-Length: 0\r\n\r\n"
        post = [(t0 + 5 * MS, True, options), (t0 + 6 * MS, False, allowed), *post]
    if all(s == 200 for s in statuses):
        get += [(t0 + (60 + i) * MS, False, MEDIA) for i in range(30)]
    cport_get, cport_post = ports
    answers_half = personas.tcp_timeline(client.mac, HIK.mac, client.ip, HIK.ip, cport_get, 80, get)
    return answers_half + personas.tcp_timeline(client.mac, HIK.mac, client.ip, HIK.ip, cport_post, 80, post)


def test_a_non_viewer_pulling_video_through_the_web_port_is_an_unauthorized_client() -> None:
    (a,) = of_rule(alerts(tunnel(OFFICE)), "stream.unauthorized_client")
    message = str(a["message"])
    assert a["event"]["outcome"] == "success"  # type: ignore[index]
    assert f"it asked with RTSP DESCRIBE {URL} tunnelled in HTTP (tcp/80) and was served" in message
    # The fix names the tunnel: closing RTSP's port does not stop it.
    assert "restrict RTSP and its HTTP tunnelling on the camera to the recorder" in message
    assert a["destination"]["port"] == 80 and a["source"]["ip"] == OFFICE.ip  # type: ignore[index]


def test_the_factory_password_in_the_tunnel_is_a_default_credentials_login() -> None:
    records = alerts(tunnel(ATTACKER, _basic("admin", "12345")))
    (a,) = of_rule(records, "auth.default_credentials")
    assert a["event"]["outcome"] == "success"  # type: ignore[index]
    assert "over RTSP-over-HTTP Basic, and the device accepted it" in str(a["message"])
    assert of_rule(records, "stream.unauthorized_client")


def guessing(pieces: int = 1) -> list[tuple[int, bytes]]:
    """Six tunnels 200 ms apart, each trying a password three times and refused (401) each time."""
    frames: list[tuple[int, bytes]] = []
    for i in range(6):
        frames += tunnel(
            ATTACKER,
            _basic("admin", f"guess{i}"),
            statuses=(401, 401, 401),
            t0=T0 + i * 200 * MS,
            cookie=f"c{i}",
            ports=(41000 + 2 * i, 41001 + 2 * i),
            pieces=pieces,
        )
    return frames


def test_refused_logins_in_tunnels_are_password_guessing() -> None:
    (a,) = of_rule(alerts(guessing()), "auth.bruteforce")
    assert a["camwatch"]["bruteforce"]["protocols"] == ["rtsp-http"]  # type: ignore[index]
    assert "over RTSP-over-HTTP" in str(a["message"])


def test_the_recorder_pulling_through_the_tunnel_is_a_viewer() -> None:
    records = alerts(tunnel(RECORDER))
    assert not of_rule(records, "stream.unauthorized_client")


def test_both_connections_are_labelled_and_the_answers_pair_across_them() -> None:
    engine, flows, _ = run_frames(sorted(tunnel(OFFICE)), policy=POLICY)
    assert sorted(f.protocol or "" for f in flows if f.proto == 6) == ["rtsp-http", "rtsp-http"]
    assert engine.analysis.stats.internal_errors == 0


def test_a_post_head_cut_in_two_segments_still_opens_the_tunnel() -> None:
    (a,) = of_rule(alerts(tunnel(OFFICE, split_post_head=True)), "stream.unauthorized_client")
    assert a["event"]["outcome"] == "success"  # type: ignore[index]


def test_the_result_does_not_depend_on_batch_sizes() -> None:
    frames = tunnel(ATTACKER, _basic("admin", "12345"))
    whole = [(r["rule"]["id"], r["@timestamp"]) for r in alerts(frames)]  # type: ignore[index]
    one_by_one = [(r["rule"]["id"], r["@timestamp"]) for r in alerts(frames, batch_size=1)]  # type: ignore[index]
    assert whole == one_by_one and "stream.unauthorized_client" in [rule for rule, _ in whole]


def _weblanguage_as_tunnel(method: str) -> bytes:
    """CVE-2021-36260's request with the tunnel's headers."""
    body = attacks.weblanguage_body("$(id>webLib/x)")
    extra = f"x-sessioncookie: {COOKIE}\r\n"
    return attacks.http_request(
        method,
        "/SDK/webLanguage",
        HIK.ip,
        body=body,
        content_type="application/x-rtsp-tunnelled",
        extra=extra,
    )


def test_an_exploit_dressed_as_a_tunnel_is_still_read_as_http() -> None:
    # The camera's web server routes it by its path, so it must still be matched (the body is not base64:
    # the tunnel part reads junk, HTTP reads on).
    request = _weblanguage_as_tunnel("PUT")
    frames = personas.tcp_exchange(
        T0, ATTACKER.mac, HIK.mac, ATTACKER.ip, HIK.ip, 40000, 80, [(request, attacks.http_response(500))]
    )
    assert of_rule(alerts(frames), "exploit.attempt")
    # And as a POST, which opens a tunnel's half:
    post = request.replace(b"PUT ", b"POST ", 1)
    frames = personas.tcp_exchange(
        T0, ATTACKER.mac, HIK.mac, ATTACKER.ip, HIK.ip, 40000, 80, [(post, attacks.http_response(500))]
    )
    assert of_rule(alerts(frames), "exploit.attempt")


def test_a_head_whose_last_line_end_comes_alone_still_opens_the_tunnel_and_hides_no_exploit() -> None:
    # HTTP holds the head without its final CRLF, then the CRLF comes alone: the tunnel reader gets exactly
    # what HTTP held (a guess lost the CRLF: no tunnel, and HTTP's own stream lost two bytes, hiding this).
    request = _weblanguage_as_tunnel("POST")
    end = request.index(b"\r\n\r\n") + 2
    head, line_end, body = request[:end], request[end : end + 2], request[end + 2 :]
    sends = [(T0, True, head), (T0 + MS, True, line_end), (T0 + 2 * MS, True, body)]
    sends.append((T0 + 10 * MS, False, attacks.http_response(500)))
    frames = personas.tcp_timeline(ATTACKER.mac, HIK.mac, ATTACKER.ip, HIK.ip, 40000, 80, sends)
    assert of_rule(alerts(frames), "exploit.attempt")


def test_junk_before_the_requests_is_read_as_servers_read_it() -> None:
    # "AAAA" decodes to NULs a server skips; "...." is not base64 (live555 reads each as "A"): the factory
    # password and the pull after them are still seen.
    for prefix in (b"AAAA", b"...."):
        records = alerts(tunnel(ATTACKER, _basic("admin", "12345"), body_prefix=prefix))
        assert of_rule(records, "auth.default_credentials") and of_rule(records, "stream.unauthorized_client")


def test_heads_with_only_the_cookie_open_a_tunnel() -> None:
    records = alerts(tunnel(ATTACKER, _basic("admin", "12345"), cookie_only=True))
    assert of_rule(records, "auth.default_credentials") and of_rule(records, "stream.unauthorized_client")


def test_requests_in_many_segments_pair_with_their_answers_whatever_the_batch_size() -> None:
    # The GET's answers may be read before the POST's requests they answer (a flow's first packets are read
    # before the rest of a batch): they wait for their requests.
    frames = guessing(pieces=8)
    for batch_size in (65536, 1):
        assert of_rule(alerts(frames, batch_size=batch_size), "auth.bruteforce"), batch_size


def test_a_tunnel_opened_after_other_requests_on_a_kept_alive_connection_is_read() -> None:
    # live555 reads on after an HTTP request on the same connection: the POST's half may come second.
    records = alerts(tunnel(ATTACKER, _basic("admin", "12345"), options_first=True))
    assert of_rule(records, "auth.default_credentials") and of_rule(records, "stream.unauthorized_client")
