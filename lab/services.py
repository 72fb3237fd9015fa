"""The lab's gateway and "internet" services: `python -m lab.services gw|inet DIR`.

- gw (site services, in the gateway namespace): the site resolver on udp/53 (answers the lab's names,
  NXDOMAIN otherwise), a UPnP Internet Gateway Device (SSDP responder on 239.255.255.250:1900 and a SOAP
  endpoint that grants AddPortMapping), and NTP on udp/123.
- inet (the clouds, in the internet namespace): the EZVIZ cloud (litedev registration on tcp/8666, XML
  "STUN" on udp/6002), Easy4IP (DHGET on udp/8800), and STUN (udp/3478) with the WebRTC live-view
  signalling server (tcp/8080) from `lab.webrtc`.

Requests are parsed with the engine's own analyzers (`monitor.analyzers`): the lab answers exactly
what camwatch recognises, and garbage gets a precise log line, never a crash. Each answer is a pure
function of the request (`dns_answer`, `ssdp_answer`, `ntp_answer`, ...), served by `UdpService` or
`HttpService`, so the tests can run them on loopback without namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

from lab import payloads
from lab.httpmini import encode_response
from lab.process import lab_arguments, mark_ready, run_main, wait_for_stop
from lab.topology import LabDescription, LabPaths
from lab.udp import Address, DatagramHandler, DatagramServer
from monitor.analyzers import AnalyzerError
from monitor.analyzers import dns as dns_analyzer
from monitor.analyzers import ntp as ntp_analyzer
from monitor.analyzers import ssdp as ssdp_analyzer
from monitor.analyzers import upnp as upnp_analyzer
from monitor.analyzers.http import Headers, parse_request_line, split_head
from monitor.analyzers.p2p import DahuaP2pMessage, EzvizXmlMessage

__all__ = [
    "HttpReply",
    "HttpRequest",
    "HttpService",
    "IgdDevice",
    "UdpService",
    "dns_answer",
    "easy4ip_answer",
    "ezviz_register_reply",
    "ezviz_stun_answer",
    "main",
    "ntp_answer",
    "ssdp_answer",
]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 16 * 1024
MAX_BODY: Final = 64 * 1024
IO_TIMEOUT: Final = 10.0
NTP_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


# --- UDP and HTTP servers -----------------------------------------------------------------------------


class UdpService(DatagramServer):
    """Answer each datagram with `handler(data, peer)` (None: no answer); may join a multicast group."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        handler: DatagramHandler,
        *,
        group: str | None = None,
        group_interface: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.handler = handler
        self.group = group
        self.group_interface = group_interface
        self.requests = 0
        super().__init__(port)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            if self.group is not None:
                iface = socket.inet_aton(self.group_interface or "0.0.0.0")
                sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(self.group) + iface
                )
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"{self.name}: cannot listen on udp {self.host}:{self._port}: {exc}"
            ) from exc
        await self._listen(self.name, self._answer, sock=sock)
        log.info("%s listening on udp %s:%d", self.name, self.host, self.port)

    def _answer(self, data: bytes, peer: Address) -> bytes | None:
        try:
            reply = self.handler(data, peer)
        except Exception:  # a handler bug must not stop the service
            log.exception("%s: handler failed on %d bytes from %s:%d", self.name, len(data), *peer)
            return None
        self.requests += 1
        return reply


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP/1.x request as the lab's servers see it."""

    method: str
    target: str
    headers: Headers
    body: bytes
    raw: bytes  # the whole request as received (head and body)
    peer: Address = ("", 0)

    @classmethod
    def parse(cls, head: bytes, body: bytes = b"", peer: Address = ("", 0)) -> HttpRequest:
        """Parse a request head (through its blank line); ValueError says what is wrong."""
        try:
            msg = split_head(head, "http", MAX_HEAD)
            if not msg.complete:
                raise ValueError("request head does not end with a blank line")
            method, target, _version = parse_request_line(msg.start_line, "http", "HTTP")
        except AnalyzerError as exc:
            raise ValueError(str(exc)) from exc
        return cls(method, target, msg.headers, body, head + body, peer)


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A response: status, reason, extra headers, body."""

    status: int
    reason: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    server: str = "camwatch-lab"

    def encode(self) -> bytes:
        return encode_response(self.status, self.reason, (("Server", self.server), *self.headers), self.body)


async def read_http_request(reader: asyncio.StreamReader, peer: Address) -> HttpRequest:
    """Read one request (head, then a Content-Length body); ValueError for anything malformed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ValueError(f"request head longer than {MAX_HEAD} bytes") from exc
    except asyncio.IncompleteReadError as exc:
        raise ValueError(
            f"connection closed after {len(exc.partial)} bytes, inside the request head"
        ) from exc
    request = HttpRequest.parse(head, peer=peer)
    length_text = request.headers.get("Content-Length")
    if length_text is None:
        return request
    if not (length_text.isascii() and length_text.isdigit()) or int(length_text) > MAX_BODY:
        raise ValueError(f"Content-Length {length_text[:20]!r} is not a number up to {MAX_BODY}")
    try:
        body = await reader.readexactly(int(length_text))
    except asyncio.IncompleteReadError as exc:
        raise ValueError(f"connection closed after {len(exc.partial)} of {length_text} body bytes") from exc
    return HttpRequest.parse(head, body, peer)


class HttpService:
    """A one-request-per-connection HTTP server answering with `handler(request)`."""

    def __init__(self, name: str, host: str, port: int, handler: Callable[[HttpRequest], HttpReply]) -> None:
        self.name = name
        self.host = host
        self.handler = handler
        self.requests = 0
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_HEAD)
        except OSError as exc:
            raise OSError(
                exc.errno, f"{self.name}: cannot listen on tcp {self.host}:{self._port}: {exc}"
            ) from exc
        log.info("%s listening on tcp %s:%d", self.name, self.host, self.port)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername") or ("?", 0)
        peer: Address = (str(name[0]), int(name[1]))
        try:
            try:
                request = await asyncio.wait_for(read_http_request(reader, peer), IO_TIMEOUT)
            except ValueError as exc:
                log.warning("%s: bad request from %s:%d: %s", self.name, *peer, exc)
                reply = HttpReply(400, "Bad Request", f"{exc}\n".encode())
            else:
                self.requests += 1
                try:
                    reply = self.handler(request)
                except Exception:  # a handler bug must not stop the service
                    log.exception("%s: handler failed on %s %s", self.name, request.method, request.target)
                    reply = HttpReply(500, "Internal Server Error")
            writer.write(reply.encode())
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.info("%s: connection from %s:%d: %s", self.name, *peer, exc or type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


# --- site services: DNS, UPnP IGD, NTP ----------------------------------------------------------------

RCODE_FORMERR: Final = 1
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4
TYPE_A: Final = 1
TYPE_ANY: Final = 255
CLASS_IN: Final = 1


def _dns_header(ident: int, query_flags: int, rcode: int, qd: int, an: int) -> bytes:
    # QR, AA (the lab's names are ours), RD copied from the query, RA; opcode copied.
    flags = 0x8000 | 0x0400 | (query_flags & 0x7900) | 0x0080 | rcode
    return struct.pack("!HHHHHH", ident, flags, qd, an, 0, 0)


def dns_answer(query: bytes, lookup: Callable[[str], str | None], ttl: int = 60) -> bytes | None:
    """The site resolver's response to one UDP query (None: no answer at all).

    Known names get an A record, other types NODATA; unknown names NXDOMAIN. A malformed query with a
    readable header gets FORMERR, anything shorter is dropped, and responses are never answered.
    """
    try:
        msg = dns_analyzer.parse(query)
    except AnalyzerError as exc:
        if len(query) < dns_analyzer.HEADER_LEN or query[2] & 0x80:
            log.info("dns: dropped %d bytes that are not a query: %s", len(query), exc)
            return None
        ident, flags = struct.unpack_from("!HH", query)
        log.info("dns: FORMERR for a malformed query: %s", exc)
        return _dns_header(ident, flags, RCODE_FORMERR, 0, 0)
    if msg.is_response:
        return None
    if msg.opcode != 0:
        return _dns_header(msg.id, msg.flags, RCODE_NOTIMP, 0, 0)
    if len(msg.questions) != 1:
        return _dns_header(msg.id, msg.flags, RCODE_FORMERR, 0, 0)
    name, qtype, qclass = msg.questions[0]
    # Echo the question as sent (its case too), from the end of the header to after QTYPE/QCLASS.
    _, end = dns_analyzer.read_name(query, dns_analyzer.HEADER_LEN)
    question = query[dns_analyzer.HEADER_LEN : end + 4]
    address = lookup(name)
    if address is None:
        log.info("dns: %s: NXDOMAIN", name)
        return _dns_header(msg.id, msg.flags, RCODE_NXDOMAIN, 1, 0) + question
    if qtype not in (TYPE_A, TYPE_ANY) or (qclass & 0x7FFF) != CLASS_IN:
        return _dns_header(msg.id, msg.flags, 0, 1, 0) + question  # NODATA
    log.info("dns: %s -> %s", name, address)
    record = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + socket.inet_aton(address)
    return _dns_header(msg.id, msg.flags, 0, 1, 1) + question + record


_SSDP_ANSWERED: Final = ("ssdp:all", "upnp:rootdevice")


def ssdp_answer(data: bytes, location: str, uuid: str) -> bytes | None:
    """The IGD's answer to an M-SEARCH for it (or for everything); None for anything else."""
    try:
        msg = ssdp_analyzer.parse(data)
    except AnalyzerError as exc:
        log.debug("ssdp: ignored: %s", exc)
        return None
    if msg.kind != "search" or msg.st is None:
        return None
    st = msg.st.strip()
    if not (msg.is_igd_search or st.lower() in _SSDP_ANSWERED):
        return None
    answer_st = payloads.IGD_TYPE if st.lower() in _SSDP_ANSWERED else st
    log.info("ssdp: answering M-SEARCH for %s", st)
    return (
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
        f"LOCATION: {location}\r\nSERVER: Linux/6.1 UPnP/1.1 camwatch-lab-igd/1.0\r\n"
        f"ST: {answer_st}\r\nUSN: uuid:{uuid}::{answer_st}\r\n\r\n"
    ).encode()


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A mapping an IGD client asked for."""

    client: str
    protocol: str
    external_port: int
    internal_port: int
    description: str


@dataclass
class IgdDevice:
    """A UPnP Internet Gateway Device's HTTP side: the description and a WANIPConnection control URL."""

    external_ip: str
    uuid: str = "7a4e0c1e-1a2b-4c3d-8e9f-0077000000a1"
    description_path: str = "/rootDesc.xml"
    control_path: str = "/ctl/IPConn"
    mappings: list[PortMapping] = field(default_factory=list)
    max_mappings: int = 128

    def description(self) -> bytes:
        return (
            '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">'
            "<specVersion><major>1</major><minor>0</minor></specVersion><device>"
            f"<deviceType>{payloads.IGD_TYPE}</deviceType><friendlyName>camwatch lab router</friendlyName>"
            f"<manufacturer>camwatch</manufacturer><modelName>lab-igd</modelName><UDN>uuid:{self.uuid}</UDN>"
            "<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>"
            "<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>"
            f"<serviceList><service><serviceType>{payloads.WANIP_TYPE}</serviceType>"
            "<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>"
            f"<controlURL>{self.control_path}</controlURL><SCPDURL>/WANIPCn.xml</SCPDURL></service>"
            "</serviceList></device></deviceList></device></deviceList></device></root>"
        ).encode()

    def handle(self, request: HttpRequest) -> HttpReply:
        """Serve the description (GET) or a SOAP action (POST to the control URL)."""
        xml = (("Content-Type", 'text/xml; charset="utf-8"'),)
        if request.method == "GET" and request.target == self.description_path:
            return HttpReply(200, "OK", self.description(), xml)
        if request.method != "POST" or request.target != self.control_path:
            return HttpReply(404, "Not Found")
        try:
            soap = upnp_analyzer.parse(request.raw)
        except AnalyzerError as exc:
            log.warning("igd: bad SOAP request from %s: %s", request.peer[0], exc)
            return self._fault(402, f"Invalid Args: {exc}")
        if soap.action == "AddPortMapping":
            ext, internal, proto = soap.external_port, soap.internal_port, soap.protocol
            if ext is None or internal is None or proto not in ("TCP", "UDP") or not soap.internal_client:
                return self._fault(402, "Invalid Args")
            if len(self.mappings) < self.max_mappings:
                self.mappings.append(
                    PortMapping(soap.internal_client, proto, ext, internal, soap.description or "")
                )
            log.info(
                "igd: %s mapped %s/%d to %s:%d (%s)",
                request.peer[0],
                proto,
                ext,
                soap.internal_client,
                internal,
                soap.description,
            )
            return HttpReply(200, "OK", self._envelope("AddPortMappingResponse", ""), xml)
        if soap.action == "GetExternalIPAddress":
            inner = f"<NewExternalIPAddress>{self.external_ip}</NewExternalIPAddress>"
            return HttpReply(200, "OK", self._envelope("GetExternalIPAddressResponse", inner), xml)
        return self._fault(401, "Invalid Action")

    @staticmethod
    def _envelope(element: str, inner: str) -> bytes:
        return (
            '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{element} xmlns:u="{payloads.WANIP_TYPE}">{inner}</u:{element}></s:Body></s:Envelope>'
        ).encode()

    @staticmethod
    def _fault(code: int, text: str) -> HttpReply:
        body = (
            '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
            f'<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{code}</errorCode>'
            f"<errorDescription>{text[:80]}</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
        ).encode()
        return HttpReply(500, "Internal Server Error", body, (("Content-Type", 'text/xml; charset="utf-8"'),))


def ntp_answer(data: bytes, now: float, reference_id: bytes = b"\x0a\x4d\x00\x01") -> bytes | None:
    """A stratum-2 server's answer to an NTP client request (mode 3); None for anything else."""
    try:
        msg = ntp_analyzer.parse(data)
    except AnalyzerError as exc:
        log.info("ntp: ignored: %s", exc)
        return None
    if msg.mode != 3:
        return None

    def stamp(t: float) -> bytes:
        seconds = int(t) + NTP_EPOCH_OFFSET
        return struct.pack("!II", seconds & 0xFFFFFFFF, int((t % 1) * 2**32) & 0xFFFFFFFF)

    first = (msg.version << 3) | 4  # leap 0, the client's version, mode 4 (server)
    poll = max(-128, min(127, msg.poll or 6))
    head = struct.pack("!BBbb", first, 2, poll, -20) + struct.pack("!II", 0x00000100, 0x00000200)
    return head + reference_id[:4] + stamp(now - 16) + data[40:48] + stamp(now) + stamp(now)


# --- clouds: EZVIZ, Easy4IP --------------------------------------------------------------------------


def ezviz_register_reply(request: HttpRequest, cloud_ip: str, stun_port: int) -> HttpReply:
    """litedev's answer to a device registration: where its servers are (as the real cloud hands out)."""
    if request.method != "POST":
        return HttpReply(405, "Method Not Allowed")
    body = json.dumps(
        {
            "resultCode": "0",
            "resultDes": "success",
            "das": {"address": cloud_ip, "port": 8666},
            "stun": {"address": cloud_ip, "port": stun_port},
            "ts": int(time.time() * 1000),
        },
        separators=(",", ":"),
    ).encode()
    log.info("ezviz: registration from %s (%d bytes)", request.peer[0], len(request.body))
    return HttpReply(200, "OK", body, (("Content-Type", "application/json"),), server="nginx")


def ezviz_stun_answer(data: bytes, peer: Address) -> bytes | None:
    """The EZVIZ XML "STUN" answer: the address the request came from."""
    try:
        msg = EzvizXmlMessage.parse(data)
    except AnalyzerError as exc:
        log.info("ezviz-stun: ignored %d bytes from %s: %s", len(data), peer[0], exc)
        return None
    if msg.root != "Request":
        return None
    log.info("ezviz-stun: %s from %s:%d", msg.serial, *peer)
    return payloads.ezviz_nat_answer(msg.serial or "", peer[0], peer[1])


def easy4ip_answer(data: bytes, peer: Address, server: Address) -> bytes | None:
    """Easy4IP's answer to a DHGET/DHPOST: 200 with the P2P server's address."""
    try:
        msg = DahuaP2pMessage.parse(data)
    except AnalyzerError as exc:
        log.info("easy4ip: ignored %d bytes from %s: %s", len(data), peer[0], exc)
        return None
    if msg.method is None:
        return None
    cseq = next((v for k, v in msg.headers if k == "cseq"), "0")
    body = f"<body><US>{server[0]}:{server[1]}</US><PubAddr>{peer[0]}:{peer[1]}</PubAddr></body>"
    log.info("easy4ip: %s %s from %s:%d", msg.method, msg.path, *peer)
    return f"HTTP/1.1 200 OK\r\nCSeq: {cseq}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()


# --- the two service processes -----------------------------------------------------------------------


async def serve_gateway(desc: LabDescription, stack: contextlib.AsyncExitStack) -> list[str]:
    """Start the site services in the gateway namespace; returns what listens where."""
    svc = desc.services
    igd = IgdDevice(external_ip=desc.gateway.inet_ip)
    location = f"http://{svc.igd}:{svc.igd_port}{igd.description_path}"
    ref = socket.inet_aton(desc.gateway.bridge_ip)
    started = [
        await stack.enter_async_context(
            UdpService("dns", svc.resolver, 53, lambda data, peer: dns_answer(data, svc.lookup))
        ),
        await stack.enter_async_context(
            UdpService(
                "ssdp",
                "0.0.0.0",
                payloads.SSDP_PORT,
                lambda data, peer: ssdp_answer(data, location, igd.uuid),
                group=payloads.SSDP_GROUP,
                group_interface=desc.gateway.bridge_ip,
            )
        ),
        await stack.enter_async_context(
            UdpService("ntp", svc.ntp, 123, lambda data, peer: ntp_answer(data, time.time(), ref))
        ),
    ]
    http = await stack.enter_async_context(HttpService("igd", svc.igd, svc.igd_port, igd.handle))
    return [f"{s.name} udp {s.host}:{s.port}" for s in started] + [f"{http.name} tcp {http.host}:{http.port}"]


async def serve_internet(desc: LabDescription, stack: contextlib.AsyncExitStack) -> list[str]:
    """Start the clouds in the internet namespace; returns what listens where."""
    svc = desc.services
    cloud, e4 = svc.ezviz_cloud, (svc.easy4ip, svc.easy4ip_port)
    register = await stack.enter_async_context(
        HttpService(
            "ezviz-cloud",
            cloud,
            svc.ezviz_port,
            lambda r: ezviz_register_reply(r, cloud, svc.ezviz_stun_port),
        )
    )
    stun_xml = await stack.enter_async_context(
        UdpService("ezviz-stun", cloud, svc.ezviz_stun_port, ezviz_stun_answer)
    )
    easy4ip = await stack.enter_async_context(
        UdpService("easy4ip", e4[0], e4[1], lambda data, peer: easy4ip_answer(data, peer, e4))
    )
    out = [
        f"ezviz-cloud tcp {cloud}:{register.port}",
        f"ezviz-stun udp {cloud}:{stun_xml.port}",
        f"easy4ip udp {e4[0]}:{easy4ip.port}",
    ]
    # The WebRTC side (STUN and live-view signalling) needs aiortc: without it the clouds above still run.
    try:
        from lab.webrtc import LiveViewServer, StunServer
    except ImportError as exc:
        log.error("WebRTC services unavailable (install camwatch[lab]): %s", exc)
        return out
    await stack.enter_async_context(StunServer(svc.stun, svc.stun_port))
    await stack.enter_async_context(
        LiveViewServer(svc.stun, svc.signalling_port, stun_server=svc.stun_server)
    )
    return [*out, f"stun udp {svc.stun_server}", f"liveview tcp {svc.stun}:{svc.signalling_port}"]


ROLES: Final[dict[str, Callable[[LabDescription, contextlib.AsyncExitStack], Awaitable[list[str]]]]] = {
    "gw": serve_gateway,
    "inet": serve_internet,
}


async def run(role: str, directory: Path) -> None:
    """Serve `role` until SIGTERM."""
    paths = LabPaths(directory)
    desc = LabDescription.load(paths.lab_json)
    async with contextlib.AsyncExitStack() as stack:
        listening = await ROLES[role](desc, stack)
        mark_ready(paths, role, {"services": listening})
        log.info("%s services ready: %s", role, "; ".join(listening))
        await wait_for_stop()
    log.info("%s services stopped", role)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the camera lab's gateway or internet services.")
    parser.add_argument("role", choices=sorted(ROLES))
    lab_arguments(parser)
    return run_main(
        parser,
        argv,
        lambda args: run(args.role, args.directory),
        process=lambda args: f"services-{args.role}",
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
