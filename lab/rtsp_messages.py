"""The lab camera's view of RTSP 1.0 requests (RFC 2326): the request head and a SETUP's Transport header.

Parsing only, no I/O: `RtspRequest.parse` and `TransportSpec.parse` raise ValueError saying what is
wrong. `lab.rtsp_server` answers a bad request with 400 and skips a transport it cannot parse
(461 when none is left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["RtspRequest", "TransportSpec"]


@dataclass(frozen=True, slots=True)
class RtspRequest:
    """An RTSP request: request line, headers (in order, names as sent) and body."""

    method: str
    uri: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def content_length(self) -> int:
        value = self.header("Content-Length")
        return 0 if value is None else int(value)

    @classmethod
    def parse(cls, head: bytes) -> RtspRequest:
        """Parse a request line and headers (up to, not including, the empty line); the body comes later."""
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"request head is not UTF-8 (byte {exc.start})") from None
        lines = text.replace("\r\n", "\n").split("\n")
        while lines and not lines[-1]:
            lines.pop()
        if not lines or not lines[0]:
            raise ValueError("empty request")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"request line must be 'METHOD URI RTSP/1.0', got {lines[0][:80]!r}")
        method, uri, version = parts
        if not method.isascii() or not all(c.isalnum() or c in "_-" for c in method):
            raise ValueError(f"method {method[:40]!r} is not a token")
        if not uri.isprintable() or not uri.isascii():  # it is echoed in Content-Base and RTP-Info
            raise ValueError(f"request URI has control or non-ASCII characters: {uri[:80]!r}")
        if not version.startswith("RTSP/") or not _is_version_number(version[5:]):
            raise ValueError(f"protocol version must look like RTSP/1.0, got {version[:40]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # obsolete line folding continues the previous header
                key, value = headers[-1]
                headers[-1] = (key, f"{value} {line.strip()}")
                continue
            key, sep, value = line.partition(":")
            if not sep or not key or key != key.strip():
                raise ValueError(f"header line without 'Name: value': {line[:80]!r}")
            if not line.replace("\t", " ").isprintable():
                raise ValueError(f"header line with control characters: {line[:80]!r}")
            headers.append((key, value.strip()))
        request = cls(method, uri, version, tuple(headers))
        length = request.header("Content-Length")
        if length is not None and (not length.isdigit() or not length.isascii()):
            raise ValueError(f"Content-Length must be a non-negative integer, got {length[:40]!r}")
        return request


def _is_version_number(text: str) -> bool:
    major, dot, minor = text.partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit() and text.isascii()


@dataclass(frozen=True, slots=True)
class TransportSpec:
    """One transport of a SETUP's Transport header (RFC 2326 12.39), the parts this server uses."""

    protocol: Literal["udp", "tcp"]
    unicast: bool
    client_port: tuple[int, int] | None = None
    interleaved: tuple[int, int] | None = None

    @classmethod
    def parse(cls, value: str) -> TransportSpec:
        """Parse one transport spec (no commas), e.g. ``RTP/AVP;unicast;client_port=5000-5001``."""
        fields = [f.strip() for f in value.split(";")]
        profile = fields[0].upper()
        protocol: Literal["udp", "tcp"]
        if profile in ("RTP/AVP", "RTP/AVP/UDP"):
            protocol = "udp"
        elif profile == "RTP/AVP/TCP":
            protocol = "tcp"
        else:
            raise ValueError(
                f"transport {fields[0][:40]!r} not supported (RTP/AVP, RTP/AVP/UDP or RTP/AVP/TCP)"
            )
        unicast = True
        client_port = interleaved = None
        for field in fields[1:]:
            name, _, arg = field.partition("=")
            name = name.lower()
            if name == "multicast":
                unicast = False
            elif name == "unicast":
                unicast = True
            elif name == "client_port":
                client_port = _parse_range(arg, "client_port", 1, 65535)
            elif name == "interleaved":
                interleaved = _parse_range(arg, "interleaved", 0, 255)
        return cls(protocol, unicast, client_port, interleaved)


def _parse_range(text: str, name: str, low: int, high: int) -> tuple[int, int]:
    first, dash, second = text.partition("-")
    try:
        a = int(first)
        b = int(second) if dash else a + 1
    except ValueError:
        raise ValueError(f"{name} must be N or N-M, got {text[:40]!r}") from None
    if not (low <= a <= high and low <= b <= high):
        raise ValueError(f"{name} {text!r} outside {low}-{high}")
    return a, b
