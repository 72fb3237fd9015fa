"""``upnp.port_mapping`` names the mapping it saw: the vendor mapping its SDK port and a malware mapping
telnet and SOCKS on the same router are separate alerts, each saying which port it opens."""

from __future__ import annotations

from lab import payloads
from tests.monitor.rules.traffic import GW, HIK, MS, T0, Host, alerts, exchange, of_rule

RULE = "upnp.port_mapping"


def _mapping(t: int, port: int, cport: int) -> list[tuple[int, bytes]]:
    igd = Host(GW.ip, GW.mac)
    request = payloads.add_port_mapping(GW.ip, HIK.ip, external_port=port, internal_port=port)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    return exchange(t, HIK, igd, cport, 49152, [(request, answer)])


def test_each_mapping_is_its_own_alert_naming_its_ports() -> None:
    frames = _mapping(T0, 8000, 40000) + _mapping(T0 + 4 * 3600 * 1000 * MS, 23, 40001)
    frames += _mapping(T0 + 4 * 3600 * 1000 * MS + 10 * MS, 1080, 40002)
    found = of_rule(alerts(frames), RULE)
    assert len(found) == 3
    messages = [str(a["message"]) for a in found]
    for port, message in zip((8000, 23, 1080), messages, strict=True):
        assert f"AddPortMapping of tcp/{port} to {HIK.ip}:{port}" in message
    # The same mapping asked again is a repeat (the gate), not a new alert.
    again = _mapping(T0, 8000, 40000) + _mapping(T0 + 60_000 * MS, 8000, 40003)
    assert len(of_rule(alerts(again), RULE)) == 1
