"""NTP (RFC 5905; RFC 1305 for versions 1-3): the header fields that say who talks time with whom.

Modes 1-5 (symmetric, client, server, broadcast) carry the 48-byte header; mode 6 (control, `ntpq`)
and mode 7 (private, `ntpdc`, the `monlist` amplification vector) have their own headers and are only
recognised. Non-NTP data on port 123 is rejected: a version outside 1-4, a reserved mode, a reserved
stratum (17-255) or a short packet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.analyzers import AnalyzerError
from monitor.protocol import Context, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL = "ntp"

HEADER_LEN = 48
CONTROL_HEADER_LEN = 12  # mode 6 (RFC 1305 appendix B)
PRIVATE_HEADER_LEN = 8  # mode 7 (ntpd's request/response header)

MODE_SYMMETRIC_ACTIVE = 1
MODE_SYMMETRIC_PASSIVE = 2
MODE_CLIENT = 3
MODE_SERVER = 4
MODE_BROADCAST = 5
MODE_CONTROL = 6
MODE_PRIVATE = 7

MODE_NAMES = {
    0: "reserved",
    1: "symmetric_active",
    2: "symmetric_passive",
    3: "client",
    4: "server",
    5: "broadcast",
    6: "control",
    7: "private",
}

_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class NtpMessage:
    """One NTP packet. Header fields are None for control (6) and private (7) modes."""

    version: int
    mode: int
    leap: int
    stratum: int | None
    poll: int | None
    precision: int | None
    reference_id: str | None  # stratum 0/1: the code, e.g. "GPS\\x00" (Zeek's escaping); above: IPv4 form
    reference_id_raw: bytes | None
    transmit_time: float | None  # Unix seconds; None when zero or not a header mode

    @property
    def mode_name(self) -> str:
        """ "client", "server", ... for `mode`."""
        return MODE_NAMES[self.mode]

    @classmethod
    def parse(cls, data: bytes) -> NtpMessage:
        """Parse one NTP packet; raises AnalyzerError for anything that is not NTP."""
        return parse(data)


def _refid_text(raw: bytes, stratum: int) -> str:
    if stratum <= 1:
        # A kiss code or reference source ("GPS", "RATE"): ASCII, NUL padded. Written as Zeek writes it,
        # each non-printable byte as \xHH ("GPS\x00"), so the two can be compared and nothing is lost.
        return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)
    return str(ipaddress.IPv4Address(raw))


def parse(data: bytes) -> NtpMessage:
    """Parse an NTP packet (UDP payload)."""
    if not data:
        raise _error("empty packet")
    first = data[0]
    leap, version, mode = first >> 6, (first >> 3) & 0x7, first & 0x7
    if not 1 <= version <= 4:
        raise _error(f"version {version} is not 1-4")
    if mode == 0 and version != 1:  # NTPv1 had no mode field
        raise _error("reserved mode 0")
    if mode == MODE_CONTROL:
        if len(data) < CONTROL_HEADER_LEN:
            raise _error(f"control message of {len(data)} bytes is shorter than {CONTROL_HEADER_LEN}")
        return NtpMessage(version, mode, leap, None, None, None, None, None, None)
    if mode == MODE_PRIVATE:
        if len(data) < PRIVATE_HEADER_LEN:
            raise _error(f"private message of {len(data)} bytes is shorter than {PRIVATE_HEADER_LEN}")
        return NtpMessage(version, mode, leap, None, None, None, None, None, None)
    if len(data) < HEADER_LEN:
        raise _error(f"packet of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    stratum = data[1]
    if stratum > 16:
        raise _error(f"reserved stratum {stratum}")
    raw_ref = data[12:16]
    seconds = int.from_bytes(data[40:44], "big")
    fraction = int.from_bytes(data[44:48], "big")
    transmit = None
    if seconds or fraction:
        transmit = seconds - _NTP_EPOCH_OFFSET + fraction / 2**32
    return NtpMessage(
        version=version,
        mode=mode,
        leap=leap,
        stratum=stratum,
        poll=int.from_bytes(data[2:3], "big", signed=True),
        precision=int.from_bytes(data[3:4], "big", signed=True),
        reference_id=_refid_text(raw_ref, stratum),
        reference_id_raw=raw_ref,
        transmit_time=transmit,
    )


def looks_like(payload: bytes) -> bool:
    """Cheap check: a 48-byte header (modes 1-5) with version 1-4 and stratum 0-16, or a mode 6/7 header."""
    if not payload:
        return False
    version, mode = (payload[0] >> 3) & 0x7, payload[0] & 0x7
    if not 1 <= version <= 4:
        return False
    if mode == MODE_CONTROL:
        return len(payload) >= CONTROL_HEADER_LEN
    if mode == MODE_PRIVATE:
        return len(payload) >= PRIVATE_HEADER_LEN
    return mode != 0 and len(payload) >= HEADER_LEN and payload[1] <= 16


# ------------------------------------------------------------------------------ protocol binding


def handle_ntp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    parse(payload)
    return True


PROTOCOLS = (ProtocolSpec(name="ntp", handler=handle_ntp, udp_ports=(123,), control=True),)
