"""UPnP control: a SOAP action in an HTTP request (UPnP Device Architecture, "Control"), e.g. IGD ports.

Input is the bytes of one HTTP request (headers and body, as reassembled from TCP). The request must be a
``POST`` (or ``M-POST``) with a ``SOAPACTION: "urn:...:service:<type>:<v>#<Action>"`` header
(``NN-SOAPACTION`` for M-POST) and a SOAP envelope whose Body holds the action element and its arguments.
For the IGD WANIPConnection/WANPPPConnection actions camwatch watches (AddPortMapping, AddAnyPortMapping,
DeletePortMapping) the usual arguments are exposed as properties: NewExternalPort, NewInternalPort,
NewInternalClient, NewProtocol, NewPortMappingDescription, NewRemoteHost, NewLeaseDuration, NewEnabled.

The HTTP parsing is the minimum needed here: request line, headers, Content-Length or chunked body.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.analyzers import AnalyzerError
from monitor.analyzers.ssdp import parse_headers
from monitor.analyzers.wsd import child, local_name, parse_xml

PROTOCOL = "upnp"

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
PORT_MAPPING_ACTIONS = frozenset({"AddPortMapping", "AddAnyPortMapping", "DeletePortMapping"})


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        return None
    return int(text)


@dataclass(frozen=True, slots=True)
class UpnpSoapRequest:
    """One SOAP control request. `arguments` are the action element's children, in order."""

    method: str
    path: str
    host: str | None
    user_agent: str | None
    service_type: str | None  # e.g. "urn:schemas-upnp-org:service:WANIPConnection:1"
    action: str
    arguments: tuple[tuple[str, str], ...]

    def argument(self, name: str) -> str | None:
        """Value of an argument by name, None when absent."""
        for k, v in self.arguments:
            if k == name:
                return v
        return None

    @property
    def is_port_mapping(self) -> bool:
        """AddPortMapping, AddAnyPortMapping or DeletePortMapping."""
        return self.action in PORT_MAPPING_ACTIONS

    @property
    def external_port(self) -> int | None:
        """NewExternalPort."""
        return _port(self.argument("NewExternalPort"))

    @property
    def internal_port(self) -> int | None:
        """NewInternalPort."""
        return _port(self.argument("NewInternalPort"))

    @property
    def internal_client(self) -> str | None:
        """NewInternalClient: the LAN address the mapping forwards to."""
        return self.argument("NewInternalClient")

    @property
    def protocol(self) -> str | None:
        """NewProtocol, upper-cased ("TCP"/"UDP")."""
        value = self.argument("NewProtocol")
        return value.upper() if value is not None else None

    @property
    def description(self) -> str | None:
        """NewPortMappingDescription."""
        return self.argument("NewPortMappingDescription")

    @property
    def remote_host(self) -> str | None:
        """NewRemoteHost ("" means any)."""
        return self.argument("NewRemoteHost")

    @property
    def lease_duration(self) -> int | None:
        """NewLeaseDuration in seconds (0 means permanent)."""
        value = self.argument("NewLeaseDuration")
        if value is None or not (value.isascii() and value.isdigit()) or len(value) > 10:
            return None
        return int(value)

    @property
    def enabled(self) -> bool | None:
        """NewEnabled ("1"/"true")."""
        value = self.argument("NewEnabled")
        if value is None:
            return None
        low = value.lower()
        return True if low in ("1", "true", "yes") else False if low in ("0", "false", "no") else None

    @classmethod
    def parse(cls, data: bytes) -> UpnpSoapRequest:
        """Parse one HTTP SOAP request; raises AnalyzerError when it is not one."""
        return parse(data)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise _error("chunked body cut inside a chunk size line")
        size_text = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _error(f"bad chunk size {size_text[:20]!r}") from None
        if size < 0 or len(size_text) > 8:
            raise _error(f"bad chunk size {size_text[:20]!r}")
        start = eol + 2
        if size == 0:
            return bytes(out)
        if start + size > len(body):
            raise _error("chunked body cut inside a chunk")
        out += body[start : start + size]
        if len(out) > MAX_BODY:
            raise _error(f"body exceeds {MAX_BODY} bytes")
        pos = start + size + 2


def _split_head(data: bytes) -> tuple[str, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep, 0, MAX_HEAD + len(sep))
        if idx >= 0:
            return data[:idx].decode("utf-8", errors="backslashreplace"), data[idx + len(sep) :]
    raise _error("HTTP header block incomplete (no empty line)")


def parse(data: bytes) -> UpnpSoapRequest:
    """Parse an HTTP request carrying a UPnP SOAP action."""
    head, rest = _split_head(data)
    lines = head.replace("\r\n", "\n").split("\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].upper().startswith("HTTP/1."):
        raise _error(f"request line {lines[0][:60]!r} is not HTTP/1.x")
    method, path = parts[0].upper(), parts[1]
    if method not in ("POST", "M-POST"):
        raise _error(f"method {method[:20]!r} is not POST or M-POST")
    headers = parse_headers(lines[1:], PROTOCOL)
    values: dict[str, str] = {}
    for k, v in headers:
        values.setdefault(k, v)
    soap_action = values.get("soapaction")
    if soap_action is None:
        soap_action = next((v for k, v in headers if k.endswith("-soapaction")), None)
    if soap_action is None:
        raise _error("no SOAPACTION header")
    service_type, sharp, action = soap_action.strip().strip('"').partition("#")
    if "chunked" in values.get("transfer-encoding", "").lower():
        body = _dechunk(rest)
    elif "content-length" in values:
        text = values["content-length"]
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise _error(f"bad Content-Length {text[:20]!r}")
        length = int(text)
        if length > MAX_BODY:
            raise _error(f"Content-Length {length} exceeds {MAX_BODY}")
        if len(rest) < length:
            raise _error(f"body has {len(rest)} of its {length} bytes")
        body = rest[:length]
    else:
        body = rest
    element_name, arguments = _envelope(body)
    if not sharp or not action:
        # No "#Action" in the header: the body's element names it.
        action = element_name
        service_type = service_type or ""
    return UpnpSoapRequest(
        method=method,
        path=path,
        host=values.get("host"),
        user_agent=values.get("user-agent"),
        service_type=service_type or None,
        action=action,
        arguments=arguments,
    )


def _envelope(body: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The action element's name and its arguments in a SOAP envelope."""
    root = parse_xml(body, PROTOCOL, max_bytes=MAX_BODY)
    if local_name(root.tag) != "Envelope":
        raise _error(f"root element {local_name(root.tag)!r} is not a SOAP Envelope")
    soap_body = child(root, "Body")
    element = next(iter(soap_body), None) if soap_body is not None else None
    if element is None:
        raise _error("SOAP Envelope without an action element in its Body")
    return local_name(element.tag), tuple((local_name(arg.tag), (arg.text or "").strip()) for arg in element)


def mapping_arguments(body: bytes) -> UpnpSoapRequest | None:
    """The action and arguments of a SOAP body alone (an HTTP request's body the HTTP analyzer read), or
    None when it is not a SOAP envelope with an action. Never raises."""
    try:
        action, arguments = _envelope(body)
    except AnalyzerError:
        return None
    return UpnpSoapRequest("POST", "", None, None, None, action, arguments)


def looks_like(payload: bytes) -> bool:
    """Cheap check: a POST/M-POST request line and a SOAPACTION header in the first 4 KiB."""
    head = payload[:4096]
    return (head.startswith(b"POST ") or head.startswith(b"M-POST ")) and b"soapaction:" in head.lower()
