"""Payloads of the vendor personas (docs/design.md §7): the bytes a camera puts in a datagram or a TCP stream.

Shared by the synthetic captures (`personas`, `scenario`: frames built around these payloads) and the
live lab (`camera`, `services`: the same payloads sent over real sockets), so what the engine's tests
recognise is exactly what the lab's cameras send. The layouts follow the public descriptions the
analyzers cite (SADP XML, DHIP header + JSON, ONVIF WS-Discovery, EZVIZ XML over UDP, Dahua DHGET,
SSDP and UPnP SOAP, RTSP).
"""

from __future__ import annotations

import json
import struct

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
SADP_PORT = 37020
WSD_PORT = 3702
DHIP_GROUP = "239.255.255.251"
DHIP_PORT = 37810
IGD_TYPE = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
WANIP_TYPE = "urn:schemas-upnp-org:service:WANIPConnection:1"


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(txid: int, name: str, qtype: int = 1) -> bytes:
    """A recursive query for one name (type A unless told)."""
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_answer(txid: int, name: str, address: str) -> bytes:
    """A response with one A record for `name`."""
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes(int(x) for x in address.split("."))
    return struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + _qname(name) + struct.pack("!HH", 1, 1) + answer


def sadp_probe_match(mac: str, ip: str, model: str, serial: str, firmware: str) -> bytes:
    """A Hikvision SADP inquiry reply (also multicast unsolicited when a device starts)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><ProbeMatch><Uuid>7C2A5F9E-4B1D-4E8A-9C3F-2D6B8A1E5F40</Uuid>'
        f"<Types>inquiry</Types><DeviceType>142378</DeviceType><DeviceDescription>{model}</DeviceDescription>"
        f"<DeviceSN>{serial}</DeviceSN><CommandPort>8000</CommandPort><HttpPort>80</HttpPort>"
        f"<MAC>{mac.replace(':', '-')}</MAC><IPv4Address>{ip}</IPv4Address><DHCP>false</DHCP>"
        f"<SoftwareVersion>{firmware}</SoftwareVersion><Activated>true</Activated></ProbeMatch>"
    ).encode()


def dhip_reply(
    mac: str, ip: str, model: str, serial: str, firmware: str, gateway: str = "10.20.0.1"
) -> bytes:
    """A Dahua DHIP `client.notifyDevInfo` (32-byte header with the magic, then JSON)."""
    body = json.dumps(
        {
            "mac": mac,
            "method": "client.notifyDevInfo",
            "params": {
                "deviceInfo": {
                    "DeviceType": model,
                    "DeviceClass": "IPC",
                    "SerialNo": serial,
                    "Version": firmware,
                    "Vendor": "General",
                    "Mac": mac,
                    "IPv4Address": {
                        "IPAddress": ip,
                        "SubnetMask": "255.255.255.0",
                        "DefaultGateway": gateway,
                    },
                    "HttpPort": 80,
                }
            },
        },
        separators=(",", ":"),
    ).encode()
    header = struct.pack("<I4sIIIIII", 0x20, b"DHIP", 0, 0, len(body), 0, len(body), 0)
    return header + body


def _onvif_scopes(manufacturer: str, model: str) -> str:
    return (
        f"onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/{manufacturer} "
        f"onvif://www.onvif.org/hardware/{model} onvif://www.onvif.org/location/"
    )


_WSD_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
    'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
)


def wsd_probe_match(address: str, xaddr: str, manufacturer: str, model: str) -> bytes:
    """An ONVIF WS-Discovery ProbeMatches (the answer to a Probe)."""
    return (
        _WSD_ENVELOPE
        + "<SOAP-ENV:Header><wsa:MessageID>uuid:5f1c7a2e-0000-4000-8000-000000000001</wsa:MessageID>"
        "<wsa:RelatesTo>uuid:0a6dc791-2be6-4991-9af1-454778a1917a</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header>"
        "<SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{address}</wsa:Address></wsa:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
        f"<d:Scopes>{_onvif_scopes(manufacturer, model)}</d:Scopes>"
        f"<d:XAddrs>{xaddr}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def wsd_hello(address: str, xaddr: str, manufacturer: str, model: str, message_number: int = 1) -> bytes:
    """An ONVIF WS-Discovery Hello, multicast by a device when it joins the network."""
    return (
        _WSD_ENVELOPE + "<SOAP-ENV:Header>"
        f"<wsa:MessageID>uuid:5f1c7a2e-0000-4000-8000-{message_number:012d}</wsa:MessageID>"
        "<wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Hello</wsa:Action></SOAP-ENV:Header>"
        "<SOAP-ENV:Body><d:Hello>"
        f"<wsa:EndpointReference><wsa:Address>{address}</wsa:Address></wsa:EndpointReference>"
        "<d:Types>dn:NetworkVideoTransmitter</d:Types>"
        f"<d:Scopes>{_onvif_scopes(manufacturer, model)}</d:Scopes>"
        f"<d:XAddrs>{xaddr}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
        "</d:Hello></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def ezviz_nat_query(serial: str, local_ip: str, local_port: int) -> bytes:
    """EZVIZ XML "STUN": the device asks the cloud which public address it is seen from."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<Request>\n<Command>NatQuery</Command>\n'
        f"<DevSerial>{serial}</DevSerial>\n<LocalIP>{local_ip}</LocalIP>\n<LocalPort>{local_port}</LocalPort>\n"
        "</Request>\n"
    ).encode()


def ezviz_nat_answer(serial: str, public_ip: str, public_port: int) -> bytes:
    """The cloud's answer to `ezviz_nat_query`: the address the query came from."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<Response>\n<Command>NatQueryRsp</Command>\n'
        "<Result>0</Result>\n"
        f"<DevSerial>{serial}</DevSerial>\n<NatIP>{public_ip}</NatIP>\n<NatPort>{public_port}</NatPort>\n"
        "</Response>\n"
    ).encode()


def ezviz_register(host: str, serial: str) -> bytes:
    """The device's registration with litedev (tcp/8666) as an HTTP-like request."""
    body = json.dumps({"devSerial": serial, "type": "register", "ver": "V5.7.3"}, separators=(",", ":"))
    return (
        f"POST /api/device/register HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def dhget(path: str = "/probe/p2psrv", cseq: int = 1) -> bytes:
    """A Dahua Easy4IP request on udp/8800."""
    return f"DHGET {path} HTTP/1.1\r\nCSeq: {cseq}\r\n\r\n".encode()


def igd_search(mx: int = 2) -> bytes:
    """An SSDP M-SEARCH for an Internet Gateway Device."""
    return (
        f'M-SEARCH * HTTP/1.1\r\nHOST: {SSDP_GROUP}:{SSDP_PORT}\r\nMAN: "ssdp:discover"\r\nMX: {mx}\r\n'
        f"ST: {IGD_TYPE}\r\n\r\n"
    ).encode()


def add_port_mapping(
    gateway: str,
    internal_client: str,
    *,
    port: int = 49152,
    path: str = "/ctl/IPConn",
    external_port: int = 8000,
    internal_port: int = 8000,
    description: str = "HIKVISION",
) -> bytes:
    """A UPnP SOAP AddPortMapping request (HTTP POST with the envelope)."""
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:AddPortMapping xmlns:u="{WANIP_TYPE}">'
        f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{external_port}</NewExternalPort>"
        "<NewProtocol>TCP</NewProtocol>"
        f"<NewInternalPort>{internal_port}</NewInternalPort><NewInternalClient>{internal_client}</NewInternalClient>"
        f"<NewEnabled>1</NewEnabled><NewPortMappingDescription>{description}</NewPortMappingDescription>"
        "<NewLeaseDuration>0</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>"
    )
    return (
        f'POST {path} HTTP/1.1\r\nHOST: {gateway}:{port}\r\nCONTENT-TYPE: text/xml; charset="utf-8"\r\n'
        f'SOAPACTION: "{WANIP_TYPE}#AddPortMapping"\r\n'
        f"CONTENT-LENGTH: {len(body)}\r\n\r\n{body}"
    ).encode()


def rtsp_request(method: str, url: str, cseq: int, extra: str = "") -> bytes:
    """An RTSP request head (`extra` holds more header lines, each ending in CRLF)."""
    return f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: LibVLC/3.0.18\r\n{extra}\r\n".encode()


def rtsp_response(cseq: int, server: str, extra: str = "", body: str = "") -> bytes:
    """An RTSP 200 response with an optional body."""
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nServer: {server}\r\n{extra}{length}\r\n{body}".encode()


def rtsp_tunnel_get(path: str, cookie: str) -> bytes:
    """The GET that opens the answers' half of an RTSP session tunnelled in HTTP (Apple's QuickTime
    tunnelling, as VLC/live555 send it)."""
    return (
        f"GET {path} HTTP/1.0\r\nUser-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n"
        f"x-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()


def rtsp_tunnel_post(path: str, cookie: str) -> bytes:
    """The POST head that opens the requests' half; base64 RTSP requests follow as its body."""
    return (
        f"POST {path} HTTP/1.0\r\nUser-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2016.11.28)\r\n"
        f"x-sessioncookie: {cookie}\r\nContent-Type: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\n"
        "Cache-Control: no-cache\r\nContent-Length: 32767\r\nExpires: Sun, 9 Jan 1972 00:00:00 GMT\r\n\r\n"
    ).encode()


def rtsp_tunnel_ok(server: str) -> bytes:
    """The camera's answer to the tunnel's GET: RTSP answers and interleaved media follow, unencoded."""
    return (
        f"HTTP/1.0 200 OK\r\nServer: {server}\r\nContent-Type: application/x-rtsp-tunnelled\r\n"
        "Cache-Control: no-cache\r\nPragma: no-cache\r\n\r\n"
    ).encode()


def _amf0(value: object) -> bytes:
    """One AMF0 value (Adobe AMF0 specification): a number, a string, a boolean, null, or an object."""
    if value is None:
        return b"\x05"
    if isinstance(value, bool):
        return b"\x01" + bytes([value])
    if isinstance(value, int | float):
        return b"\x00" + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        return b"\x02" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        fields = b"".join(_amf0(k)[1:] + _amf0(v) for k, v in value.items())  # keys: strings unmarked
        return b"\x03" + fields + b"\x00\x00\x09"
    raise TypeError(f"no AMF0 encoding for {type(value).__name__}")


def rtmp_handshake(version: int = 3) -> bytes:
    """C0 + C1 (or S0 + S1): the version and 1536 bytes (time, zero, random); C2/S2 are 1536 more."""
    return bytes([version]) + bytes(8) + bytes((i * 7) & 0xFF for i in range(1528))


def rtmp_message(csid: int, type_id: int, body: bytes, stream_id: int = 0, chunk_size: int = 128) -> bytes:
    """One RTMP message in chunks: a type-0 chunk header, then type-3 continuations every ``chunk_size``.
    Chunk streams 2-63 take a one-byte basic header, 64-319 two bytes."""

    def basic(fmt: int) -> bytes:
        return bytes([fmt << 6 | csid]) if csid < 64 else bytes([fmt << 6, csid - 64])

    out = bytearray(basic(0))
    out += (0).to_bytes(3, "big") + len(body).to_bytes(3, "big") + bytes([type_id])
    out += stream_id.to_bytes(4, "little")
    for i in range(0, max(len(body), 1), chunk_size):
        if i:
            out += basic(3)
        out += body[i : i + chunk_size]
    return bytes(out)


def amf0_command(name: str, transaction: float, command_object: object, *args: object) -> bytes:
    """The body of an AMF0 command message: its name, transaction id, command object and arguments."""
    return _amf0(name) + _amf0(transaction) + _amf0(command_object) + b"".join(_amf0(a) for a in args)


def rtmp_command(
    name: str, transaction: float, command_object: object, *args: object, csid: int = 3, chunk_size: int = 128
) -> bytes:
    """An AMF0 command message (type 20) in chunks: ``connect``, ``createStream``, ``publish``..."""
    body = amf0_command(name, transaction, command_object, *args)
    return rtmp_message(csid, 20, body, chunk_size=chunk_size)


SDP_H264 = (
    "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=Media Presentation\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n"
)


def gb28181_register(device_id: str, platform_id: str, device_ip: str, cseq: int = 1) -> bytes:
    """A GB/T 28181 device's first REGISTER to its platform's SIP server (no credentials yet)."""
    domain = platform_id[:10]
    return (
        f"REGISTER sip:{platform_id}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {device_ip}:5060;rport;branch=z9hG4bK{cseq}2345\r\n"
        f"From: <sip:{device_id}@{domain}>;tag={cseq}77\r\n"
        f"To: <sip:{device_id}@{domain}>\r\n"
        f"Call-ID: {cseq}4567@{device_ip}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{device_id}@{device_ip}:5060>\r\n"
        "Max-Forwards: 70\r\n"
        "User-Agent: IP Camera\r\n"
        "Expires: 3600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def gb28181_keepalive(device_id: str, platform_id: str, device_ip: str, sn: int = 1) -> bytes:
    """A GB/T 28181 keep-alive: a SIP MESSAGE with a MANSCDP body (compact header names, as some send)."""
    domain = platform_id[:10]
    body = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    )
    return (
        f"MESSAGE sip:{platform_id}@{domain} SIP/2.0\r\n"
        f"v: SIP/2.0/UDP {device_ip}:5060;rport;branch=z9hG4bK{sn}999\r\n"
        f"f: <sip:{device_id}@{domain}>;tag={sn}88\r\n"
        f"t: <sip:{platform_id}@{domain}>\r\n"
        f"i: {sn}999@{device_ip}\r\n"
        f"CSeq: {sn} MESSAGE\r\n"
        "c: Application/MANSCDP+xml\r\n"
        f"l: {len(body)}\r\n\r\n{body}"
    ).encode()


def sip_register(user: str, domain: str, client_ip: str) -> bytes:
    """A VoIP phone's REGISTER (not GB/T 28181: a name, not 20-digit codes)."""
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {client_ip}:5060;branch=z9hG4bK776asdhds\r\n"
        f"From: <sip:{user}@{domain}>;tag=1928301774\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"Call-ID: a84b4c76e66710@{client_ip}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{client_ip}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ehome_register(device_id: str, firmware: str, local_ip: str, sequence: int = 1) -> bytes:
    """A Hikvision device's EHome 2.0 registration request (PPVSPMessage XML)."""
    return (
        '<?xml version="1.0" encoding="GB2312"?>'
        f"<PPVSPMessage><Version>2.0</Version><Sequence>{sequence}</Sequence>"
        "<CommandType>REQUEST</CommandType><Command>REGISTER</Command><Params>"
        f"<NetUnitType>PU</NetUnitType><DeviceID>{device_id}</DeviceID>"
        f"<FirmwareVersion>{firmware}</FirmwareVersion><LocalIP>{local_ip}</LocalIP>"
        "<LocalPort>8000</LocalPort><DevType>31</DevType><Manufacture>0</Manufacture>"
        "</Params></PPVSPMessage>"
    ).encode()


def ehome_register_ok(sequence: int = 1, alarm_server: str = "203.0.113.7") -> bytes:
    """The platform's answer to an EHome registration: accepted, with its alarm server."""
    return (
        '<?xml version="1.0" encoding="GB2312" ?>'
        f"<PPVSPMessage><Version>2.5</Version><Sequence>{sequence}</Sequence>"
        "<CommandType>RESPONSE</CommandType><Method>REGISTER</Method><WhichCommand>REGISTER</WhichCommand>"
        "<Status>200</Status><Description>OK</Description><Params><KeepAliveSeconds>15</KeepAliveSeconds>"
        f"<AlarmServerIP>{alarm_server}</AlarmServerIP><AlarmServerPort>7332</AlarmServerPort></Params>"
        "</PPVSPMessage>"
    ).encode()
