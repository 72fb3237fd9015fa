"""MQTT analyzer: golden checks against Zeek and Arkime, a hand-built EZVIZ CONNECT, malformed input.

Golden sources: Zeek `mqtt_connect.log`, `mqtt_publish.log`, `mqtt_subscribe.log` (mqtt.pcap) and Arkime
`mqtt_big.test` (client id, version, will topic, CONNACK code, packet types, topics, QoS levels, connect
flags). The nDPI and suricata-verify MQTT captures have no per-field truth; they must parse cleanly.
The EZVIZ login (device serial as user name, docs/design.md §7) is hand-built:
`tests/data/fixtures/mqtt/`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError
from monitor.analyzers.mqtt import (
    PACKET_TYPES,
    MqttConnack,
    MqttConnect,
    MqttMessage,
    MqttPacket,
    MqttPublish,
    MqttStreamParser,
    MqttSubscribe,
    MqttUnsubscribe,
    looks_like,
    parse,
)
from tests.monitor.analyzers.payloads import tcp_streams
from tests.monitor.analyzers.sniffing import sniffer_verdicts
from tests.truth.arkime import read_arkime_test
from tests.truth.paths import arkime_pairs, pcap, zeek_log_pairs
from tests.truth.zeek import ZeekValue, as_int, as_list, as_str, read_zeek_log

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "mqtt"

Key = tuple[str, int, str, int]


def _feed(
    data: bytes, size: int, level: int = 0, max_buffer: int = 16384
) -> tuple[list[MqttMessage], MqttStreamParser]:
    parser = MqttStreamParser(max_buffer=max_buffer, protocol_level=level)
    out: list[MqttMessage] = []
    for i in range(0, max(len(data), 1), size):
        out.extend(parser.feed(data[i : i + size]))
    return out, parser


def _conversation(streams: dict[Key, bytes], key: Key) -> tuple[list[MqttMessage], list[MqttMessage]]:
    client, cparser = _feed(streams.get(key, b""), 1448)
    level = cparser.protocol_level
    server, sparser = _feed(streams.get((key[2], key[3], key[0], key[1]), b""), 1448, level)
    assert cparser.error is None and sparser.error is None, (cparser.error, sparser.error)
    return client, server


def _type_name(m: MqttMessage) -> str:
    if isinstance(m, MqttPacket):
        return m.name
    return {
        MqttConnect: "CONNECT",
        MqttConnack: "CONNACK",
        MqttPublish: "PUBLISH",
        MqttSubscribe: "SUBSCRIBE",
        MqttUnsubscribe: "UNSUBSCRIBE",
    }[type(m)]


def _table(title: str, rows: list[tuple[str, int, int]]) -> None:
    print(f"\n{title}")
    print(f"  {'check':<36} {'checked':>8} {'agree':>8}")
    for check, checked, agree in rows:
        print(f"  {check:<36} {checked:>8} {agree:>8}")


# --- golden: Zeek -------------------------------------------------------------------------------------

_ZEEK_DIR = next(
    (log.parent for cap, log in zeek_log_pairs() if log.name == "mqtt_connect.log"),
    None,
)


def _zeek_key(row: dict[str, ZeekValue]) -> Key:
    return (
        as_str(row["id.orig_h"]) or "",
        as_int(row["id.orig_p"]) or 0,
        as_str(row["id.resp_h"]) or "",
        as_int(row["id.resp_p"]) or 0,
    )


def test_zeek_mqtt_logs() -> None:
    assert _ZEEK_DIR is not None
    streams = tcp_streams(pcap("zeek/mqtt.pcap"))
    rows: list[tuple[str, int, int]] = []

    checked = agree = 0
    for row in read_zeek_log(_ZEEK_DIR / "mqtt_connect.log").rows:
        client, server = _conversation(streams, _zeek_key(row))
        connect = next(m for m in client if isinstance(m, MqttConnect))
        connack = next(m for m in server if isinstance(m, MqttConnack))
        expected = (
            as_str(row["proto_name"]),
            as_str(row["proto_version"]),
            as_str(row["client_id"]),
            as_str(row["connect_status"]),
            as_str(row["will_topic"]),
        )
        status = "Connection Accepted" if connack.return_code == 0 else f"refused {connack.return_code}"
        got = (connect.protocol_name, connect.version, connect.client_id, status, connect.will_topic)
        checked += 1
        agree += expected == got
        assert expected == got
    rows.append(("mqtt_connect.log", checked, agree))

    checked = agree = 0
    seen: dict[tuple[Key, bool], int] = {}
    for row in read_zeek_log(_ZEEK_DIR / "mqtt_publish.log").rows:
        key = _zeek_key(row)
        from_client = as_str(row["from_client"]) == "T"
        client, server = _conversation(streams, key)
        publishes = [m for m in (client if from_client else server) if isinstance(m, MqttPublish)]
        index = seen.get((key, from_client), 0)
        seen[(key, from_client)] = index + 1
        pub = publishes[index]
        expected_pub = (as_str(row["topic"]), as_str(row["retain"]) == "T", as_int(row["payload_len"]))
        got_pub = (pub.topic, pub.retain, pub.payload_length)
        checked += 1
        agree += expected_pub == got_pub
        assert expected_pub == got_pub
        assert as_str(row["qos"]) == "at most once" and pub.qos == 0
    rows.append(("mqtt_publish.log", checked, agree))

    checked = agree = 0
    for row in read_zeek_log(_ZEEK_DIR / "mqtt_subscribe.log").rows:
        client, _ = _conversation(streams, _zeek_key(row))
        sub = next(m for m in client if isinstance(m, MqttSubscribe))
        expected_sub = (as_list(row["topics"]), as_list(row["qos_levels"]))
        got_sub = ([t for t, _ in sub.topics], [str(q) for _, q in sub.topics])
        checked += 1
        agree += expected_sub == got_sub
        assert expected_sub == got_sub
    rows.append(("mqtt_subscribe.log", checked, agree))
    _table("Zeek mqtt.pcap vs camwatch mqtt", rows)


# --- golden: Arkime -----------------------------------------------------------------------------------


def test_arkime_mqtt_big() -> None:
    pairs = [(c, t) for c, t in arkime_pairs() if c.name == "mqtt_big.pcap"]
    assert pairs
    capture, truth = pairs[0]
    (session,) = read_arkime_test(truth)
    expected = session["mqtt"]
    src, dst = session["source"], session["destination"]
    streams = tcp_streams(capture)
    client, server = _conversation(streams, (src["ip"], src["port"], dst["ip"], dst["port"]))
    every = client + server
    connect = next(m for m in client if isinstance(m, MqttConnect))
    connack = next(m for m in server if isinstance(m, MqttConnack))
    topics: set[str] = set()
    qos: set[str] = set()
    for m in every:
        if isinstance(m, MqttPublish):
            topics.add(m.topic)
            qos.add(str(m.qos))
        elif isinstance(m, MqttSubscribe):
            topics.update(t for t, _ in m.topics)
            qos.update(str(q & 3) for _, q in m.topics)
        elif isinstance(m, MqttUnsubscribe):
            topics.update(m.topics)
    flags = {"cleanSession"} if connect.clean_session else set()
    if connect.will_topic is not None:
        flags.add("hasWill")
    checks = [
        ("clientId", expected["clientId"], [connect.client_id]),
        ("version", expected["version"], [connect.version]),
        ("willTopic", expected["willTopic"], [connect.will_topic]),
        ("connackCode", expected["connackCode"], [connack.return_code]),
        ("type", expected["type"], sorted({_type_name(m) for m in every})),
        ("topic", expected["topic"], sorted(topics)),
        ("qos", expected["qos"], sorted(qos)),
        ("flags", expected["flags"], sorted(flags)),
    ]
    _table(
        "Arkime mqtt_big.test vs camwatch mqtt", [(name, 1, int(want == got)) for name, want, got in checks]
    )
    for name, want, got in checks:
        assert want == got, name
    # The big PUBLISH payloads (several kB) were reported with their sizes, not buffered.
    assert max(m.payload_length for m in every if isinstance(m, MqttPublish)) > 5000


@pytest.mark.parametrize("max_buffer", [64, 256, 4096])
def test_arkime_mqtt_big_small_buffer(max_buffer: int) -> None:
    """With a buffer smaller than the big PUBLISHes, topics and sizes still come out, bounded."""
    streams = tcp_streams(pcap("arkime/mqtt_big.pcap"))
    data = streams[("192.168.1.100", 45678, "192.168.1.1", 1883)]
    full, _ = _feed(data, 1448)
    small, parser = _feed(data, 1448, max_buffer=max_buffer)
    assert parser.error is None and parser.buffered <= max_buffer + 5
    assert [(m.topic, m.payload_length) for m in small if isinstance(m, MqttPublish)] == [
        (m.topic, m.payload_length) for m in full if isinstance(m, MqttPublish)
    ]
    assert [_type_name(m) for m in small] == [_type_name(m) for m in full]


@pytest.mark.parametrize(
    "rel", ["ndpi/coap_mqtt.pcap", "suricata-verify/mqtt311-pub-qos1/input.pcap", "zeek/mqtt.pcap"]
)
def test_corpus_mqtt_flows_parse_cleanly(rel: str) -> None:
    streams = tcp_streams(pcap(rel))
    keys = [k for k in streams if 1883 in (k[1], k[3]) or 17501 in (k[1], k[3])]
    assert keys
    total = 0
    for key in keys:
        msgs, parser = _feed(streams[key], 1448)
        assert parser.error is None and parser.buffered == 0, (key, parser.error)
        total += len(msgs)
    assert total > 0


# --- hand-built: EZVIZ login ---------------------------------------------------------------------------


def test_ezviz_connect_serial_as_user_name() -> None:
    data = (FIXTURES / "ezviz_connect.bin").read_bytes()
    assert looks_like(data)
    msg = MqttConnect.parse(data)
    assert (msg.protocol_name, msg.version, msg.client_id) == ("MQTT", "3.1.1", "F12345678_ezviz")
    assert msg.username == "F12345678" and msg.has_username and msg.has_password
    assert (msg.keepalive, msg.clean_session, msg.will_topic) == (120, True, None)
    assert "6e8f5c1a" not in repr(msg)  # the password is never kept
    ack = parse((FIXTURES / "ezviz_connack.bin").read_bytes())
    assert ack == MqttConnack(False, 0)


# --- behaviour --------------------------------------------------------------------------------------------


def _s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def _packet(first: int, body: bytes) -> bytes:
    n = len(body)
    length = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(length) + body


def test_mqtt5_connect_publish_subscribe() -> None:
    props = b"\x05\x11\x00\x00\x0e\x10"  # session expiry interval
    will_props = b"\x00"
    connect = _packet(
        0x10,
        _s(b"MQTT")
        + bytes([5, 0b11101110])
        + b"\x00\x3c"
        + props
        + _s(b"cam-1")
        + will_props
        + _s(b"cams/cam-1/status")
        + _s(b"offline")
        + _s(b"SERIAL9")
        + _s(b"pw"),
    )
    publish = _packet(0x32, _s(b"cams/cam-1/alarm") + b"\x00\x07" + b"\x02\x01\x01" + b"payload")
    subscribe = _packet(0x82, b"\x00\x08" + b"\x00" + _s(b"cmd/#") + b"\x01")
    connack = _packet(0x20, b"\x01\x00\x03\x21\x00\x0a")
    msgs, parser = _feed(connect + publish + subscribe, 7)
    conn, pub, sub = msgs
    assert isinstance(conn, MqttConnect) and conn.version == "5.0" and conn.will_topic == "cams/cam-1/status"
    assert (conn.will_qos, conn.will_retain, conn.username) == (1, True, "SERIAL9")
    assert pub == MqttPublish("cams/cam-1/alarm", 1, False, False, 7, 7)
    assert sub == MqttSubscribe(8, (("cmd/#", 1),))
    assert parser.protocol_level == 5
    assert parse(connack) == MqttConnack(True, 0)  # CONNACK properties are recognised by their length


def test_mqtt31_and_bridge_level() -> None:
    connect = _packet(0x10, _s(b"MQTT") + bytes([0x84, 0x02]) + b"\x00\x0a" + _s(b"bridge-1"))
    msg = parse(connect)
    assert isinstance(msg, MqttConnect) and msg.bridge and msg.protocol_level == 4


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"\x00\x00", "reserved packet type"),
        (b"\x36\x00", "QoS 3"),
        (b"\x80\x00", "flags"),
        (b"\x30\xff\xff\xff\xff\x01", "longer than 4"),
        (_packet(0x10, _s(b"MQTT") + bytes([9, 2]) + b"\x00\x0a" + _s(b"x")), "level"),
        (_packet(0x10, _s(b"HTTP") + bytes([4, 2]) + b"\x00\x0a" + _s(b"x")), "protocol"),
        (_packet(0x10, _s(b"MQTT") + bytes([4, 3]) + b"\x00\x0a" + _s(b"x")), "reserved flag"),
        (_packet(0x10, _s(b"MQTT") + bytes([4, 0x18]) + b"\x00\x0a" + _s(b"x")), "will flags"),
        (_packet(0x10, _s(b"MQTT") + bytes([4, 2]) + b"\x00\x0a" + _s(b"x") + b"junk"), "after the payload"),
        (_packet(0x10, _s(b"MQTT") + bytes([4, 2]) + b"\x00\x0a" + _s(b"\xff\xfe")), "UTF-8"),
        (_packet(0x82, b"\x00\x01"), "without a topic"),
        (_packet(0x20, b"\x02\x00"), "reserved acknowledge"),
        (b"\x10\x05\x00", "truncated"),
        (b"\x10", "truncated"),
    ],
)
def test_malformed_examples(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        parse(data)


def test_looks_like() -> None:
    assert looks_like(_packet(0x10, _s(b"MQIsdp") + bytes([3, 2]) + b"\x00\x0a" + _s(b"x")))
    assert not looks_like(b"\x10\x80") and not looks_like(b"\x20\x02\x00\x00") and not looks_like(b"")
    assert not looks_like(b"\x10\x0c\x00\x04MQTX")


def test_looks_like_mid_session() -> None:
    """A connection captured after its CONNECT: whole packets, one of them carrying a printable topic."""
    publish = _packet(0x32, _s(b"Bus17Cmd") + b"\x00\x02" + b'{"messageType":"UPDATE"}')
    assert looks_like(publish) and looks_like(_packet(0x30, _s(b"cam/1/state")))  # QoS 1; QoS 0, no payload
    assert looks_like(_packet(0x40, b"\x00\x02") + publish)  # a PUBACK and a PUBLISH in one segment
    assert looks_like(_packet(0x82, b"\x00\x01" + _s(b"cam/+/state") + b"\x01"))  # SUBSCRIBE
    assert looks_like(_packet(0xA2, b"\x00\x01" + _s(b"cam/1")))  # UNSUBSCRIBE
    # Too little to name a protocol: pings, acknowledgements, a CONNACK on their own.
    for weak in (b"\xc0\x00", b"\xd0\x00", b"\x40\x02\x00\x02", b"\x20\x02\x00\x00", b"\xc0\x00\xd0\x00"):
        assert not looks_like(weak), weak
    assert not looks_like(publish[:-1]) and not looks_like(publish + b"\x00")  # must fill the payload exactly
    assert not looks_like(_packet(0x30, _s(b"") + b"x"))  # empty topic
    assert not looks_like(_packet(0x30, _s(b"a\x00b") + b"x"))  # a control character in the topic
    assert not looks_like(_packet(0x30, _s(b"\xff\xfe") + b"x"))  # not UTF-8
    assert not looks_like(_packet(0x36, _s(b"a") + b"\x00\x01"))  # QoS 3
    assert not looks_like(_packet(0x82, b"\x00\x01"))  # SUBSCRIBE without a topic filter
    assert not looks_like(_packet(0x80, b"\x00\x01" + _s(b"a") + b"\x00"))  # SUBSCRIBE flags must be 0b0010
    assert not looks_like(_packet(0x10, b"\x00\x04MQTX\x04\x02\x00\x3c") + publish)  # a bad CONNECT first
    # Text protocols: the topic length would be two ASCII bytes (>= 0x2020), longer than the packet.
    assert not looks_like(b"220 ftp.example.com FTP server ready\r\n") and not looks_like(b"2 x" * 20)


def test_looks_like_agrees_with_ndpi_flow_by_flow() -> None:
    """It fires on every MQTT flow nDPI found (3 of the 4 in coap_mqtt.pcap start after their CONNECT) and
    on no TCP flow nDPI gives another protocol."""
    verdicts = sniffer_verdicts(looks_like, "TCP")
    mqtt_flows = [v for v in verdicts if v.flow.protocol == "MQTT"]
    assert len(mqtt_flows) >= 4
    assert [str(v) for v in mqtt_flows if not v.fired] == []
    assert [str(v) for v in verdicts if v.fired and v.flow.protocol != "MQTT"] == []


# --- malformed input: only AnalyzerError -------------------------------------------------------------------


def _samples() -> list[bytes]:
    samples = [p.read_bytes() for p in sorted(FIXTURES.glob("*.bin"))]
    for rel in ("zeek/mqtt.pcap", "arkime/mqtt_big.pcap"):
        samples.extend(v[:3000] for v in tcp_streams(pcap(rel)).values() if v)
    return samples


_SAMPLES = _samples()


def _parse_quietly(data: bytes, level: int = 0) -> None:
    with contextlib.suppress(AnalyzerError):
        parse(data, level)


@pytest.mark.parametrize("index", range(len(_SAMPLES)))
def test_truncation_at_every_length(index: int) -> None:
    data = _SAMPLES[index]
    for cut in range(len(data) + 1):
        _parse_quietly(data[:cut])
        _parse_quietly(data[:cut], 5)


@given(st.binary(max_size=400), st.sampled_from([0, 3, 4, 5]))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_raise_only_analyzer_error(data: bytes, level: int) -> None:
    _parse_quietly(data, level)
    for first in (0x10, 0x20, 0x32, 0x82, 0xA2):
        _parse_quietly(_packet(first, data), level)
    looks_like(data)


@given(st.sampled_from(_SAMPLES), st.integers(0, 10**6), st.binary(min_size=1, max_size=6))
@settings(max_examples=1000, deadline=None)
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, junk: bytes) -> None:
    where %= len(data) + 1
    mutated = data[:where] + junk + data[where + len(junk) :]
    _parse_quietly(mutated)
    _feed(mutated, 33)


@given(st.lists(st.binary(max_size=3000), max_size=40))
@settings(max_examples=200, deadline=None)
def test_stream_bounded_on_garbage(chunks: list[bytes]) -> None:
    parser = MqttStreamParser(max_buffer=1024)
    for chunk in chunks:
        parser.feed(chunk)
        assert parser.buffered <= 1024 + 5


@given(st.sampled_from(_SAMPLES), st.lists(st.integers(1, 400), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_stream_segmentation_does_not_matter(data: bytes, sizes: list[int]) -> None:
    whole, _ = _feed(data, len(data) or 1)
    parser = MqttStreamParser()
    got: list[MqttMessage] = []
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        got.extend(parser.feed(data[pos : pos + size]))
        pos += size
        i += 1
    assert got == whole


def test_packet_type_names() -> None:
    assert PACKET_TYPES[1] == "CONNECT" and MqttPacket(12, 0, 0).name == "PINGREQ"
