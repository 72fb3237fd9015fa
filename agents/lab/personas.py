"""Vendor personas of the synthetic site: discovery, phone-home and stream handling (DESIGN 3).

Each function returns (timestamp, frame) pairs. The payload layouts follow the public descriptions
the analyzers cite (SADP XML, DHIP header + JSON, EZVIZ XML over UDP, Dahua DHGET, SSDP/UPnP, RTSP).

- EZVIZ phone-home (Hikvision camera 1): looks up litedev.ezvizlife.com at the site resolver,
  connects to it on tcp/8666, XML "STUN" on udp/6002, UPnP IGD search and AddPortMapping.
  Rules: dns.vendor_cloud, egress.unexpected_destination, p2p.nat_traversal, upnp.port_mapping.
- Easy4IP (Dahua camera): looks up www.easy4ipcloud.com, DHGET on udp/8800.
  Rules: dns.vendor_cloud, egress.unexpected_destination, p2p.nat_traversal.
- Xiongmai (white-label board, locally administered MAC, named by its `uc-httpd` banner): asks
  114.114.114.114 and 8.8.8.8 directly for pub-cfg.secu100.net.
  Rules: dns.resolver_bypass, dns.vendor_cloud, egress.unexpected_destination.
- A stranger (office PC): RTSP DESCRIBE on camera 2. Rule: stream.unauthorized_client.
- An off-site client (198.51.100.77): SETUP/PLAY on camera 2, which then sends RTP to it.
  Rules: stream.unauthorized_client, stream.egress, egress.unexpected_destination.
- Well behaved (Axis camera, recorder): RTSP to the recorder, WS-Discovery. Only device.new.
"""

from __future__ import annotations

import json
import struct

from agents.lab import synth

NS = 1_000_000_000
MS = NS // 1000

XM_MAC, XM_IP = "02:12:41:00:05:01", "10.20.0.42"  # a white-label Xiongmai board, locally administered MAC
OFFSITE_VIEWER = "198.51.100.77"
EZVIZ_STUN = "203.0.113.8"
MCAST_MAC = "01:00:5e:7f:ff:fa"
DHIP_MCAST_MAC = "01:00:5e:7f:ff:fb"


def dns_query(txid: int, name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def dns_answer(txid: int, name: str, address: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes(int(x) for x in address.split("."))
    return struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + q + struct.pack("!HH", 1, 1) + answer


def udp_pair(
    t: int, cmac: str, smac: str, cip: str, sip: str, cport: int, sport: int, req: bytes, resp: bytes | None
) -> list[tuple[int, bytes]]:
    out = [(t, synth.udp4_frame(cmac, smac, cip, sip, cport, sport, req))]
    if resp is not None:
        out.append((t + 2 * MS, synth.udp4_frame(smac, cmac, sip, cip, sport, cport, resp)))
    return out


def tcp_exchange(
    t: int, cmac: str, smac: str, cip: str, sip: str, cport: int, sport: int, turns: list[tuple[bytes, bytes]]
) -> list[tuple[int, bytes]]:
    """Handshake, then request/response turns, then FIN both ways."""
    A, S, F, P = synth.TCP_ACK, synth.TCP_SYN, synth.TCP_FIN, synth.TCP_PSH
    seq_c, seq_s = 1000, 5000
    out: list[tuple[int, bytes]] = []
    clock = t

    def c(fl: int, data: bytes = b"") -> None:
        nonlocal clock, seq_c
        out.append(
            (
                clock,
                synth.tcp4_frame(cmac, smac, cip, sip, cport, sport, data, flags=fl, seq=seq_c, ack=seq_s),
            )
        )
        seq_c += len(data) + (1 if fl & (S | F) else 0)
        clock += MS

    def s(fl: int, data: bytes = b"") -> None:
        nonlocal clock, seq_s
        out.append(
            (
                clock,
                synth.tcp4_frame(smac, cmac, sip, cip, sport, cport, data, flags=fl, seq=seq_s, ack=seq_c),
            )
        )
        seq_s += len(data) + (1 if fl & (S | F) else 0)
        clock += MS

    c(S)
    s(S | A)
    c(A)
    for req, resp in turns:
        c(P | A, req)
        s(P | A, resp)
    c(F | A)
    s(F | A)
    c(A)
    return out


def sadp_probe_match(mac: str, ip: str, model: str, serial: str, firmware: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><ProbeMatch><Uuid>7C2A5F9E-4B1D-4E8A-9C3F-2D6B8A1E5F40</Uuid>'
        f"<Types>inquiry</Types><DeviceType>142378</DeviceType><DeviceDescription>{model}</DeviceDescription>"
        f"<DeviceSN>{serial}</DeviceSN><CommandPort>8000</CommandPort><HttpPort>80</HttpPort>"
        f"<MAC>{mac.replace(':', '-')}</MAC><IPv4Address>{ip}</IPv4Address><DHCP>false</DHCP>"
        f"<SoftwareVersion>{firmware}</SoftwareVersion><Activated>true</Activated></ProbeMatch>"
    ).encode()


def dhip_reply(mac: str, ip: str, model: str, serial: str, firmware: str) -> bytes:
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
                        "DefaultGateway": "10.20.0.1",
                    },
                    "HttpPort": 80,
                }
            },
        },
        separators=(",", ":"),
    ).encode()
    header = struct.pack("<I4sIIIIII", 0x20, b"DHIP", 0, 0, len(body), 0, len(body), 0)
    return header + body


def wsd_probe_match(address: str, xaddr: str, manufacturer: str, model: str) -> bytes:
    scopes = (
        f"onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/{manufacturer} "
        f"onvif://www.onvif.org/hardware/{model} onvif://www.onvif.org/location/"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        "<SOAP-ENV:Header><wsa:MessageID>uuid:5f1c7a2e-0000-4000-8000-000000000001</wsa:MessageID>"
        "<wsa:RelatesTo>uuid:0a6dc791-2be6-4991-9af1-454778a1917a</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action></SOAP-ENV:Header>"
        "<SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{address}</wsa:Address></wsa:EndpointReference>"
        f"<d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>{scopes}</d:Scopes>"
        f"<d:XAddrs>{xaddr}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def rtsp_request(method: str, url: str, cseq: int, extra: str = "") -> bytes:
    return f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: LibVLC/3.0.18\r\n{extra}\r\n".encode()


def rtsp_response(cseq: int, server: str, extra: str = "", body: str = "") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nServer: {server}\r\n{extra}{length}\r\n{body}".encode()


SDP_H264 = (
    "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=Media Presentation\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n"
)


def rtsp_session(
    t: int,
    cmac: str,
    smac: str,
    cip: str,
    sip: str,
    cport: int,
    server: str,
    rtp_client: int,
    rtp_server: int,
    methods: tuple[str, ...] = ("DESCRIBE", "SETUP", "PLAY"),
) -> list[tuple[int, bytes]]:
    url = f"rtsp://{sip}/Streaming/Channels/101"
    turns: list[tuple[bytes, bytes]] = []
    for i, method in enumerate(methods, start=1):
        if method == "DESCRIBE":
            turns.append(
                (
                    rtsp_request("DESCRIBE", url, i, "Accept: application/sdp\r\n"),
                    rtsp_response(i, server, "Content-Type: application/sdp\r\n", SDP_H264),
                )
            )
        elif method == "SETUP":
            transport = f"RTP/AVP;unicast;client_port={rtp_client}-{rtp_client + 1}"
            turns.append(
                (
                    rtsp_request("SETUP", url + "/trackID=1", i, f"Transport: {transport}\r\n"),
                    rtsp_response(
                        i,
                        server,
                        f"Transport: {transport};server_port={rtp_server}-{rtp_server + 1}"
                        "\r\nSession: 12345678\r\n",
                    ),
                )
            )
        else:
            turns.append(
                (
                    rtsp_request(method, url, i, "Session: 12345678\r\n"),
                    rtsp_response(i, server, "Session: 12345678\r\n"),
                )
            )
    return tcp_exchange(t, cmac, smac, cip, sip, cport, 554, turns)
