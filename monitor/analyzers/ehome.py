"""Hikvision EHome (ISUP), read for one thing: a device registering to a remote management platform.

EHome ("ISUP" from version 5) is Hikvision's own platform-access protocol: configured under Network >
Advanced > Platform Access, the camera or recorder connects out to the platform's registration server
(udp/7660 by default) and sends an XML ``PPVSPMessage`` request, ``<Command>REGISTER</Command>``, with its
``DeviceID`` (the serial or a configured id), ``FirmwareVersion``, ``LocalIP``/``LocalPort`` and
``DevType``. The platform answers ``<Status>200</Status>`` with a keep-alive interval and the addresses of its
alarm, picture and NTP servers; from then on the platform can ask for live video, play back recordings and
change settings, through a connection the device opened (no port forward needed). Version 5 adds a key the
device and platform check; its messages that are not the clear XML are labelled by port only and not read.

Only flat elements are read (``<Name>text</Name>``, bytes taken as Latin-1: the declaration says GB2312 and a
device name may use it). Sources: public EHome 2.0 captures and integration notes (the ``PPVSPMessage``
register request and answer as EasyCVR, EasyGBS and the open-source EHome servers document them); the
port is in docs/design.md's phone-home list (§7).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import DeviceFact, PlatformRegistration
from monitor.protocol import Context, ProtocolSpec, read_message, report_first_per_side

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "ehome"
EHOME_PORTS: Final = (7660,)
MAX_MESSAGES: Final = 8
MAX_XML: Final = 16 * 1024
#: A TCP message is joined across segments up to this: a registration is under 1 kB, and every live flow on
#: the port may hold this much per direction.
MAX_JOINED: Final = 4096
#: How far into a message its root may start (after a binary prefix, an XML declaration, comments).
ROOT_WITHIN: Final = 1024
_ROOT_RE: Final = re.compile(rb"<ppvspmessage[\s>]", re.IGNORECASE)
_END_RE: Final = re.compile(rb"</ppvspmessage\s*>", re.IGNORECASE)
# A flat element, attributes allowed: <Command>REGISTER</Command>, <DeviceID type="sn">...</DeviceID>.
_FIELD_RE: Final = re.compile(
    r"<([A-Za-z][A-Za-z0-9]{0,40})(?:\s[^<>]{0,200})?>([^<]{0,256})</\1\s*>", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class EhomeMessage:
    """One ``PPVSPMessage``: its command and the flat fields camwatch reads. Missing fields are None."""

    request: bool  # CommandType REQUEST (else RESPONSE)
    command: str | None  # REGISTER, KEEPALIVE... (an answer's WhichCommand)
    version: str | None
    device_id: str | None
    firmware: str | None
    local_ip: str | None
    device_type: str | None
    status: int | None  # an answer's

    @classmethod
    def parse(cls, data: bytes) -> EhomeMessage:
        """Parse one message; raises AnalyzerError when it is not EHome XML."""
        return parse(data)


def parse(data: bytes) -> EhomeMessage:
    """Parse a ``PPVSPMessage`` (after any binary prefix) by its flat elements."""
    root = _ROOT_RE.search(data, 0, ROOT_WITHIN)
    if root is None:
        raise AnalyzerError(PROTOCOL, f"no <PPVSPMessage> in the first {ROOT_WITHIN} bytes")
    body = data[root.start() : root.start() + MAX_XML].decode("latin-1")
    fields: dict[str, str] = {}
    for name, text in _FIELD_RE.findall(body):
        fields.setdefault(name.lower(), text.strip())
    kind = fields.get("commandtype", "").upper()
    if kind not in ("REQUEST", "RESPONSE"):
        raise AnalyzerError(PROTOCOL, f"CommandType {kind or 'missing'!r} is neither REQUEST nor RESPONSE")
    status = fields.get("status")
    return EhomeMessage(
        request=kind == "REQUEST",
        command=fields.get("command") or fields.get("whichcommand") or fields.get("method"),
        version=fields.get("version"),
        device_id=fields.get("deviceid"),
        firmware=fields.get("firmwareversion"),
        local_ip=fields.get("localip"),
        device_type=fields.get("devtype"),
        status=int(status) if status and status.isascii() and status.isdigit() and len(status) <= 3 else None,
    )


def looks_like(payload: bytes) -> bool:
    """``<PPVSPMessage`` (any case) near the start."""
    return _ROOT_RE.search(payload, 0, ROOT_WITHIN) is not None


def _starts(data: bytes) -> bool:
    # A TCP segment that may begin a message: the root, or the declaration or prefix before it.
    return looks_like(data) or data.lstrip()[:5] in (b"<?xml", b"<!--") or b"<" not in data[:ROOT_WITHIN]


def _whole(data: bytes) -> bool:
    return _END_RE.search(data) is not None


# ------------------------------------------------------------------------------ protocol binding


def handle_ehome(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    # A flow labelled by its port whose packets are not the clear XML (ISUP 5) is read for its budget only.
    data = read_message(
        flow, PROTOCOL, from_src, payload, looks_like=looks_like, starts=_starts, whole=_whole,
        limit=MAX_JOINED, budget=MAX_MESSAGES,
    )  # fmt: skip
    if data is None:
        return True
    msg = parse(data)
    command = (msg.command or "?").upper()
    if msg.request and command == "REGISTER":
        details = f"device_id={msg.device_id} firmware={msg.firmware} devtype={msg.device_type}"
        ctx.fact(
            flow, from_src, PROTOCOL, details, vendor="hikvision", firmware=msg.firmware, protocol=PROTOCOL
        )
    event = None
    if msg.request:  # a device registered before camwatch started still sends its keep-alives
        event = PlatformRegistration(
            ts, flow, from_src, PROTOCOL, command, msg.device_id, None, msg.firmware, None, msg.version
        )
    report_first_per_side(ctx, flow, PROTOCOL, from_src, event, MAX_MESSAGES)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_ehome,
        udp_ports=EHOME_PORTS,
        tcp_ports=EHOME_PORTS,
        sniff=looks_like,
        udp_guess=150,
        tcp_guess=180,
        control=True,
        emits=(PlatformRegistration, DeviceFact),
    ),
)
