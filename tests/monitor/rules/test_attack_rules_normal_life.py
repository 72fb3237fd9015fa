"""Normal life on a camera site raises none of the attack rules (issue 12, false positives), and a flood of
distinct clients through the whole engine leaves every attack rule's per-client tables at their bounds.

Ten minutes of a site's routine, all at once: a recorder discovering its cameras over ONVIF
(WS-Discovery, then the device service with fresh WS-UsernameTokens, the first call without one) and
pulling RTSP with Digest (a 401 challenge each time, a stale nonce now and then), admins logging in to the
web interfaces (Basic with a password that is not a factory one, a typo, Digest for every page of a
Hikvision UI, a Dahua two-step RPC login), and the cameras' NTP and DNS.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lab import attacks, personas, synth
from monitor.engine import Engine
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.rules import auth_bruteforce, auth_default, exploit
from monitor.rules._common import Bounded
from tests.enginerun import vendors
from tests.monitor.rules.traffic import (
    ATTACKER,
    DAHUA,
    GW,
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

ATTACK_RULES = {
    "exploit.attempt",
    "auth.bruteforce",
    "auth.default_credentials",
    "device.scanning",
    "device.telnet",
}
CAMERAS = (HIK, DAHUA)
MINUTES = 10
WSD_PROBE = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    b'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header>'
    b"<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>"
    b"<a:MessageID>uuid:0a6dc791-2be6-4991-9af1-454778a1917a</a:MessageID>"
    b"<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header><s:Body>"
    b'<Probe xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery"><Types>dn:NetworkVideoTransmitter</Types>'
    b"</Probe></s:Body></s:Envelope>"
)
SOAP_OK = attacks.http_response(
    200, b"<s:Envelope><s:Body/></s:Envelope>", content_type="application/soap+xml"
)


def _created(ts_ns: int, skew_s: int = 0) -> str:
    return datetime.fromtimestamp(ts_ns / NS + skew_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest_challenge(stale: bool = False) -> str:
    return f'WWW-Authenticate: Digest realm="IP Camera", nonce="n1"{", stale=TRUE" if stale else ""}\r\n'


def _rtsp_401(cseq: int, stale: bool = False) -> bytes:
    return f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n{_digest_challenge(stale)}\r\n".encode()


def _onvif_discovery(t: int, round_: int) -> list[tuple[int, bytes]]:
    """The recorder's discovery round: a Probe multicast, each camera's ProbeMatches, then for each camera
    GetSystemDateAndTime without a token (the clock, to compute its own), GetCapabilities without a token
    (refused with NotAuthorized: the device asking for one) and GetProfiles with a fresh token (the camera's
    clock 2 minutes off, well within what ONVIF clients tolerate)."""
    probe = synth.udp4_frame(
        RECORDER.mac, personas.MCAST_MAC, RECORDER.ip, "239.255.255.250", 40100, 3702, WSD_PROBE
    )
    frames = [(t, probe)]
    for i, cam in enumerate(CAMERAS):
        xaddr = f"http://{cam.ip}/onvif/device_service"
        match = personas.wsd_probe_match(f"urn:uuid:{i}", xaddr, "Camera", "X")
        frames.append(
            (
                t + (5 + i) * MS,
                synth.udp4_frame(cam.mac, RECORDER.mac, cam.ip, RECORDER.ip, 3702, 40100, match),
            )
        )
        nonce = f"r{round_:04d}c{i}-{t:020d}".encode()
        token = attacks.ws_username_token("onvif-rec", "Rec0rder!pw", nonce, _created(t, 120))
        turns = [
            (attacks.onvif_request(cam.ip, action="GetSystemDateAndTime"), SOAP_OK),
            (
                attacks.onvif_request(cam.ip, action="GetCapabilities"),
                attacks.http_response(400, attacks.ONVIF_NOT_AUTHORIZED),
            ),
            (attacks.onvif_request(cam.ip, token, action="GetProfiles"), SOAP_OK),
        ]
        frames += exchange(t + 20 * MS + i * 30 * MS, RECORDER, cam, 41000 + round_ * 2 + i, 80, turns)
    return frames  # fmt: skip


def _rtsp_pull(t: int, cam: Host, port: int, stale: bool) -> list[tuple[int, bytes]]:
    """The recorder reconnects to a camera: DESCRIBE refused with a Digest challenge, then with Digest (a
    stale nonce first when ``stale``: the second 401 says so), then SETUP and PLAY."""
    url = f"rtsp://{cam.ip}/Streaming/Channels/101"
    auth = f"Authorization: {attacks.digest_auth_header('recorder', 'IP Camera', 'n1', url)}\r\n"
    turns = [(personas.rtsp_request("DESCRIBE", url, 1), _rtsp_401(1))]
    cseq = 2
    if stale:
        turns.append(
            (
                personas.rtsp_request("DESCRIBE", url, cseq, auth),
                _rtsp_401(cseq, stale=True),
            )
        )
        cseq += 1
    turns.append(
        (
            personas.rtsp_request("DESCRIBE", url, cseq, auth + "Accept: application/sdp\r\n"),
            personas.rtsp_response(cseq, "Hik", "Content-Type: application/sdp\r\n", personas.SDP_H264),
        )
    )
    return exchange(t, RECORDER, cam, port, 554, turns)  # fmt: skip


def _web_admin(t: int) -> list[tuple[int, bytes]]:
    """An admin at the office PC: a typo then the right (not factory) password over Basic, 30 pages of the
    Hikvision UI each challenged for Digest first, and the Dahua web UI's two-step RPC login."""
    frames: list[tuple[int, bytes]] = []
    for i, password in enumerate(("Adm1n-2024?", "Adm1n-2024!")):
        req = attacks.http_request(
            "GET", "/ISAPI/Security/userCheck", HIK.ip, authorization=attacks.basic_auth("admin", password)
        )
        answer = attacks.http_response(401 if i == 0 else 200, b"<userCheck/>")
        frames += exchange(t + i * NS, OFFICE, HIK, 50000 + i, 80, [(req, answer)])
    for i in range(30):
        page = f"/doc/page/{i}.html"
        auth = attacks.digest_auth_header("admin", "IP Camera", "n1", page)
        turns = [
            (
                attacks.http_request("GET", page, HIK.ip),
                attacks.http_response(401, extra=_digest_challenge()),
            ),
            (
                attacks.http_request("GET", page, HIK.ip, authorization=auth),
                attacks.http_response(200, b"<html/>"),
            ),
        ]
        frames += exchange(t + 2 * NS + i * 100 * MS, OFFICE, HIK, 50100 + i, 80, turns)
    step1 = attacks.http_request("POST", "/RPC2_Login", DAHUA.ip, body=attacks.rpc_login_body("admin"))
    step2 = attacks.http_request(
        "POST",
        "/RPC2_Login",
        DAHUA.ip,
        body=attacks.rpc_login_body(
            "admin", password="8F2E0A" * 5 + "11", passwordType="Default", authorityType="Default"
        ),
    )
    frames += exchange(
        t + 6 * NS,
        OFFICE,
        DAHUA,
        50200,
        80,
        [
            (
                step1,
                attacks.http_response(
                    200,
                    b'{"error":{"code":268632079},"params":{"random":"5","realm":"Login to x"},'
                    b'"result":false,"session":77}',
                ),
            ),
            (
                step2,
                attacks.http_response(200, b'{"params":{"keepAliveInterval":60},"result":true,"session":77}'),
            ),
        ],
    )
    return frames  # fmt: skip


def _ntp_dns(t: int, cam: Host, i: int) -> list[tuple[int, bytes]]:
    """A camera's clock and names: NTP with two pool servers and the gateway, DNS lookups (one NXDOMAIN)."""
    frames: list[tuple[int, bytes]] = []
    for j, server in enumerate(("10.20.0.1", "192.0.2.123", "198.51.100.123")):
        mac = GW.mac
        frames += personas.udp_pair(
            t + j * MS,
            cam.mac,
            mac,
            cam.ip,
            server,
            40000 + i * 4 + j,
            123,
            b"\x23" + bytes(47),
            b"\x24" + bytes(47),
        )
    for j, name in enumerate(("time.windows.com", "pool.ntp.org", "nvr.site.lan")):
        answer = (
            personas.dns_answer(i * 4 + j, name, "10.20.0.2")
            if j == 2
            else personas.dns_answer(i * 4 + j, name, "192.0.2.123")
        )
        frames += personas.udp_pair(
            t + (10 + j) * MS,
            cam.mac,
            GW.mac,
            cam.ip,
            GW.ip,
            45000 + i * 4 + j,
            53,
            personas.dns_query(i * 4 + j, name),
            answer,
        )
    return frames  # fmt: skip


def _site_day() -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    for minute in range(MINUTES):
        t = T0 + minute * 60 * NS
        frames += _onvif_discovery(t, minute)
        for k in range(6):  # the recorder's RTSP reconnects, every 10 s to each camera
            for c, cam in enumerate(CAMERAS):
                port = 46000 + minute * 20 + k * 2 + c
                frames += _rtsp_pull(t + (k * 10 + 1) * NS + c * 50 * MS, cam, port, stale=k % 3 == 0)
        for s in range(12):  # NTP and DNS every 5 s
            for c, cam in enumerate(CAMERAS):
                frames += _ntp_dns(t + s * 5 * NS + 300 * MS, cam, (minute * 12 + s) * 2 + c)
    frames += _web_admin(T0 + 125 * NS)
    return frames


def test_a_site_s_normal_life_raises_none_of_the_attack_rules() -> None:
    records = alerts(_site_day())
    raised = sorted({str(r["rule"]["id"]) for r in records} & ATTACK_RULES)  # type: ignore[index]
    assert raised == [], [r["message"] for r in records if r["rule"]["id"] in ATTACK_RULES]  # type: ignore[index]
    assert not [r for r in records if r["rule"]["id"] == "stream.unauthorized_client"]  # type: ignore[index]


def test_the_same_traffic_with_a_factory_password_is_caught() -> None:
    """The control: the normal-life fixture is read (a Hikvision factory password in the admin's Basic
    login raises auth.default_credentials), so the test above can fail."""
    frames = _site_day()
    factory = attacks.http_request("GET", "/", HIK.ip, authorization=attacks.basic_auth("admin", "12345"))
    frames += exchange(T0 + 200 * NS, OFFICE, HIK, 51000, 80, [(factory, attacks.http_response(200, b"ok"))])
    raised = {str(r["rule"]["id"]) for r in alerts(frames)}  # type: ignore[index]
    assert raised & ATTACK_RULES == {"auth.default_credentials"}


def _rule_tables(engine: Engine) -> dict[str, Bounded[object, object]]:
    """Every bounded table of the attack rules in this engine, by ``rule.attribute``."""
    tables: dict[str, Bounded[object, object]] = {}
    for judges in engine._rule_routes.values():
        for judge in judges:
            rule = judge.__self__  # type: ignore[attr-defined]
            for name, value in vars(rule).items():
                if isinstance(value, Bounded):
                    tables[f"{type(rule).__name__}.{name}"] = value
    return tables


def test_a_flood_of_distinct_clients_keeps_every_attack_rule_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 spoofed clients on the Internet each send a camera one ONVIF request with its own token (a
    nonce to remember) and one Basic login that is refused (a client/device pair to count), some with a
    factory password: every table stays at its bound (lowered here so that the flood overflows them)."""
    limit = 512
    for module, name in (
        (exploit, "MAX_NONCES"),
        (exploit, "MAX_PENDING"),
        (auth_default, "MAX_PENDING"),
        (auth_bruteforce, "MAX_PAIRS"),
    ):
        monkeypatch.setattr(module, name, limit)
    engine = Engine(POLICY, vendors())
    peak: dict[str, int] = {}

    def feed(frames: list[tuple[int, bytes]]) -> None:
        parser = CaptureParser("flood", 4096)  # each chunk is a pcap of its own
        for batch in [*parser.feed(pcap_bytes(sorted(frames, key=lambda f: f[0]))), *parser.flush()]:
            engine.feed(batch)
        for name, table in _rule_tables(engine).items():
            peak[name] = max(peak.get(name, 0), len(table))

    clients = 20_000
    for start in range(0, clients, 1000):
        frames: list[tuple[int, bytes]] = []
        for i in range(start, start + 1000):
            client = Host(f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", ATTACKER.mac)
            t = T0 + i * 5 * MS
            token = attacks.ws_username_token("admin", "x", f"nonce-{i:08d}".encode(), _created(t))
            password = "12345" if i % 7 == 0 else f"guess-{i}"
            refused = attacks.http_response(400, attacks.ONVIF_NOT_AUTHORIZED)
            login = attacks.http_request(
                "GET", "/", HIK.ip, authorization=attacks.basic_auth("admin", password)
            )
            frames += exchange(
                t,
                client,
                HIK,
                40000 + i % 20000,
                80,
                [
                    (attacks.onvif_request(HIK.ip, token), refused),
                    (login, attacks.http_response(401, extra='WWW-Authenticate: Basic realm="x"\r\n')),
                ],
            )  # fmt: skip
        feed(frames)
    engine.finish()
    tables = _rule_tables(engine)
    assert {"ExploitRule._nonces", "BruteforceRule.pairs", "DefaultCredentialsRule._pending"} <= set(tables)
    assert all(size <= limit for size in peak.values()), peak
    assert peak["ExploitRule._nonces"] == limit and tables["ExploitRule._nonces"].evicted >= clients - limit
    assert peak["BruteforceRule.pairs"] == limit and tables["BruteforceRule.pairs"].evicted >= clients - limit


def test_operations_a_model_refuses_with_403_are_not_password_guessing() -> None:
    # An ISAPI integration on the office PC polls with the right password; Hikvision answers 403 "Invalid
    # Operation" for inputs the model does not have (8 a round): the login works, the operation does not.
    realm = "IP Camera(C6239)"
    challenge = f'WWW-Authenticate: Digest qop="auth", realm="{realm}", nonce="4e54", stale="FALSE"\r\n'
    invalid = b"<ResponseStatus><statusCode>4</statusCode><statusString>Invalid Operation</statusString>"

    def authed(path: str) -> bytes:
        return attacks.http_request(
            "GET", path, HIK.ip, authorization=attacks.digest_auth_header("hass", realm, "4e54", path)
        )

    frames = []
    for n in range(2):
        turns = [
            (
                attacks.http_request("GET", "/ISAPI/System/status", HIK.ip),
                attacks.http_response(401, extra=challenge),
            ),
            (authed("/ISAPI/System/status"), attacks.http_response(200, b"<DeviceStatus/>")),
        ]
        turns += [
            (authed(f"/ISAPI/System/IO/inputs/{ch}01/status"), attacks.http_response(403, invalid))
            for ch in range(1, 9)
        ]
        frames += exchange(T0 + n * 30 * NS, OFFICE, HIK, 47000 + n, 80, turns)
    assert of_rule(alerts(frames), "auth.bruteforce") == []
