"""Vendor personas of the synthetic site: discovery, phone-home and stream handling (docs/design.md §7).

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

from lab import synth
from lab.payloads import (
    SDP_H264,
    dhip_reply,
    dns_answer,
    dns_query,
    rtsp_request,
    rtsp_response,
    sadp_probe_match,
    wsd_probe_match,
)

__all__ = [
    "DHIP_MCAST_MAC",
    "EZVIZ_STUN",
    "MCAST_MAC",
    "MS",
    "NS",
    "OFFSITE_VIEWER",
    "SDP_H264",
    "XM_IP",
    "XM_MAC",
    "dhip_reply",
    "dns_answer",
    "dns_query",
    "rtsp_request",
    "rtsp_response",
    "rtsp_session",
    "sadp_probe_match",
    "tcp_exchange",
    "tcp_timeline",
    "udp_pair",
    "wsd_probe_match",
]

NS = 1_000_000_000
MS = NS // 1000

XM_MAC, XM_IP = "02:12:41:00:05:01", "10.20.0.42"  # a white-label Xiongmai board, locally administered MAC
OFFSITE_VIEWER = "198.51.100.77"
EZVIZ_STUN = "203.0.113.8"
MCAST_MAC = "01:00:5e:7f:ff:fa"
DHIP_MCAST_MAC = "01:00:5e:7f:ff:fb"


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


def tcp_timeline(
    cmac: str, smac: str, cip: str, sip: str, cport: int, sport: int, sends: list[tuple[int, bool, bytes]]
) -> list[tuple[int, bytes]]:
    """A TCP connection whose data segments are sent at given times: ``sends`` holds (time, sent by the
    client, payload) in time order. The handshake ends before the first, FIN both ways follows the last."""
    A, S, F, P = synth.TCP_ACK, synth.TCP_SYN, synth.TCP_FIN, synth.TCP_PSH
    seq = {True: 1000, False: 5000}  # by "sent by the client"
    out: list[tuple[int, bytes]] = []

    def send(t: int, by_client: bool, flags: int, data: bytes = b"") -> None:
        smac_, dmac_, src, dst, sp, dp = (
            (cmac, smac, cip, sip, cport, sport) if by_client else (smac, cmac, sip, cip, sport, cport)
        )
        frame = synth.tcp4_frame(smac_, dmac_, src, dst, sp, dp, data, flags=flags, seq=seq[by_client],
                                 ack=seq[not by_client])  # fmt: skip
        out.append((t, frame))
        seq[by_client] += len(data) + (1 if flags & (S | F) else 0)

    first, last = sends[0][0], sends[-1][0]
    send(first - MS, True, S)
    send(first - 2 * MS // 3, False, S | A)
    send(first - MS // 3, True, A)
    for t, by_client, data in sends:
        send(t, by_client, P | A, data)
    send(last + MS, True, F | A)
    send(last + 2 * MS, False, F | A)
    send(last + 3 * MS, True, A)
    return out


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
