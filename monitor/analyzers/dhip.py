"""Dahua DHIP discovery: UDP 37810, multicast 239.255.255.251 (and broadcast), a binary header + JSON.

Header (32 bytes, little endian), as described by public reimplementations::

    0..4    header size (32)
    4..8    magic, the ASCII bytes "DHIP"
    8..12   session id (0 for discovery)
    12..16  request id
    16..24  JSON body length (64-bit; 32-bit length + 4 reserved bytes in older descriptions)
    24..32  JSON body length again

The body is one JSON object: ConfigTool's request ``{"method": "DHDiscover.search", "params": {"mac": "",
"uni": 1}}`` and the devices' replies ``{"mac": ..., "method": "client.notifyDevInfo", "params":
{"deviceInfo": {"DeviceType", "DeviceClass", "SerialNo", "Version", "Vendor", "Manufacturer", "HttpPort",
"IPv4Address": {"IPAddress", "SubnetMask", "DhcpEnable", ...}, ...}}}``. Some firmware ends the body with
"\\n" and a NUL counted in the length; trailing whitespace and NULs are stripped.

Sources read for the layout: julienblitte/UniversalScanner (``Dahua2.cs``: the header struct, magic
0x44484950, the two length fields), rroller/dahua (``custom_components/dahua/discovery.py``: the header
as bytes, the reply fields and that bare JSON gets no reply) and reply samples quoted by other scanners.
The legacy broadcast protocol on UDP 5050 is a different binary layout (0xa3/0xb3 header, see
UniversalScanner ``Dahua1.cs``) and is not parsed here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.analyzers import AnalyzerError
from monitor.analyzers.sadp import discovery_fact, mac_from_text
from monitor.events import DeviceFact
from monitor.protocol import Context, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL = "dhip"

MAGIC = b"DHIP"
HEADER_LEN = 32
MAX_HEADER_LEN = 1024
MAX_BODY = 64 * 1024
_HEADER = struct.Struct("<I4sIIQQ")
_SECRET_WORDS = ("password", "passwd", "pwd")


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class DhipMessage:
    """One DHIP datagram. Device fields come from ``params.deviceInfo`` of a reply (None elsewhere)."""

    header_size: int
    session_id: int
    request_id: int
    body_length: int
    method: str | None
    mac: int | None  # deviceInfo's Mac, else the reply's top-level "mac"
    device_type: str | None  # the model, e.g. "IPC-HFW2431S-S-S2"
    device_class: str | None  # "IPC", "NVR", "VTO", ...
    serial: str | None
    ipv4: str | None
    firmware: str | None  # deviceInfo.Version
    vendor: str | None
    manufacturer: str | None
    http_port: int | None
    device_info: tuple[tuple[str, str], ...]  # scalar deviceInfo fields as text, secrets left out

    @property
    def is_search(self) -> bool:
        """A ``DHDiscover.search`` request."""
        return self.method == "DHDiscover.search"

    @property
    def is_reply(self) -> bool:
        """A device's description of itself."""
        return bool(self.device_info) or self.method == "client.notifyDevInfo"

    @classmethod
    def parse(cls, data: bytes) -> DhipMessage:
        """Parse one DHIP datagram; raises AnalyzerError when it is malformed."""
        return parse(data)


def _json_body(body: bytes) -> dict[str, Any]:
    text = body.rstrip(b"\x00 \t\r\n")
    if not text:
        return {}
    try:
        doc = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _error(f"body is not UTF-8 ({exc.reason} at {exc.start})") from None
    except RecursionError:
        raise _error("JSON body nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing huge numbers
        raise _error(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _error(f"JSON body is a {type(doc).__name__}, not an object")
    return doc


def _get(mapping: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in mapping:
            return mapping[name]
    return None


def parse(data: bytes) -> DhipMessage:
    """Parse a DHIP datagram: header, then the JSON body."""
    if len(data) < HEADER_LEN:
        raise _error(f"datagram of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    header_size, magic, session, request, length, _length2 = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _error(f"magic {magic!r} is not b'DHIP'")
    if not HEADER_LEN <= header_size <= MAX_HEADER_LEN:
        raise _error(f"header size {header_size} out of range")
    if length > MAX_BODY:
        raise _error(f"body length {length} exceeds {MAX_BODY}")
    if header_size + length > len(data):
        raise _error(f"body of {length} bytes runs past the datagram ({len(data) - header_size} available)")
    doc = _json_body(data[header_size : header_size + length])
    method = doc.get("method")
    params = doc.get("params")
    info = params.get("deviceInfo") if isinstance(params, dict) else None
    if not isinstance(info, dict):
        info = {}
    ipv4_obj = info.get("IPv4Address")
    ipv4 = _scalar(_get(ipv4_obj, "IPAddress")) if isinstance(ipv4_obj, dict) else _scalar(ipv4_obj)
    mac = mac_from_text(_scalar(_get(info, "Mac", "MAC", "mac"))) or mac_from_text(_scalar(doc.get("mac")))
    port_text = _scalar(info.get("HttpPort"))
    port: int | None = None
    if port_text is not None and port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
    fields: list[tuple[str, str]] = []
    for key, value in info.items():
        text = _scalar(value)
        if text is not None and not any(w in key.lower() for w in _SECRET_WORDS):
            fields.append((key, text))
    return DhipMessage(
        header_size=header_size,
        session_id=session,
        request_id=request,
        body_length=length,
        method=method if isinstance(method, str) else None,
        mac=mac,
        device_type=_scalar(info.get("DeviceType")),
        device_class=_scalar(info.get("DeviceClass")),
        serial=_scalar(info.get("SerialNo")),
        ipv4=ipv4,
        firmware=_scalar(info.get("Version")),
        vendor=_scalar(info.get("Vendor")),
        manufacturer=_scalar(info.get("Manufacturer")),
        http_port=port if port is not None and port <= 65535 else None,
        device_info=tuple(fields),
    )


def looks_like(payload: bytes) -> bool:
    """Cheap check: the "DHIP" magic at offset 4 of a 32-byte header."""
    return len(payload) >= HEADER_LEN and payload[4:8] == MAGIC


# ------------------------------------------------------------------------------ protocol binding


def handle_dhip(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = parse(payload)
    if msg.is_reply:
        ctx.emit(
            discovery_fact(
                flow,
                from_src,
                ts,
                "dhip",
                "dahua",
                msg.ipv4,
                msg.mac,
                msg.device_type,
                msg.serial,
                msg.firmware,
            )
        )
    return True


PROTOCOLS = (
    ProtocolSpec(
        name="dhip",
        handler=handle_dhip,
        udp_ports=(37810, 5050),
        sniff=looks_like,
        udp_guess=120,
        control=True,
        emits=(DeviceFact,),
    ),
)
