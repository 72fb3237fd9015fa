"""Fuzz the attack matchers end to end at the protocol level: HTTP with kept bodies (malformed heads, chunked
bodies, huge headers, binary on HTTP ports), the login readers (Basic, Digest, WS-Security, Dahua JSON-RPC),
Dahua tcp/37777 framing, telnet, the Xiongmai enabler and console, and the exploit matchers over the requests
the HTTP binding makes of the input. Nothing may raise but AnalyzerError from ``parse`` functions; stream
parsers never raise and stay within their buffer bounds; no event carries more than its bounds.

Run: ``python -m fuzz.fuzz_attacks [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys

from fuzz.common import feed_in_pieces
from lab import attacks
from monitor.analyzers import AnalyzerError, dvrip, http, logins, telnet, xmdebug
from monitor.events import AppRequest, AppResponse
from monitor.flows import Flow
from monitor.rules import exploit

NAME = "attacks"
_MAX_BUFFER = 1024
_KEEP = 256


def _flow():  # type: ignore[no-untyped-def]
    from tests.monitor.analyzers.recording import make_flow

    return make_flow("10.0.0.9", 40000, "10.0.0.64", 80)


class _Ctx:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)

    def fact(self, *args: object, **kwargs: object) -> None:
        pass

    def upgrade(self, flow: object, name: str) -> None:
        pass

    def resolved(self, ip: str, name: str, ts_ns: int) -> None:
        pass

    def watched(self, flow: Flow) -> bool:
        return True  # every flow: the handlers report all they read


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    text = data.decode("latin-1")
    logins.from_authorization(text)
    logins.from_authorization("Basic " + text)
    logins.from_authorization("Digest " + text)
    logins.from_ws_security(data)
    logins.rpc_login(data)
    logins.rpc_outcome(data)
    logins.soap_fault_is_auth(data)
    telnet.banner(data)
    telnet.looks_like(data)
    dvrip.looks_like(data)
    xmdebug.looks_like_enabler(data)
    with contextlib.suppress(AnalyzerError):
        xmdebug.enabler_message(data)
    with contextlib.suppress(AnalyzerError):
        dvrip.Frame.header(data)
    # Stream parsers: never raise, bounded.
    keep = http.HttpStreamParser(max_buffer=_MAX_BUFFER, keep_body=_KEEP)
    feed_in_pieces(keep, data, _MAX_BUFFER + _KEEP, "HttpStreamParser(keep_body)")
    for msg in keep.feed(b"") + http.HttpStreamParser(keep_body=_KEEP).feed(data):
        if len(msg.body) > _KEEP:
            raise AssertionError(f"body of {len(msg.body)} bytes kept, bound {_KEEP}")
    feed_in_pieces(dvrip.DvripStreamParser(), data, dvrip.HEADER_LEN + dvrip.MAX_BODY, "DvripStreamParser")
    # The bindings and the exploit matchers on what they make of the input, both directions.
    for handler, label in (
        (http.handle_http, "http"),
        (dvrip.handle_dvrip, "dvrip"),
        (telnet.handle_telnet, "telnet"),
        (xmdebug.handle_enabler, "xm-telnetctl"),
        (xmdebug.handle_console, "xm-console"),
    ):
        flow = _flow()
        flow.protocol = label
        ctx = _Ctx()
        size = 1 + (data[0] if data else 0)
        for i in range(0, len(data), size):
            with contextlib.suppress(AnalyzerError):
                handler(ctx, flow, bool(i // size % 2 == 0), data[i : i + size], i)  # type: ignore[arg-type]
        for event in ctx.events:
            if isinstance(event, AppRequest):
                for _, match in exploit._MATCHERS:
                    match(event)
            if isinstance(event, AppResponse | AppRequest) and len(event.body) > http.KEEP_BODY:
                raise AssertionError(f"{label}: an event carries {len(event.body)} bytes of body")
    exploit.parse_created(text[:64])


def seeds() -> list[bytes]:
    """Requests of every kind the rules match, and their answers."""
    host = "10.0.0.64"
    body = attacks.rpc_login_body("admin", client_type="NetKeyboard", password="x")
    header = attacks.ws_username_token("admin", "pw", b"0123456789abcdef", "2024-05-01T10:00:00Z")
    return [
        attacks.http_request("PUT", "/SDK/webLanguage", host, body=attacks.weblanguage_body("id")),
        attacks.http_request("GET", f"/System/configurationFile?auth={attacks.AUTH_BYPASS_TOKEN}", host),
        attacks.http_request("POST", "/RPC2_Login", host, body=body, content_type="application/json"),
        attacks.http_request("GET", "/", host, authorization=attacks.basic_auth("admin", "12345")),
        attacks.http_request("GET", "/", host, authorization=attacks.digest_auth_header("a", "r", "n", "/")),
        attacks.onvif_request(host, header),
        attacks.http_response(400, attacks.ONVIF_NOT_AUTHORIZED),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nroot:\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" + bytes(range(256)),
        b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"A" * 2000 + b"\r\n\r\n",
        attacks.dhip_login(body),
        attacks.enabler_message("OpenTelnet:OpenOnce") + attacks.enabler_message("Open:OK"),
        bytes([0xFF, 0xFD, 0x01, 0xFF, 0xFA, 0x18, 0x01, 0xFF, 0xF0]) + b"login: ",
        b'{"result":false,"params":{"random":"1"}}',
    ]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
