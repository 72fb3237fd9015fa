"""Hikvision SADP (Search Active Devices Protocol), the XML form on UDP 37020 (multicast 239.255.255.250).

The SADP tool (and Hik-Connect/iVMS clients) multicast a probe::

    <?xml version="1.0" encoding="utf-8"?><Probe><Uuid>...</Uuid><Types>inquiry</Types></Probe>

and every Hikvision (and OEM: LTS, Annke, Prama...) device answers with a flat ``<ProbeMatch>``: Uuid,
Types, DeviceType (a numeric class), DeviceDescription (the model), DeviceSN, CommandPort (8000),
HttpPort, MAC (``44-47-cc-37-ce-81``), IPv4Address/SubnetMask/Gateway, IPv6Address/Gateway/MaskLen, DHCP,
AnalogChannelNum, DigitalChannelNum, SoftwareVersion (firmware, ``V5.5.6build 180326``), DSPVersion,
BootTime, Encrypt, ResetAbility, DiskNumber, Activated, PasswordResetAbility, SupportHCPlatform,
HCPlatformEnable, Salt, DeviceLock, OEMInfo, EHomeVer... The same ``<Probe>`` root carries the tool's
other commands (``Types`` = update, activate, reset, getcode...), some with a password: those values
are redacted here, only their presence is kept.

No specification is public. The layout comes from public reimplementations, read for this module:
MatrixEditor/hiktools (``hiktools/sadp/message.py``: the inquiry reply nodes, and its Wireshark Lua
dissector), julienblitte/UniversalScanner (``Hikvision.cs``: the probe and the 37020/239.255.255.250
endpoint), oldweipro/hik-dev (``DeviceSearchInfoDTO.java``: the reply field names incl. OEMInfo,
EHomeVer) and reply samples quoted in several open-source device scanners. Older SADP (raw Ethernet,
ethertype 0x8033) is binary and not handled here. Root and field names are matched case-insensitively
(one public sample spells the root ``Probematch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.analyzers import AnalyzerError
from monitor.events import DeviceFact
from monitor.protocol import Context, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow
from monitor.analyzers.wsd import local_name, parse_xml

PROTOCOL = "sadp"

MAX_BYTES = 16 * 1024
REDACTED = "<redacted>"
_SECRET_FIELDS = frozenset({"password", "oldpassword", "newpassword", "passwd", "pwd"})
_ROOTS = {"probe": "Probe", "probematch": "ProbeMatch"}


def mac_from_text(text: str | None) -> int | None:
    """`44-47-cc-37-ce-81`, `44:47:CC:37:CE:81` or `4447cc37ce81` as an int; None if it is not a MAC."""
    if not text:
        return None
    digits = text.strip().replace("-", "").replace(":", "").replace(".", "")
    if len(digits) != 12:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


def _bool(text: str | None) -> bool | None:
    if text is None:
        return None
    low = text.strip().lower()
    return True if low == "true" else False if low == "false" else None


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    # isdigit() alone admits non-ASCII digits ("²") that int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    value = int(text)
    return value if value <= 65535 else None


@dataclass(frozen=True, slots=True)
class SadpMessage:
    """One SADP XML message: a tool's ``Probe`` or a device's ``ProbeMatch``. Missing fields are None."""

    kind: str  # "Probe" or "ProbeMatch"
    uuid: str | None
    types: str | None  # the command: "inquiry", "update", ...
    device_type: str | None
    model: str | None  # DeviceDescription
    serial: str | None  # DeviceSN
    mac: int | None
    ipv4: str | None
    ipv6: str | None
    http_port: int | None
    command_port: int | None
    firmware: str | None  # SoftwareVersion
    dsp_version: str | None
    boot_time: str | None
    activated: bool | None
    dhcp: bool | None
    fields: tuple[tuple[str, str], ...]  # every child element as (name, text), secrets redacted

    @property
    def is_reply(self) -> bool:
        """A device's answer (``ProbeMatch``)."""
        return self.kind == "ProbeMatch"

    @property
    def carries_password(self) -> bool:
        """The message held a password (redacted): a configuration command sent in clear text."""
        return any(v == REDACTED for _, v in self.fields)

    def field(self, name: str) -> str | None:
        """Text of a field by name (case-insensitive), None when absent."""
        want = name.lower()
        for k, v in self.fields:
            if k.lower() == want:
                return v
        return None

    @classmethod
    def parse(cls, data: bytes) -> SadpMessage:
        """Parse one SADP datagram; raises AnalyzerError when it is not SADP XML."""
        return parse(data)


def parse(data: bytes) -> SadpMessage:
    """Parse a SADP XML datagram."""
    root = parse_xml(data, PROTOCOL, max_bytes=MAX_BYTES)
    kind = _ROOTS.get(local_name(root.tag).lower())
    if kind is None:
        raise AnalyzerError(
            PROTOCOL, f"root element {local_name(root.tag)!r} is neither Probe nor ProbeMatch"
        )
    fields: list[tuple[str, str]] = []
    by_name: dict[str, str] = {}
    for elem in root:
        name = local_name(elem.tag)
        text = (elem.text or "").strip()
        if name.lower() in _SECRET_FIELDS:
            text = REDACTED
        fields.append((name, text))
        by_name.setdefault(name.lower(), text)

    def get(name: str) -> str | None:
        return by_name.get(name.lower())

    return SadpMessage(
        kind=kind,
        uuid=get("Uuid"),
        types=get("Types"),
        device_type=get("DeviceType"),
        model=get("DeviceDescription"),
        serial=get("DeviceSN"),
        mac=mac_from_text(get("MAC")),
        ipv4=get("IPv4Address"),
        ipv6=get("IPv6Address"),
        http_port=_port(get("HttpPort")),
        command_port=_port(get("CommandPort")),
        firmware=get("SoftwareVersion"),
        dsp_version=get("DSPVersion"),
        boot_time=get("BootTime"),
        activated=_bool(get("Activated")),
        dhcp=_bool(get("DHCP")),
        fields=tuple(fields),
    )


def looks_like(payload: bytes) -> bool:
    """Cheap check: an XML declaration (or a bare root) and ``<Probe`` within the first 200 bytes."""
    head = payload[:200].lstrip()
    return (head.startswith(b"<?xml") or head.startswith(b"<Probe")) and b"<Probe" in head


# ------------------------------------------------------------------------------ protocol binding


def discovery_fact(
    flow: Flow,
    from_src: bool,
    ts: int,
    kind: str,
    vendor: str,
    ip: str | None,
    mac: int | None,
    model: str | None,
    serial: str | None,
    firmware: str | None,
) -> DeviceFact:
    """A discovery reply describes its sender: model, serial and firmware, and who made it (the
    address and MAC it states, else the packet's)."""
    return DeviceFact(
        ts,
        mac or (flow.src_mac if from_src else flow.dst_mac),
        ip or (flow.src if from_src else flow.dst)[0],
        kind,
        f"model={model} serial={serial} firmware={firmware}",
        vendor=vendor,
        model=model,
        firmware=firmware,
        serial=serial,
        protocol=kind,
    )


def handle_sadp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = parse(payload)
    if msg.is_reply:
        ctx.emit(
            discovery_fact(
                flow,
                from_src,
                ts,
                "sadp",
                "hikvision",
                msg.ipv4,
                msg.mac,
                msg.model,
                msg.serial,
                msg.firmware,
            )
        )
    return True


PROTOCOLS = (
    ProtocolSpec(
        name="sadp",
        handler=handle_sadp,
        udp_ports=(37020,),
        sniff=looks_like,
        udp_guess=110,
        control=True,
        emits=(DeviceFact,),
    ),
)
