"""``device.bittorrent``: a watched device that speaks BitTorrent (a P2P botnet's DHT, uTP, the peer
protocol), on nDPI's real libtorrent capture and on a camera site; a DHT query that only reaches a camera is
not its doing."""

from __future__ import annotations

from lab import synth
from monitor.policy import SitePolicy
from tests.enginerun import run_engine
from tests.monitor.analyzers.test_bittorrent import _query
from tests.monitor.rules.test_video_on_a_trunk import _on_a_trunk
from tests.monitor.rules.traffic import ATTACKER, GW, HIK, MS, T0, alerts, exchange, of_rule
from tests.truth.paths import PCAPS

RULE = "device.bittorrent"
RESPONSE = b"d1:rd2:id20:" + bytes(20) + b"5:nodes0:e1:t2:aa1:y1:re"


def test_a_real_libtorrent_client_on_a_watched_network() -> None:
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [192.168.1.0/24]}\n", "p.yaml")
    _, flows, records = run_engine(PCAPS / "ndpi" / "bittorrent_utp.pcap", policy=policy)
    (a,) = of_rule(records, RULE)
    # The peer's DHT queries labelled the socket; the client's own packets on it are uTP.
    assert a["source"]["ip"] == "192.168.1.5" and a["destination"]["ip"] == "82.243.113.43"  # type: ignore[index]
    assert a["event"]["severity"] == 5 and "(it sent a uTP state)" in str(a["message"])  # type: ignore[index]
    assert [f.protocol for f in flows if f.src[0] != "127.0.0.1"] == ["bittorrent"]


def _dht(sender: str, payload: bytes) -> tuple[int, bytes]:
    if sender == "camera":
        return T0, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 40000, 6881, payload)
    return T0, synth.udp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 6881, 40000, payload)


def test_a_camera_that_sends_a_dht_query() -> None:
    (a,) = of_rule(alerts([_dht("camera", _query())]), RULE)
    assert a["device"]["id"] == HIK.mac_id and "DHT query (find_node)" in str(a["message"])  # type: ignore[index]


def test_a_dht_query_that_only_reaches_the_camera_is_not_its_doing_but_an_answer_is() -> None:
    asked = _dht("outside", _query())
    assert of_rule(alerts([asked]), RULE) == []
    answer = (T0 + MS, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 40000, 6881, RESPONSE))
    (a,) = of_rule(alerts([asked, answer]), RULE)
    assert "DHT response" in str(a["message"])


def test_the_peer_handshake_over_tcp_once_per_device_and_once_on_a_trunk() -> None:
    handshake = b"\x13BitTorrent protocol" + bytes(8) + bytes(40)
    frames = exchange(T0, HIK, ATTACKER, 40001, 51413, [(handshake, handshake)])
    frames += [
        (t + 10 * MS, f) for t, f in exchange(T0, HIK, ATTACKER, 40002, 51414, [(handshake, handshake)])
    ]
    (a,) = of_rule(alerts(frames), RULE)
    assert "peer handshake" in str(a["message"])
    assert len(of_rule(alerts(_on_a_trunk(frames)), RULE)) == 1


# A review of the analyzer (each failed before its fix) -----------------------------------------------------

NODE = bytes(range(20))
HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + NODE + b"-LT1200-" + bytes(12)


def test_a_camera_s_answer_to_an_outsider_s_bittorrent_is_not_its_bittorrent() -> None:
    # An outsider's DHT ping labels the camera's STUN socket; the camera's STUN success has uTP's shape.
    query = b"d1:ad2:id20:" + NODE + b"e1:q4:ping1:t2:aa1:y1:qe"
    stun_req = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
    stun_ok = (
        b"\x01\x01\x00\x0c\x21\x12\xa4\x42" + bytes(12) + b"\x00\x20\x00\x08\x00\x01\xe3\x2b\xe1\xba\xa5\x43"
    )
    frames = [
        (T0, synth.udp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 51413, 3478, query)),
        (T0 + 30 * MS, synth.udp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 51413, 3478, stun_req)),
        (T0 + 31 * MS, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 3478, 51413, stun_ok)),
    ]
    assert of_rule(alerts(frames), RULE) == []
    # A handshake to its TCP service, answered with the service's own binary reply (uTP runs over UDP only).
    assert (
        of_rule(
            alerts(exchange(T0, ATTACKER, HIK, 51413, 8000, [(HANDSHAKE, b"\x01\x00" + bytes(254))])), RULE
        )
        == []
    )


def test_a_bep44_put_with_a_nested_stored_value() -> None:
    # BEP 44 lets the stored value be any bencoded value of up to 1000 bytes (a botnet's command channel).
    v = b"l" * 7 + b"i1e" + b"e" * 7
    args = b"d2:id20:" + NODE + b"5:token8:tok123451:v" + v + b"e"
    put = b"d1:a" + args + b"1:q3:put1:t2:aa1:y1:qe"
    frame = synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 40000, 6881, put)
    (a,) = of_rule(alerts([(T0, frame)]), RULE)
    assert "DHT query (put)" in str(a["message"])


def test_a_camera_s_dht_query_over_ipv6_and_its_answer_met_first() -> None:
    # A bot on the camera's global IPv6 address; the capture starts with the peer's response, the camera's
    # own query comes later on the same socket.
    cam6, peer6 = "2001:db8:20::11", "2001:db8:beef::9"

    def dht(src: str, dst: str, sport: int, dport: int, payload: bytes, smac: str, dmac: str) -> bytes:
        return synth.ether(
            smac, dmac, 0x86DD, synth.ipv6(src, dst, 17, synth.udp(src, dst, sport, dport, payload))
        )

    frames = [
        (T0, dht(peer6, cam6, 6881, 40000, RESPONSE, GW.mac, HIK.mac)),
        (T0 + MS, dht(cam6, peer6, 40000, 6881, _query(), HIK.mac, GW.mac)),
    ]
    (a,) = of_rule(alerts(frames), RULE)
    assert a["source"]["ip"] == cam6 and "DHT query (find_node)" in str(a["message"])  # type: ignore[index]
