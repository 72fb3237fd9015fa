"""MQTT 3.1 / 3.1.1 / 5.0 control packets: CONNECT identities, PUBLISH and SUBSCRIBE topics.

Cameras phone home over MQTT: EZVIZ devices log in to their cloud broker (tcp/31006) with the device
serial as user name. What camwatch keeps is who connects (client id, user name, protocol version, will
topic) and what topics flow; never a password, never a message payload.

:func:`parse` reads the first packet of a buffer; :class:`MqttStreamParser` follows one direction of a
connection (packets span segments; big PUBLISH payloads are skipped, not buffered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.analyzers.reader import ByteReader
from monitor.protocol import Context, ProtocolSpec, flow_state

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = [
    "PACKET_TYPES",
    "MqttConnack",
    "MqttConnect",
    "MqttMessage",
    "MqttPacket",
    "MqttPublish",
    "MqttStreamParser",
    "MqttSubscribe",
    "MqttUnsubscribe",
    "looks_like",
    "parse",
]

PROTOCOL: Final = "mqtt"

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBREL: Final = 6
SUBSCRIBE: Final = 8
UNSUBSCRIBE: Final = 10
AUTH: Final = 15

PACKET_TYPES: Final = {
    1: "CONNECT",
    2: "CONNACK",
    3: "PUBLISH",
    4: "PUBACK",
    5: "PUBREC",
    6: "PUBREL",
    7: "PUBCOMP",
    8: "SUBSCRIBE",
    9: "SUBACK",
    10: "UNSUBSCRIBE",
    11: "UNSUBACK",
    12: "PINGREQ",
    13: "PINGRESP",
    14: "DISCONNECT",
    15: "AUTH",
}
# Packets whose fixed-header flags must be 0b0010 (MQTT 3.1.1 2.2.2); PUBLISH has its own; others 0.
_FLAGS_0010: Final = frozenset({PUBREL, SUBSCRIBE, UNSUBSCRIBE})
MAX_REMAINING: Final = 268_435_455  # the largest Variable Byte Integer
MAX_BUFFER: Final = 16384
_MAX_TOPICS: Final = 256

_PROTOCOL_NAMES: Final = {"MQTT": (4, 5), "MQIsdp": (3,)}
_VERSIONS: Final = {3: "3.1", 4: "3.1.1", 5: "5.0"}


class _Reader(ByteReader):
    """Bounds-checked big-endian reads over ``data[pos:end]``; every overrun is an AnalyzerError."""

    __slots__ = ()
    protocol = PROTOCOL

    def binary(self, field: str) -> bytes:
        return self.take(self.uint(2, f"{field} length"), field)

    def string(self, field: str) -> str:
        raw = self.binary(field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AnalyzerError(PROTOCOL, f"{self.what}: {field} is not UTF-8") from None

    def varint(self, field: str) -> int:
        value = 0
        for i in range(4):
            byte = self.uint(1, field)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise AnalyzerError(PROTOCOL, f"{self.what}: {field} longer than 4 bytes")

    def skip_properties(self) -> None:
        """Skip an MQTT 5 property block (Variable Byte Integer length + properties)."""
        self.take(self.varint("properties length"), "properties")


@dataclass(frozen=True, slots=True)
class MqttConnect:
    """A CONNECT packet. ``username`` is kept (EZVIZ puts the device serial there); the password is not."""

    protocol_name: str
    protocol_level: int
    client_id: str
    username: str | None
    has_password: bool
    keepalive: int
    clean_session: bool
    will_topic: str | None
    will_qos: int
    will_retain: bool
    bridge: bool  # the top bit of the level: a broker bridge (mosquitto), not a device

    @property
    def version(self) -> str:
        """``"3.1"``, ``"3.1.1"`` or ``"5.0"``."""
        return _VERSIONS.get(self.protocol_level, str(self.protocol_level))

    @property
    def has_username(self) -> bool:
        return self.username is not None

    @classmethod
    def parse(cls, data: bytes) -> MqttConnect:
        """Parse a complete CONNECT packet (fixed header included)."""
        packet = parse(data)
        if not isinstance(packet, MqttConnect):
            raise AnalyzerError(PROTOCOL, "not a CONNECT packet")
        return packet


@dataclass(frozen=True, slots=True)
class MqttConnack:
    """A CONNACK: session-present flag and the return code (MQTT 5: reason code)."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class MqttPublish:
    """A PUBLISH: topic, QoS, flags and the size of the payload (which is not kept)."""

    topic: str
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    payload_length: int


@dataclass(frozen=True, slots=True)
class MqttSubscribe:
    """A SUBSCRIBE: (topic filter, requested QoS / MQTT 5 options byte) pairs."""

    packet_id: int
    topics: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class MqttUnsubscribe:
    """An UNSUBSCRIBE: the topic filters."""

    packet_id: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MqttPacket:
    """Any other packet (or one too big to buffer): type, fixed-header flags and remaining length."""

    packet_type: int
    flags: int
    remaining_length: int

    @property
    def name(self) -> str:
        return PACKET_TYPES.get(self.packet_type, str(self.packet_type))


MqttMessage = MqttConnect | MqttConnack | MqttPublish | MqttSubscribe | MqttUnsubscribe | MqttPacket


def _fixed_header(data: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """(type, flags, remaining length, header size) at ``pos``, or None when the header is incomplete."""
    if len(data) - pos < 2:
        return None
    first = data[pos]
    ptype, flags = first >> 4, first & 0x0F
    if ptype == 0:
        raise AnalyzerError(PROTOCOL, "reserved packet type 0")
    if ptype == PUBLISH:
        if (flags >> 1) & 3 == 3:
            raise AnalyzerError(PROTOCOL, "PUBLISH with QoS 3")
    elif flags != (0b0010 if ptype in _FLAGS_0010 else 0):
        raise AnalyzerError(PROTOCOL, f"{PACKET_TYPES[ptype]} with fixed-header flags 0x{flags:x}")
    value = 0
    for i in range(4):
        if pos + 1 + i >= len(data):
            return None
        byte = data[pos + 1 + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return ptype, flags, value, 2 + i
    raise AnalyzerError(PROTOCOL, "remaining length longer than 4 bytes")


def _connect(r: _Reader) -> MqttConnect:
    name = r.string("protocol name")
    raw_level = r.uint(1, "protocol level")
    level, bridge = raw_level & 0x7F, bool(raw_level & 0x80)
    if name not in _PROTOCOL_NAMES or level not in _PROTOCOL_NAMES[name]:
        raise AnalyzerError(PROTOCOL, f"CONNECT: protocol {name[:20]!r} level {raw_level}")
    flags = r.uint(1, "connect flags")
    if flags & 0x01:
        raise AnalyzerError(PROTOCOL, "CONNECT: reserved flag set")
    will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3 or (not will and (will_qos or will_retain)):
        raise AnalyzerError(PROTOCOL, f"CONNECT: invalid will flags 0x{flags:02x}")
    keepalive = r.uint(2, "keepalive")
    if level == 5:
        r.skip_properties()
    client_id = r.string("client id")
    will_topic: str | None = None
    if will:
        if level == 5:
            r.skip_properties()
        will_topic = r.string("will topic")
        r.binary("will payload")
    username = r.string("user name") if flags & 0x80 else None
    has_password = bool(flags & 0x40)
    if has_password:
        r.binary("password")  # read past it; never kept
    if r.left():
        raise AnalyzerError(PROTOCOL, f"CONNECT: {r.left()} bytes after the payload")
    return MqttConnect(
        protocol_name=name,
        protocol_level=level,
        client_id=client_id,
        username=username,
        has_password=has_password,
        keepalive=keepalive,
        clean_session=bool(flags & 0x02),
        will_topic=will_topic,
        will_qos=will_qos,
        will_retain=will_retain,
        bridge=bridge,
    )


def _connack(r: _Reader, level: int) -> MqttConnack:
    ack_flags = r.uint(1, "acknowledge flags")
    if ack_flags & 0xFE:
        raise AnalyzerError(PROTOCOL, f"CONNACK: reserved acknowledge flags 0x{ack_flags:02x}")
    code = r.uint(1, "return code")
    if r.left() and (level == 5 or level == 0):
        r.skip_properties()
    if r.left():
        raise AnalyzerError(PROTOCOL, f"CONNACK: {r.left()} unexpected bytes")
    return MqttConnack(bool(ack_flags & 1), code)


def _publish(r: _Reader, flags: int, level: int, remaining: int) -> MqttPublish:
    qos = (flags >> 1) & 3
    start = r.pos
    topic = r.string("topic")
    packet_id = r.uint(2, "packet id") if qos else None
    if level == 5:
        r.skip_properties()
    return MqttPublish(
        topic=topic,
        qos=qos,
        retain=bool(flags & 1),
        dup=bool(flags & 8),
        packet_id=packet_id,
        payload_length=remaining - (r.pos - start),
    )


def _subscribe(r: _Reader, level: int) -> MqttSubscribe:
    packet_id = r.uint(2, "packet id")
    if level == 5:
        r.skip_properties()
    topics: list[tuple[str, int]] = []
    while r.left():
        if len(topics) >= _MAX_TOPICS:
            raise AnalyzerError(PROTOCOL, f"SUBSCRIBE: more than {_MAX_TOPICS} topics")
        topics.append((r.string("topic filter"), r.uint(1, "options")))
    if not topics:
        raise AnalyzerError(PROTOCOL, "SUBSCRIBE without a topic filter")
    return MqttSubscribe(packet_id, tuple(topics))


def _unsubscribe(r: _Reader, level: int) -> MqttUnsubscribe:
    packet_id = r.uint(2, "packet id")
    if level == 5:
        r.skip_properties()
    topics: list[str] = []
    while r.left():
        if len(topics) >= _MAX_TOPICS:
            raise AnalyzerError(PROTOCOL, f"UNSUBSCRIBE: more than {_MAX_TOPICS} topics")
        topics.append(r.string("topic filter"))
    if not topics:
        raise AnalyzerError(PROTOCOL, "UNSUBSCRIBE without a topic filter")
    return MqttUnsubscribe(packet_id, tuple(topics))


def _packet(ptype: int, flags: int, remaining: int, body: bytes, level: int) -> MqttMessage:
    """Parse a packet from its body; for PUBLISH ``body`` may be just a prefix of the ``remaining`` bytes."""
    name = PACKET_TYPES[ptype]
    r = _Reader(body, name, 0, len(body))
    if ptype == PUBLISH:
        return _publish(r, flags, level, remaining)
    if len(body) != remaining:
        return MqttPacket(ptype, flags, remaining)  # too big to have been buffered: type only
    if ptype == CONNECT:
        return _connect(r)
    if ptype == CONNACK:
        return _connack(r, level)
    if ptype == SUBSCRIBE:
        return _subscribe(r, level)
    if ptype == UNSUBSCRIBE:
        return _unsubscribe(r, level)
    return MqttPacket(ptype, flags, remaining)


def parse(data: bytes, protocol_level: int = 0) -> MqttMessage:
    """The first packet of ``data``, which must be complete.

    ``protocol_level`` (from the connection's CONNECT; 0 when unknown) decides whether MQTT 5
    properties are present in PUBLISH and SUBSCRIBE packets (unknown: no); CONNECT carries its own level
    and CONNACK's layout shows it.
    """
    header = _fixed_header(data, 0)
    if header is None:
        raise AnalyzerError(PROTOCOL, f"truncated fixed header ({len(data)} bytes)")
    ptype, flags, remaining, size = header
    if len(data) - size < remaining:
        raise AnalyzerError(
            PROTOCOL, f"{PACKET_TYPES[ptype]} truncated: {len(data) - size} of {remaining} bytes"
        )
    return _packet(ptype, flags, remaining, data[size : size + remaining], protocol_level)


def looks_like(payload: bytes) -> bool:
    """True for the start of a CONNECT packet naming ``MQTT`` (3.1.1, 5) or ``MQIsdp`` (3.1), or for a
    connection met after its CONNECT (a capture that began mid-session): whole packets that fill the
    payload exactly, one of them a PUBLISH, SUBSCRIBE or UNSUBSCRIBE that parses with a printable topic.
    Two-byte PINGREQ/PINGRESP and four-byte acknowledgements alone say too little to name a protocol."""
    if len(payload) < 2:
        return False
    if payload[0] == 0x10:
        for i in range(1, 5):
            if i >= len(payload):
                return False
            if not payload[i] & 0x80:
                rest = payload[i + 1 :]
                return rest.startswith((b"\x00\x04MQTT", b"\x00\x06MQIsdp"))
        return False
    return _whole_packets(payload)


def _whole_packets(payload: bytes) -> bool:
    telling = False
    pos, n = 0, len(payload)
    try:
        while pos < n:
            header = _fixed_header(payload, pos)
            if header is None:
                return False
            ptype, flags, remaining, size = header
            end = pos + size + remaining
            if ptype == CONNECT or end > n:
                return False
            packet = _packet(ptype, flags, remaining, payload[pos + size : end], 0)
            topics = _topics(packet)
            if topics is not None:
                if not all(topic and topic.isprintable() for topic in topics):
                    return False
                telling = True
            pos = end
    except AnalyzerError:
        return False
    return telling


def _topics(packet: MqttMessage) -> list[str] | None:
    """The topic names or filters of a PUBLISH, SUBSCRIBE or UNSUBSCRIBE; None for other packets."""
    if isinstance(packet, MqttPublish):
        return [packet.topic]
    if isinstance(packet, MqttSubscribe):
        return [topic for topic, _ in packet.topics]
    if isinstance(packet, MqttUnsubscribe):
        return list(packet.topics)
    return None


class MqttStreamParser:
    """Follows one direction of an MQTT connection and returns its packets as they complete.

    Sans-I/O: feed the direction's TCP payloads in order. A packet whose body exceeds ``max_buffer`` is
    not buffered: a PUBLISH is reported from its first ``max_buffer`` bytes (the topic), anything else by
    type only, and the rest is skipped. The protocol level comes from a CONNECT seen in this direction;
    set ``protocol_level`` on the server-direction parser from the client's CONNECT. Errors stop the
    parser (``error``); later input is only counted.
    """

    def __init__(self, max_buffer: int = MAX_BUFFER, protocol_level: int = 0) -> None:
        if max_buffer < 64:
            raise ValueError("max_buffer must be >= 64")
        self.max_buffer = max_buffer
        self.protocol_level = protocol_level  # 0: unknown (see `parse`)
        self._buf = b""
        self._skip = 0
        self.error: AnalyzerError | None = None
        self.packets = 0
        self.skipped_bytes = 0
        self.ignored_bytes = 0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def buffered(self) -> int:
        """Bytes of a partial packet held for the next segment (at most ``max_buffer`` + 5)."""
        return len(self._buf)

    def feed(self, segment: bytes) -> list[MqttMessage]:
        """Take the next payload of this direction; return the packets it completed. Never raises."""
        if self.error is not None:
            self.ignored_bytes += len(segment)
            return []
        if self._skip:
            take = min(self._skip, len(segment))
            self._skip -= take
            self.skipped_bytes += take
            segment = segment[take:]
        data = self._buf + segment if self._buf else segment
        self._buf = b""
        out: list[MqttMessage] = []
        try:
            pos = self._run(data, out)
        except AnalyzerError as exc:
            self.error = exc.detached()  # no frames: they held the batch, and this parser in a cycle
            self.ignored_bytes += len(data)
            return out
        self._buf = data[pos:]
        return out

    def _run(self, data: bytes, out: list[MqttMessage]) -> int:
        pos = 0
        n = len(data)
        while pos < n:
            header = _fixed_header(data, pos)
            if header is None:
                return pos
            ptype, flags, remaining, size = header
            available = n - pos - size
            if remaining <= self.max_buffer:
                if available < remaining:
                    return pos  # wait for the rest (at most max_buffer + 5 bytes kept)
                body = data[pos + size : pos + size + remaining]
                consumed = size + remaining
            else:
                if available < self.max_buffer and ptype == PUBLISH:
                    return pos  # wait for enough of the PUBLISH to read its topic
                body = data[pos + size : pos + size + min(available, self.max_buffer)]
                consumed = size + min(available, remaining)
                self._skip = remaining - (consumed - size)
                self.skipped_bytes += consumed - size - len(body)
            packet = _packet(ptype, flags, remaining, body, self.protocol_level)
            if isinstance(packet, MqttConnect) and not self.protocol_level:
                self.protocol_level = packet.protocol_level
            out.append(packet)
            self.packets += 1
            pos += consumed
            if self._skip:
                return pos  # the rest of this packet arrives in later segments
        return pos


# ------------------------------------------------------------------------------ protocol binding


def handle_mqtt(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not looks_like(payload):
        raise AnalyzerError(PROTOCOL, "not an MQTT CONNECT")
    # One parser per direction: packets split across segments, and several in one, are read whole.
    parser = flow_state(flow, (PROTOCOL, from_src), MqttStreamParser)
    for msg in parser.feed(payload):
        if isinstance(msg, MqttConnect) and msg.username:
            # EZVIZ cameras log in with their serial as the user name.
            detail = f"client_id={msg.client_id} user={msg.username}"
            ctx.fact(flow, from_src, "mqtt_user", detail, protocol=PROTOCOL)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_mqtt,
        tcp_ports=(1883, 31006),
        sniff=looks_like,
        tcp_guess=40,
        control=True,
    ),
)
