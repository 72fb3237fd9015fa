"""``auth.bruteforce``: password guessing (HTTP Basic, RTSP, ONVIF, Dahua JSON-RPC) is one alert per
client and device with its count; a recorder's challenge-response, an admin's typo and a flood of distinct
clients are not alerts (and the flood does not grow the rule's memory)."""

from __future__ import annotations

import tracemalloc

import pytest

from lab import attacks, personas
from monitor.analyzers.logins import FAILURE, Login
from monitor.engine import Engine
from monitor.events import AppRequest, AppResponse
from monitor.rules.auth_bruteforce import MAX_PAIRS, THRESHOLD, BruteforceRule
from tests.enginerun import vendors
from tests.monitor.analyzers.recording import make_flow
from tests.monitor.rules.traffic import (
    ATTACKER,
    DAHUA,
    HIK,
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

RULE = "auth.bruteforce"


def _guess(
    t: int, client: Host, n: int, port: int = 40000, password: str = "guess"
) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    for i in range(n):
        req = attacks.http_request(
            "GET",
            "/ISAPI/Security/userCheck",
            HIK.ip,
            authorization=attacks.basic_auth("admin", f"{password}{i}"),
        )
        frames += exchange(
            t + i * 200_000_000,
            client,
            HIK,
            port + i,
            80,
            [(req, attacks.http_response(401, b"<userCheck/>"))],
        )
    return frames


def test_http_basic_guessing_is_one_alert_with_its_count() -> None:
    records = alerts(_guess(T0, ATTACKER, 25))
    (a,) = of_rule(records, RULE)
    assert a["event"]["severity"] == 4 and a["event"]["outcome"] == "failure"  # type: ignore[index]
    assert a["camwatch"]["bruteforce"]["failures"] == 25 and a["camwatch"]["bruteforce"]["accounts"] == [
        "admin"
    ]  # type: ignore[index]
    assert a["source"]["ip"] == ATTACKER.ip and a["device"]["id"] == HIK.mac_id  # type: ignore[index]
    assert a["user"] == {"name": "admin"} and "guess1" not in str(a)
    # Held 10 s after the 10th refusal (at 1.804 s): the count covers the burst.
    assert a["@timestamp"] == "2023-11-14T22:13:31.804Z" and a["event"]["start"] == "2023-11-14T22:13:20.004Z"  # type: ignore[index]


def test_the_same_client_guessing_again_days_later_is_reported_again() -> None:
    # A quiet hour ends an attack: the same address guessing two days later (a botnet's next round) is news.
    records = alerts(_guess(T0, ATTACKER, 15) + _guess(T0 + 2 * 86_400 * 10**9, ATTACKER, 15, port=50000))
    assert len(of_rule(records, RULE)) == 2


def test_guessing_that_then_succeeds_says_so() -> None:
    frames = _guess(T0, ATTACKER, 12)
    ok = attacks.http_request("GET", "/", HIK.ip, authorization=attacks.basic_auth("admin", "found-it"))
    frames += exchange(T0 + 3 * NS, ATTACKER, HIK, 41000, 80, [(ok, attacks.http_response(200, b"ok"))])
    (a,) = of_rule(alerts(frames), RULE)
    assert a["event"]["outcome"] == "success" and "succeeded" in str(a["message"])  # type: ignore[index]


def test_rtsp_guessing_with_digest() -> None:
    frames: list[tuple[int, bytes]] = []
    url = f"rtsp://{HIK.ip}/Streaming/Channels/101"
    for i in range(12):
        auth = f"Authorization: {attacks.digest_auth_header(f'user{i % 3}', 'Hik', 'n', url)}\r\n"
        refused = (
            b'RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest realm="Hik", nonce="n"\r\n\r\n'
        )
        frames += exchange(
            T0 + i * 100_000_000,
            ATTACKER,
            HIK,
            42000 + i,
            554,
            [(personas.rtsp_request("DESCRIBE", url, 2, auth), refused)],
        )
    (a,) = of_rule(alerts(frames), RULE)
    assert a["camwatch"]["bruteforce"]["protocols"] == ["rtsp"]  # type: ignore[index]
    assert sorted(a["camwatch"]["bruteforce"]["accounts"]) == ["user0", "user1", "user2"]  # type: ignore[index]


def test_dahua_json_rpc_and_onvif_failures_count() -> None:
    frames: list[tuple[int, bytes]] = []
    step1 = attacks.http_response(
        200, b'{"error":{"code":268632079},"params":{"random":"1","realm":"x"},"result":false}'
    )
    wrong = attacks.http_response(200, b'{"error":{"code":268632071},"result":false}')
    for i in range(6):
        first = attacks.http_request("POST", "/RPC2_Login", DAHUA.ip, body=attacks.rpc_login_body("admin"))
        second = attacks.http_request(
            "POST", "/RPC2_Login", DAHUA.ip, body=attacks.rpc_login_body("admin", password=f"{i:032d}")
        )
        frames += exchange(
            T0 + i * 100_000_000, ATTACKER, DAHUA, 43000 + i, 80, [(first, step1), (second, wrong)]
        )
    for i in range(6):
        header = attacks.ws_username_token("admin", f"pw{i}", f"n{i:015d}".encode(), "2023-11-14T22:13:21Z")
        frames += exchange(
            T0 + NS + i * 100_000_000,
            ATTACKER,
            DAHUA,
            44000 + i,
            80,
            [
                (
                    attacks.onvif_request(DAHUA.ip, header),
                    attacks.http_response(400, attacks.ONVIF_NOT_AUTHORIZED),
                )
            ],
        )
    (a,) = of_rule(alerts(frames), RULE)
    assert a["camwatch"]["bruteforce"]["failures"] == 12  # type: ignore[index]  # the 6 first steps are challenges


def test_normal_life_raises_nothing() -> None:
    frames: list[tuple[int, bytes]] = []
    challenge = attacks.http_response(401, extra='WWW-Authenticate: Digest realm="Hikvision", nonce="a"\r\n')
    # The recorder logs in with Digest every few seconds: a 401 challenge then 200, 30 times.
    for i in range(30):
        auth = attacks.digest_auth_header("admin", "Hikvision", "a", "/ISAPI/System/status")
        turns = [
            (attacks.http_request("GET", "/ISAPI/System/status", HIK.ip), challenge),
            (
                attacks.http_request("GET", "/ISAPI/System/status", HIK.ip, authorization=auth),
                attacks.http_response(200, b"ok"),
            ),
        ]
        frames += exchange(T0 + i * 2 * NS, RECORDER, HIK, 45000 + i, 80, turns)
    # An admin mistypes twice, then logs in.
    frames += _guess(T0 + 5 * NS, OFFICE, 2, port=46000)
    ok = attacks.http_request("GET", "/", HIK.ip, authorization=attacks.basic_auth("admin", "right"))
    frames += exchange(T0 + 6 * NS, OFFICE, HIK, 46500, 80, [(ok, attacks.http_response(200, b"ok"))])
    # Slow failures: nine within a minute, never ten.
    frames += _guess(T0, type(OFFICE)("10.20.5.11", OFFICE.mac), 9, port=47000)
    assert of_rule(alerts(frames), RULE) == []


def test_failures_spread_over_more_than_the_window_are_not_a_burst() -> None:
    frames = []
    for i in range(20):
        frames += _guess(T0 + i * 7 * NS, ATTACKER, 1, port=48000 + i)
    assert of_rule(alerts(frames), RULE) == []


def test_a_flood_of_distinct_clients_keeps_the_rule_bounded() -> None:
    """Each spoofed client fails once: the rule's table stays at its bound, and so does its memory."""
    engine = Engine(POLICY, vendors())
    rule = BruteforceRule(engine.site)

    def flood(start: int, n: int) -> None:
        for i in range(start, start + n):
            client = f"198.{18 + (i >> 16) % 2}.{(i >> 8) & 255}.{i & 255}"
            flow = make_flow(client, 40000, HIK.ip, 80, ts=T0 + i)
            login = Login("Basic", "admin")
            request = AppRequest(T0 + i, flow, True, "http", "GET", "/", 0, login)
            rule.judge(AppResponse(T0 + i, flow, False, "http", 401, request, FAILURE))

    flood(0, MAX_PAIRS)
    tracemalloc.start()
    flood(MAX_PAIRS, 4000)
    before, _ = tracemalloc.get_traced_memory()
    flood(MAX_PAIRS + 4000, 12000)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(rule.pairs) == MAX_PAIRS and rule.pairs.evicted == 16000
    assert after < before * 1.1 + 64 * 1024


@pytest.mark.parametrize("batch_size", [1, 13])
def test_batch_sizes(batch_size: int) -> None:
    frames = _guess(T0, ATTACKER, THRESHOLD + 2)
    want = [
        (a["event"]["id"], a["@timestamp"], a["camwatch"]["bruteforce"]["failures"])
        for a in of_rule(alerts(frames), RULE)
    ]  # type: ignore[index]
    got = [
        (a["event"]["id"], a["@timestamp"], a["camwatch"]["bruteforce"]["failures"])
        for a in of_rule(alerts(frames, batch_size), RULE)
    ]  # type: ignore[index]
    assert got == want and len(want) == 1


def test_the_recorder_retrying_a_stale_password_is_not_told_to_be_blocked() -> None:
    # The device's password was changed and the recorder still polls with the old one: the same account, one
    # client that is the site's viewer. Blocking it would stop the recording.
    (a,) = of_rule(alerts(_guess(T0, RECORDER, 13)), RULE)
    message = str(a["message"])
    assert "stored password for the device is probably out of date" in message and "Block" not in message
    # Another client doing the same is guessing.
    (b,) = of_rule(alerts(_guess(T0, OFFICE, 13)), RULE)
    assert "password guessing" in str(b["message"]) and f"Block {OFFICE.ip}" in str(b["message"])
