"""The outbound rules on real camera and site behaviour (a review of ``egress``, ``dns`` and ``upnp``): each
test failed before its fix.

- a camera watched because its IPv4 address is in a monitored network phoned home from its global IPv6
  address unjudged by ``egress.unexpected_destination`` (the rule asked the address, not the device);
- the site's own resolver forwarding upstream was a "resolver bypass" with advice to block everything but
  the site resolver: itself;
- a UPnP client reading or deleting mappings was reported as "opening itself to the Internet", and its
  Get took the identity of the AddPortMapping after it.
"""

from __future__ import annotations

from lab import payloads, personas, synth
from monitor.policy import SitePolicy
from tests.enginerun import run_frames
from tests.monitor.rules.traffic import GW, MS, NS, T0, Host, alerts, of_rule

AXIS = Host("10.20.0.30", "00:40:8c:00:00:30")  # Axis: not a watched vendor; watched by its address
AXIS_V6 = "2001:db8:20:0:240:8cff:fe00:30"


def _tcp6_open(
    t: int, mac: str, peer_mac: str, src: str, dst: str, sport: int, dport: int
) -> list[tuple[int, bytes]]:
    """A TCP connection opened over IPv6 and its first data."""

    def frame(
        ts: int,
        a: str,
        b: str,
        s: str,
        d: str,
        p: int,
        q: int,
        flags: int,
        seq: int,
        ack: int,
        data: bytes = b"",
    ) -> tuple[int, bytes]:
        return ts, synth.ether(
            a, b, 0x86DD, synth.ipv6(s, d, 6, synth.tcp(s, d, p, q, data, flags=flags, seq=seq, ack=ack))
        )

    syn, ack, psh = synth.TCP_SYN, synth.TCP_ACK, synth.TCP_PSH
    return [
        frame(t, mac, peer_mac, src, dst, sport, dport, syn, 1000, 0),
        frame(t + MS, peer_mac, mac, dst, src, dport, sport, syn | ack, 5000, 1001),
        frame(t + 2 * MS, mac, peer_mac, src, dst, sport, dport, ack, 1001, 5001),
        frame(t + 3 * MS, mac, peer_mac, src, dst, sport, dport, psh | ack, 1001, 5001, b"x"),
    ]


def test_a_watched_camera_s_ipv6_egress_is_judged() -> None:
    # Its IPv4 address (in the monitored network) makes it watched: the same device leaving from its global
    # IPv6 address is judged too.
    hello = synth.udp4_frame(
        AXIS.mac, GW.mac, AXIS.ip, GW.ip, 40000, 53, payloads.dns_query(1, "example.org")
    )
    frames = [(T0, hello), *_tcp6_open(T0 + NS, AXIS.mac, GW.mac, AXIS_V6, "2001:db8:dead::5", 41001, 8443)]
    (a,) = of_rule(alerts(frames), "egress.unexpected_destination")
    assert a["destination"]["ip"] == "2001:db8:dead::5" and a["device"]["id"] == "00-40-8c-00-00-30"  # type: ignore[index]


def test_the_site_resolver_forwarding_upstream_is_no_bypass() -> None:
    text = "site: s\nmonitored: {networks: [10.20.0.0/24]}\nresolvers: [10.20.0.3]\n"
    policy = SitePolicy.from_yaml(text)
    resolver = Host("10.20.0.3", "02:00:00:00:00:03")
    query = payloads.dns_query(7, "example.org")
    frames = [(T0, synth.udp4_frame(resolver.mac, GW.mac, resolver.ip, "9.9.9.9", 40000, 53, query))]
    _, _, records = run_frames(frames, policy=policy)
    assert not of_rule(records, "dns.resolver_bypass")


def _soap(action: str, arguments: str = "") -> bytes:
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<u:{action} xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">{arguments}</u:{action}>'
        "</s:Body></s:Envelope>"
    ).encode()
    return (
        f"POST /upnp/control/WANIPConn1 HTTP/1.1\r\nHost: 10.20.0.1:49152\r\nContent-Type: text/xml\r\n"
        f'SOAPACTION: "urn:schemas-upnp-org:service:WANIPConnection:1#{action}"\r\n'
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_reading_or_removing_mappings_is_not_opening_a_port() -> None:
    from lab import personas
    from tests.monitor.rules.traffic import HIK

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    add_args = (
        "<NewRemoteHost></NewRemoteHost><NewExternalPort>8000</NewExternalPort><NewProtocol>TCP</NewProtocol>"
        f"<NewInternalPort>8000</NewInternalPort><NewInternalClient>{HIK.ip}</NewInternalClient>"
    )
    turns = [
        (_soap("GetSpecificPortMappingEntry", "<NewExternalPort>8000</NewExternalPort>"), ok),
        (_soap("DeletePortMapping", "<NewExternalPort>8000</NewExternalPort>"), ok),
    ]
    reading = personas.tcp_exchange(T0, HIK.mac, GW.mac, HIK.ip, GW.ip, 40000, 49152, turns)
    assert not of_rule(alerts(reading), "upnp.port_mapping")
    # The client's usual sequence (get, delete, add): the add is the one reported, by its name.
    adding = personas.tcp_exchange(
        T0, HIK.mac, GW.mac, HIK.ip, GW.ip, 40000, 49152, [*turns, (_soap("AddPortMapping", add_args), ok)]
    )
    (a,) = of_rule(alerts(adding), "upnp.port_mapping")
    assert "AddPortMapping" in str(a["message"]) and "urn:schemas" not in str(a["message"])


def test_stun_to_a_server_allowed_by_name_is_not_nat_traversal() -> None:
    # A cloud VMS the policy allows by name uses WebRTC: the camera resolves its TURN server and sends STUN.
    from lab import personas
    from tests.monitor.rules.traffic import HIK

    text = (
        "site: s\nmonitored: {networks: [10.20.0.0/24], vendors: [hikvision]}\nresolvers: [10.20.0.1]\n"
        "allow:\n  - {name: dns, to: [10.20.0.1/32], ports: [53/udp]}\n"
        '  - {name: cloud vms, to: ["*.cloudvms.example.com"], ports: [3478/udp]}\n'
    )
    policy = SitePolicy.from_yaml(text)
    turn, name = "198.51.100.50", "turn.cloudvms.example.com"
    binding = bytes.fromhex("000100002112a442") + bytes(range(12))
    frames = personas.udp_pair(
        T0,
        HIK.mac,
        GW.mac,
        HIK.ip,
        GW.ip,
        40000,
        53,
        payloads.dns_query(1, name),
        payloads.dns_answer(1, name, turn),
    )
    frames += personas.udp_pair(T0 + 20 * MS, HIK.mac, GW.mac, HIK.ip, turn, 40001, 3478, binding, None)
    _, _, records = run_frames(frames, policy=policy)
    assert not of_rule(records, "p2p.nat_traversal") and not of_rule(records, "egress.unexpected_destination")
    # Not allowed by any name: the same STUN is NAT traversal.
    other = [f for f in frames if f[0] > T0 + 10 * MS]
    _, _, records = run_frames(other, policy=policy)
    assert of_rule(records, "p2p.nat_traversal")


def test_a_vendor_cloud_lookup_past_the_site_resolver_is_not_told_to_block_it_there() -> None:
    from tests.monitor.rules.traffic import XM

    query = payloads.dns_query(3, "pub-cfg.secu100.net")
    frames = [(T0, synth.udp4_frame(XM.mac, GW.mac, XM.ip, "114.114.114.114", 40000, 53, query))]
    (a,) = of_rule(alerts(frames), "dns.vendor_cloud")
    message = str(a["message"])
    assert (
        "not the site's resolver: block its outbound DNS" in message and "at the site resolver" not in message
    )


def test_the_listed_resolver_by_its_ipv6_link_local_address_is_no_bypass() -> None:
    # Router advertisements hand out the gateway's link-local address as the DNS server (RFC 8106): the same
    # MAC as the listed resolver 10.20.0.1.
    from tests.monitor.rules.traffic import HIK

    v4 = payloads.dns_query(1, "example.org")
    hello = personas.udp_pair(
        T0, HIK.mac, GW.mac, HIK.ip, GW.ip, 40000, 53, v4, payloads.dns_answer(1, "example.org", "192.0.2.9")
    )
    cam6, gw6 = "fe80::4619:b6ff:fe00:11", "fe80::1"
    ask = synth.ether(HIK.mac, GW.mac, 0x86DD, synth.ipv6(cam6, gw6, 17, synth.udp(cam6, gw6, 40001, 53, v4)))
    assert not of_rule(alerts([*hello, (T0 + NS, ask)]), "dns.resolver_bypass")
    # A resolver on the site the policy does not list is named as such, not as a hard-coded public one.
    other = synth.udp4_frame(HIK.mac, "02:00:00:00:00:04", HIK.ip, "10.20.0.4", 40002, 53, v4)
    (a,) = of_rule(alerts([(T0, other)]), "dns.resolver_bypass")
    assert "a resolver on the site the policy does not list" in str(a["message"])
