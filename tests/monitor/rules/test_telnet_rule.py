"""``device.telnet``: a watched device that accepts telnet (after the tcp/9530 enabler) or opens it (Mirai
spreading); a refused or unanswered telnet attempt is no session."""

from __future__ import annotations

import json

from lab import synth
from tests.monitor.rules.traffic import ATTACKER, GW, MS, T0, XM, Host, alerts, exchange, of_rule

RULE = "device.telnet"
NEGOTIATE = bytes([0xFF, 0xFD, 0x01, 0xFF, 0xFD, 0x1F, 0xFF, 0xFB, 0x01, 0xFF, 0xFB, 0x03])


def _session(client: Host, server: Host, port: int = 23) -> list[tuple[int, bytes]]:
    # The server speaks first; the client then types an account and a password.
    frames = exchange(T0, client, server, 40000, port, [(b"", NEGOTIATE + b"\r\nLocalHost login: ")])
    frames += [
        (
            T0 + 100 * MS,
            synth.tcp4_frame(
                client.mac, server.mac, client.ip, server.ip, 40000, port, b"root\r\n", seq=1001, ack=5001
            ),
        )
    ]
    return frames


def test_a_watched_device_accepting_telnet() -> None:
    (a,) = of_rule(alerts(_session(ATTACKER, XM)), RULE)
    assert (
        a["device"]["id"] == XM.mac_id and a["source"]["ip"] == ATTACKER.ip and a["destination"]["port"] == 23
    )  # type: ignore[index]
    assert a["network"]["direction"] == "inbound" and a["camwatch"]["telnet"]["banner"] == "LocalHost login:"  # type: ignore[index]
    assert "root" not in json.dumps(a)


def test_a_watched_device_opening_telnet() -> None:
    victim = Host("203.0.113.50", GW.mac)
    (a,) = of_rule(alerts(_session(XM, victim, 2323)), RULE)
    assert (
        a["source"]["ip"] == XM.ip
        and a["destination"]["ip"] == victim.ip
        and a["network"]["direction"] == "outbound"
    )  # type: ignore[index]
    assert "Mirai" in str(a["message"])


def test_refused_telnet_is_not_a_session() -> None:
    syn = synth.tcp4_frame(ATTACKER.mac, XM.mac, ATTACKER.ip, XM.ip, 40000, 23, flags=synth.TCP_SYN, seq=1)
    rst = synth.tcp4_frame(
        XM.mac, ATTACKER.mac, XM.ip, ATTACKER.ip, 23, 40000, flags=synth.TCP_RST | synth.TCP_ACK, ack=2
    )
    assert of_rule(alerts([(T0, syn), (T0 + MS, rst)]), RULE) == []


def test_telnet_between_devices_that_are_not_watched() -> None:
    a, b = Host("10.20.5.20", "00:14:22:00:00:20"), Host("10.20.5.21", "00:14:22:00:00:21")
    assert of_rule(alerts(_session(a, b)), RULE) == []
