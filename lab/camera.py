"""A simulated camera: `python -m lab.camera DIR NAME` (run inside the camera's namespace).

One asyncio process serves real RTSP with H.264 video (`lab.rtsp_server`) and plays its vendor
persona (docs/design.md §7) with real sockets:

- `ezviz` (EZVIZ/Hikvision): SADP announcements; when triggered, looks up litedev.ezvizlife.com at the
  site resolver and registers on tcp/8666, asks the XML "STUN" server on udp/6002 for its public address,
  searches for a UPnP IGD and asks it for a port mapping, and streams cloud live view over WebRTC (ICE/STUN,
  DTLS, SRTP) for `LIVE_VIEW_SECONDS`.
- `dahua`: DHIP announcements; when triggered, looks up www.easy4ipcloud.com and registers with DHGET on
  udp/8800.
- `axis` (well behaved): WS-Discovery Hello; when triggered, an NTP exchange with the gateway and a Hello:
  the control case, which must raise no alert.
- `xiongmai` (an infected white-label DVR): serves its web interface (tcp/80, factory password admin with
  an empty password), Xiongmai's telnet enabler (tcp/9530: ``OpenTelnet:OpenOnce`` starts a telnet server on
  tcp/23) and, when triggered, scans like Mirai: TCP SYNs from a raw socket whose sequence number is the
  destination address, to addresses of 203.0.113.0/24 that do not exist, on tcp/23 and 2323. The lab's
  attacker (``lab.attacker``) attacks it.

After start a camera stays quiet (discovery and RTSP only) until triggered through its control file
(`DIR/control/NAME.json`, polled every `POLL_SECONDS`), or every `trigger_every` seconds if lab.json says
so. Each behaviour appends a `LabEvent` to `DIR/events.jsonl`, with the rule ids camwatch must raise;
`ts` is when it started, the line is written once its packets are out. Network errors are logged and
recorded in the event's `detail.error`: a camera never stops because a service did not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import random
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from lab import payloads, synth
from lab.process import lab_arguments, mark_ready, run_main, wait_for_stop
from lab.topology import Camera, Control, LabDescription, LabEvent, LabPaths, write_atomic
from monitor.analyzers import AnalyzerError
from monitor.analyzers import dns as dns_analyzer
from monitor.analyzers import ssdp as ssdp_analyzer

__all__ = [
    "BEHAVIOURS",
    "CameraProcess",
    "Persona",
    "http_exchange",
    "http_status",
    "main",
    "resolve",
    "udp_exchange",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]

POLL_SECONDS: Final = 0.2
ANNOUNCE_SECONDS: Final = 60.0
LIVE_VIEW_SECONDS: Final = 15.0
REPLY_TIMEOUT: Final = 2.0
GB28181_PORT: Final = 5060
GB28181_PLATFORM: Final = "34020000002000000001"  # type 200: a platform's central SIP server
MAX_REPLY: Final = 64 * 1024

# What each behaviour must make camwatch raise (rule ids, `monitor/alerts.py`). The first occurrence of
# an incident raises it; repeats within 24 h are suppressed by the agent (same event.id).
BEHAVIOURS: Final[dict[str, tuple[str, ...]]] = {
    "ezviz.phone_home": ("dns.vendor_cloud", "egress.unexpected_destination"),
    "ezviz.xml_stun": ("p2p.nat_traversal", "egress.unexpected_destination"),
    "hikvision.gb28181": ("platform.registration", "egress.unexpected_destination"),
    "ezviz.upnp": ("upnp.port_mapping",),
    "ezviz.live_view": ("p2p.nat_traversal", "stream.egress", "egress.unexpected_destination"),
    "dahua.phone_home": ("dns.vendor_cloud", "p2p.nat_traversal", "egress.unexpected_destination"),
    "axis.routine": (),
    "office.unauthorized_pull": ("stream.unauthorized_client",),
    # A Mirai scan is one device.scanning alert; the few egress alerts before it is recognised stay (at most
    # three: the rest are folded into its incident).
    "xiongmai.scanning": ("device.scanning", "egress.unexpected_destination"),
    "attacker.exploits": ("exploit.attempt", "device.telnet", "device.exposed"),
    "attacker.password_guessing": ("auth.bruteforce", "auth.default_credentials"),
}


# --- sockets ------------------------------------------------------------------------------------------


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.replies.put_nowait((data, (str(addr[0]), int(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp: %s", exc)


class UdpSocket:
    """A bound UDP socket to send requests from and collect the replies (async context manager)."""

    def __init__(self, port: int = 0, *, reuse: bool = False) -> None:
        self._port = port
        self._reuse = reuse
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol = _Collect()

    @property
    def port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    async def __aenter__(self) -> UdpSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self._reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", self._port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self._protocol, sock=sock)
        self._transport = transport
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, payload: bytes, dest: Address) -> None:
        assert self._transport is not None
        self._transport.sendto(payload, dest)

    async def reply(self, timeout: float = REPLY_TIMEOUT) -> tuple[bytes, Address] | None:
        """The next datagram received, or None after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self._protocol.replies.get(), timeout)
        except TimeoutError:
            return None


async def udp_exchange(dest: Address, payload: bytes, timeout: float = REPLY_TIMEOUT) -> bytes | None:
    """Send one datagram from an ephemeral port; the first reply, or None."""
    async with UdpSocket() as sock:
        sock.send(payload, dest)
        got = await sock.reply(timeout)
    return None if got is None else got[0]


async def resolve(resolver: str, name: str, timeout: float = REPLY_TIMEOUT, port: int = 53) -> str | None:
    """Look `name` up (type A) at `resolver` the way a camera's firmware does: one UDP query.

    None when the resolver does not answer or has no address; ValueError when the answer is garbage.
    """
    txid = random.randrange(1, 0xFFFF)
    answer = await udp_exchange((resolver, port), payloads.dns_query(txid, name), timeout)
    if answer is None:
        return None
    try:
        msg = dns_analyzer.parse(answer)
    except AnalyzerError as exc:
        raise ValueError(f"resolver {resolver} answered garbage for {name}: {exc}") from exc
    if msg.id != txid:
        raise ValueError(f"resolver {resolver} answered transaction {msg.id}, not {txid}")
    return next((r.value for r in msg.answers if r.rtype == dns_analyzer.TYPE_A), None)


async def http_exchange(
    host: str, port: int, request: bytes, timeout: float = 5.0, *, source: str | None = None
) -> bytes:
    """Send one request on a new TCP connection (from the address ``source`` when given) and read the reply
    until the server closes."""
    async with asyncio.timeout(timeout):
        local = (source, 0) if source is not None else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        try:
            writer.write(request)
            await writer.drain()
            reply = b""
            while len(reply) < MAX_REPLY and (chunk := await reader.read(65536)):
                reply += chunk
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return reply


def http_status(reply: bytes) -> int | None:
    """The status code of an HTTP/1.x reply, or None when it is not one."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(m.group(1)) if m else None


# --- personas -----------------------------------------------------------------------------------------


class PatternSource(Protocol):
    @property
    def pattern(self) -> str: ...


@dataclass
class Persona:
    """A camera's vendor behaviour. `announce` is harmless discovery; `misbehave` is one triggered round."""

    desc: LabDescription
    cam: Camera
    paths: LabPaths
    video: PatternSource | None = None

    async def announce(self) -> None:
        """Discovery traffic (multicast hellos): never an alert."""

    async def misbehave(self) -> None:
        """One round of the persona's misbehaviours."""

    async def serve(self) -> None:
        """Services of the persona's own, beside RTSP (run for the camera's life); none by default."""

    async def behaviour(self, name: str, action: Callable[[dict[str, object]], Awaitable[None]]) -> None:
        """Run one behaviour and record it in events.jsonl (with the error, if it failed)."""
        started = time.time()
        detail: dict[str, object] = {}
        try:
            await action(detail)
        except (OSError, TimeoutError, ValueError) as exc:
            detail["error"] = str(exc) or type(exc).__name__
            log.warning("%s %s: %s", self.cam.name, name, detail["error"])
        except ImportError as exc:
            detail["error"] = f"unavailable: {exc}"
            log.error("%s %s: %s", self.cam.name, name, exc)
        except Exception as exc:  # a bug in one behaviour (or in aiortc) must not stop the camera
            detail["error"] = f"{type(exc).__name__}: {exc}"
            log.exception("%s %s failed", self.cam.name, name)
        else:
            log.info("%s %s: %s", self.cam.name, name, json.dumps(detail))
        event = LabEvent(started, self.cam.name, self.cam.ip, self.cam.mac, name, BEHAVIOURS[name], detail)
        try:
            event.append_to(self.paths.events)
        except OSError as exc:
            log.error("%s: cannot record %s in %s: %s", self.cam.name, name, self.paths.events, exc)

    async def multicast(self, group: str, port: int, payload: bytes, source_port: int | None = None) -> None:
        async with UdpSocket(source_port or 0, reuse=source_port is not None) as sock:
            sock.send(payload, (group, port))


class EzvizPersona(Persona):
    """EZVIZ / Hikvision: phone-home by name, XML "STUN", UPnP port mapping, WebRTC cloud live view."""

    async def announce(self) -> None:
        cam = self.cam
        probe_match = payloads.sadp_probe_match(cam.mac, cam.ip, cam.model, cam.serial, cam.firmware)
        await self.multicast(payloads.SSDP_GROUP, payloads.SADP_PORT, probe_match, payloads.SADP_PORT)

    async def misbehave(self) -> None:
        await self.behaviour("ezviz.phone_home", self.phone_home)
        await self.behaviour("ezviz.xml_stun", self.xml_stun)
        await self.behaviour("hikvision.gb28181", self.gb28181)
        await self.behaviour("ezviz.upnp", self.upnp)
        await self.behaviour("ezviz.live_view", self.live_view)

    @property
    def short_serial(self) -> str:
        # EZVIZ devices register with the 9-character verification serial printed on the label.
        return self.cam.serial[-9:]

    async def phone_home(self, detail: dict[str, object]) -> None:
        name = "litedev.ezvizlife.com"
        address = await resolve(self.desc.services.resolver, name)
        detail.update(name=name, address=address)
        if address is None:
            raise ValueError(f"{name} did not resolve at {self.desc.services.resolver}")
        port = self.desc.services.ezviz_port
        reply = await http_exchange(address, port, payloads.ezviz_register(name, self.short_serial))
        detail.update(port=port, status=http_status(reply))
        with contextlib.suppress(ValueError, IndexError):
            body = json.loads(reply.partition(b"\r\n\r\n")[2])
            detail["stun"] = f"{body['stun']['address']}:{body['stun']['port']}"

    async def xml_stun(self, detail: dict[str, object]) -> None:
        dest = (self.desc.services.ezviz_cloud, self.desc.services.ezviz_stun_port)
        async with UdpSocket() as sock:
            # Real devices repeat the query; three keep the flow short.
            answers = 0
            for _ in range(3):
                sock.send(payloads.ezviz_nat_query(self.short_serial, self.cam.ip, sock.port), dest)
                if await sock.reply() is not None:
                    answers += 1
        detail.update(server=f"{dest[0]}:{dest[1]}", answers=answers)

    async def gb28181(self, detail: dict[str, object]) -> None:
        # Platform Access set to GB/T 28181: a REGISTER and a keep-alive to the platform's SIP server (the
        # lab's cloud host stands in for it; nothing answers on udp/5060 there: a platform that is down).
        dest = (self.desc.services.ezviz_cloud, GB28181_PORT)
        device_id = f"3402000000132{int(self.cam.ip.rsplit('.', 1)[1]):07d}"
        async with UdpSocket(GB28181_PORT, reuse=True) as sock:
            sock.send(payloads.gb28181_register(device_id, GB28181_PLATFORM, self.cam.ip), dest)
            sock.send(payloads.gb28181_keepalive(device_id, GB28181_PLATFORM, self.cam.ip), dest)
        detail.update(platform=f"{dest[0]}:{dest[1]}", device_id=device_id)

    async def upnp(self, detail: dict[str, object]) -> None:
        async with UdpSocket() as sock:
            sock.send(payloads.igd_search(), (payloads.SSDP_GROUP, payloads.SSDP_PORT))
            got = await sock.reply(3.0)
        if got is None:
            raise TimeoutError("no IGD answered the SSDP search")
        try:
            location = ssdp_analyzer.parse(got[0]).location
        except AnalyzerError as exc:
            raise ValueError(f"bad SSDP answer from {got[1][0]}: {exc}") from exc
        m = re.fullmatch(r"http://([0-9.]+):(\d+)(/\S*)", location or "")
        if m is None:
            raise ValueError(f"IGD at {got[1][0]} gave an unusable LOCATION {location!r}")
        host, port = m.group(1), int(m.group(2))
        description = await http_exchange(
            host, port, f"GET {m.group(3)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        )
        control = re.search(
            rb"WANIPConnection:1</serviceType>.*?<controlURL>([^<]+)</controlURL>", description
        )
        path = control.group(1).decode() if control else "/ctl/IPConn"
        reply = await http_exchange(
            host, port, payloads.add_port_mapping(host, self.cam.ip, port=port, path=path)
        )
        detail.update(igd=f"{host}:{port}", control=path, status=http_status(reply))

    async def live_view(self, detail: dict[str, object]) -> None:
        from lab.video import VideoSpec
        from lab.webrtc import LiveViewError, start_live_view

        svc = self.desc.services
        video = self.video
        detail.update(signalling=svc.signalling_url, stun=svc.stun_server, seconds=LIVE_VIEW_SECONDS)
        try:
            session = await start_live_view(
                signaling_url=svc.signalling_url,
                spec=VideoSpec(width=320, height=180, fps=10, gop=20, bitrate=300_000),
                stun_server=svc.stun_server,
                pattern=(lambda: video.pattern) if video is not None else (lambda: "normal"),
            )
        except LiveViewError as exc:
            raise ValueError(str(exc)) from exc
        # The event is written after the stream ends; log now so the operator sees it started.
        log.info("%s live view connected; streaming %g s", self.cam.name, LIVE_VIEW_SECONDS)
        try:
            await asyncio.sleep(LIVE_VIEW_SECONDS)
        finally:
            await session.close()


class DahuaPersona(Persona):
    """Dahua / Imou: DHIP announcements; Easy4IP lookup and DHGET registration on udp/8800."""

    async def announce(self) -> None:
        cam = self.cam
        reply = payloads.dhip_reply(
            cam.mac, cam.ip, cam.model, cam.serial, cam.firmware, self.desc.gateway.bridge_ip
        )
        await self.multicast(payloads.DHIP_GROUP, payloads.DHIP_PORT, reply, payloads.DHIP_PORT)

    async def misbehave(self) -> None:
        await self.behaviour("dahua.phone_home", self.phone_home)

    async def phone_home(self, detail: dict[str, object]) -> None:
        name = "www.easy4ipcloud.com"
        address = await resolve(self.desc.services.resolver, name)
        detail.update(name=name, address=address)
        if address is None:
            raise ValueError(f"{name} did not resolve at {self.desc.services.resolver}")
        port = self.desc.services.easy4ip_port
        answers = 0
        async with UdpSocket() as sock:
            for cseq, path in enumerate(("/probe/p2psrv", f"/online/p2psrv/{self.cam.serial}"), start=1):
                sock.send(payloads.dhget(path, cseq), (address, port))
                if await sock.reply() is not None:
                    answers += 1
        detail.update(port=port, answers=answers)


class AxisPersona(Persona):
    """Well behaved: WS-Discovery Hello, NTP with the gateway, video to the recorder. Nothing else."""

    hellos = 0

    async def announce(self) -> None:
        cam = self.cam
        self.hellos += 1
        hello = payloads.wsd_hello(
            f"urn:uuid:axis-{cam.mac.replace(':', '')}",
            f"http://{cam.ip}/onvif/device_service",
            "AXIS",
            cam.model,
            self.hellos,
        )
        await self.multicast(payloads.SSDP_GROUP, payloads.WSD_PORT, hello)

    async def misbehave(self) -> None:
        await self.behaviour("axis.routine", self.routine)

    async def routine(self, detail: dict[str, object]) -> None:
        ntp = bytes([0x23]) + bytes(39) + _ntp_now()
        answer = await udp_exchange((self.desc.services.ntp, 123), ntp)
        await self.announce()
        detail.update(ntp=self.desc.services.ntp, ntp_answered=answer is not None, hello=True)


def _ntp_now() -> bytes:
    t = time.time()
    return (int(t) + 2_208_988_800).to_bytes(4, "big") + int((t % 1) * 2**32).to_bytes(4, "big")


# The infected DVR's web interface: it accepts its factory login (admin, empty password) and refuses the rest.
_XM_SERVER: Final = "uc-httpd 1.0.0"
_XM_FACTORY_LOGIN: Final = "Basic " + base64.b64encode(b"admin:").decode()
_XM_BANNER: Final = (
    bytes([0xFF, 0xFD, 0x01, 0xFF, 0xFD, 0x1F, 0xFF, 0xFB, 0x01, 0xFF, 0xFB, 0x03]) + b"\r\nLocalHost login: "
)
SCAN_TARGETS: Final = 60
SCAN_INTERVAL: Final = 0.02


def xm_answer(request: bytes) -> bytes:
    """What the DVR's web interface answers to one request (its head and body)."""
    head = request.partition(b"\r\n\r\n")[0].decode("latin-1")
    line = head.split("\r\n", 1)[0]
    auth = re.search(r"(?im)^authorization:[ \t]*(.*)$", head)
    if auth is not None:
        if auth.group(1).strip() == _XM_FACTORY_LOGIN:
            return _http(200, b"<html><title>NETSurveillance WEB</title></html>")
        return _http(401, b"", 'WWW-Authenticate: Basic realm="NETSurveillance"\r\n')
    if line.startswith("POST /RPC2_Login"):
        return _http(200, b'{"error":{"code":268632071,"message":"Login failed"},"result":false}')
    if line.startswith("PUT /SDK/"):
        return _http(404, b"")
    return _http(401, b"", 'WWW-Authenticate: Basic realm="NETSurveillance"\r\n')


def _http(status: int, body: bytes, extra: str = "") -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nServer: {_XM_SERVER}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode() + body


class XiongmaiPersona(Persona):
    """An infected Xiongmai DVR: a web interface with its factory password, the tcp/9530 telnet enabler
    (old firmware: no challenge), and a Mirai-style scan when triggered."""

    telnet: asyncio.Server | None = None

    async def serve(self) -> None:
        web = await asyncio.start_server(self._web, "0.0.0.0", 80)
        enabler = await asyncio.start_server(self._enabler, "0.0.0.0", 9530)
        try:
            await asyncio.Event().wait()
        finally:
            for server in (web, enabler, self.telnet):
                if server is not None:
                    server.close()

    async def _web(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                data = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", data)
                if length is not None:
                    data += await reader.readexactly(int(length.group(1)))
            writer.write(xm_answer(data))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("%s web: %s", self.cam.name, exc)
        finally:
            writer.close()

    async def _enabler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                data = await reader.read(256)
            if b"OpenTelnet:OpenOnce" in data:
                if self.telnet is None:
                    self.telnet = await asyncio.start_server(self._telnet, "0.0.0.0", 23)
                    log.info("%s: telnet enabled by %s", self.cam.name, writer.get_extra_info("peername"))
                writer.write(payloads_enabler("Open:OK"))
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("%s enabler: %s", self.cam.name, exc)
        finally:
            writer.close()

    async def _telnet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(_XM_BANNER)
            await writer.drain()
            async with asyncio.timeout(REPLY_TIMEOUT):
                await reader.readline()
                writer.write(b"Password: ")
                await writer.drain()
                await reader.readline()
            writer.write(b"\r\nLogin incorrect\r\n")
            await writer.drain()
        except (OSError, TimeoutError) as exc:
            log.debug("%s telnet: %s", self.cam.name, exc)
        finally:
            writer.close()

    async def misbehave(self) -> None:
        await self.behaviour("xiongmai.scanning", self.scan)

    async def scan(self, detail: dict[str, object]) -> None:
        """Mirai's way: SYNs from a raw socket, sequence number = destination address, nothing kept."""
        targets = [f"203.0.113.{100 + i}" for i in range(SCAN_TARGETS)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        sock.setblocking(False)
        sent = 0
        try:
            for i, dst in enumerate(targets):
                port = 2323 if i % 10 == 9 else 23
                seq = int(ipaddress.IPv4Address(dst))
                segment = synth.tcp(self.cam.ip, dst, 40000 + i, port, flags=synth.TCP_SYN, seq=seq)
                sock.sendto(segment, (dst, 0))
                sent += 1
                await asyncio.sleep(SCAN_INTERVAL)
        finally:
            sock.close()
        detail.update(destinations=sent, ports=[23, 2323], signature="seq = destination address")


def payloads_enabler(text: str) -> bytes:
    """A telnet-enabler message (the length byte, the text, a NUL)."""
    data = text.encode() + b"\x00"
    return bytes([len(data) + 1]) + data


PERSONA_CLASSES: Final[dict[str, type[Persona]]] = {
    "ezviz": EzvizPersona,
    "dahua": DahuaPersona,
    "axis": AxisPersona,
    "xiongmai": XiongmaiPersona,
}


# --- the process --------------------------------------------------------------------------------------


class CameraProcess:
    """Serve RTSP, follow the control file, announce, and misbehave when triggered."""

    def __init__(self, desc: LabDescription, name: str) -> None:
        self.desc = desc
        self.cam = desc.camera(name)
        self.paths = LabPaths(Path(desc.directory))
        self.persona = PERSONA_CLASSES[self.cam.persona](desc, self.cam, self.paths)
        self.pending = 0
        self.rounds = 0
        self.triggers_seen = 0
        self.busy = False
        self._wake = asyncio.Event()
        self._control = Control()

    async def run(self) -> None:
        from lab.rtsp_server import RtspCameraServer
        from lab.video import VideoSpec

        cam, v = self.cam, self.cam.video
        spec = VideoSpec(width=v.width, height=v.height, fps=v.fps, gop=v.gop, bitrate=v.bitrate)
        self._control = self._read_control() or Control()
        self.triggers_seen = self._control.trigger  # triggers from before this start are history
        async with RtspCameraServer(
            spec, host="0.0.0.0", port=cam.rtsp_port, path=cam.rtsp_path, server_banner=cam.banner
        ) as server:
            self.server = server
            self.persona.video = server
            server.set_pattern(self._control.pattern)
            self._write_state()
            mark_ready(self.paths, cam.name, {"rtsp": cam.url, "persona": cam.persona})
            log.info("%s (%s persona) serving %s", cam.name, cam.persona, cam.url)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._follow_control(), name=f"{cam.name}-control"),
                    tg.create_task(self._announce(), name=f"{cam.name}-announce"),
                    tg.create_task(self._misbehave(), name=f"{cam.name}-misbehave"),
                    tg.create_task(self.persona.serve(), name=f"{cam.name}-services"),
                ]
                if self.desc.trigger_every:
                    tasks.append(
                        tg.create_task(self._auto_trigger(self.desc.trigger_every), name=f"{cam.name}-auto")
                    )
                await wait_for_stop()
                for task in tasks:
                    task.cancel()
        log.info("%s stopped", cam.name)

    def _read_control(self) -> Control | None:
        try:
            return Control.load(self.paths.control(self.cam.name))
        except ValueError as exc:
            log.warning("%s: ignoring the control file: %s", self.cam.name, exc)
            return None

    def _write_state(self) -> None:
        state = {
            "ts": time.time(),
            "pattern": self.server.pattern,
            "triggers_seen": self.triggers_seen,
            "rounds": self.rounds,
            "busy": self.busy,
        }
        try:
            write_atomic(self.paths.state(self.cam.name), json.dumps(state) + "\n")
        except OSError as exc:  # the camera keeps serving; the manager just sees no fresh state
            log.warning("%s: cannot write the state file: %s", self.cam.name, exc)

    async def _follow_control(self) -> None:
        path = self.paths.control(self.cam.name)
        last: tuple[int, int] | None = None
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            stamp = (st.st_mtime_ns, st.st_ino)  # a replace changes the inode even within one mtime tick
            if stamp == last:
                continue
            last = stamp
            control = self._read_control()
            if control is None:
                continue
            if control.pattern != self.server.pattern:
                log.info("%s: pattern %s -> %s", self.cam.name, self.server.pattern, control.pattern)
                self.server.set_pattern(control.pattern)
            if control.trigger > self.triggers_seen:
                self.pending += control.trigger - self.triggers_seen
                self._wake.set()
            self.triggers_seen = max(self.triggers_seen, control.trigger)
            self._write_state()

    async def _auto_trigger(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.pending += 1
            self._wake.set()

    async def _announce(self) -> None:
        while True:
            try:
                await self.persona.announce()
            except OSError as exc:
                log.warning("%s: announcement failed: %s", self.cam.name, exc)
            await asyncio.sleep(ANNOUNCE_SECONDS)

    async def _misbehave(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.pending:
                continue
            # Triggers that arrive during a round are folded into one more round.
            self.pending = 0
            self.busy = True
            self._write_state()
            try:
                await self.persona.misbehave()
            finally:
                self.busy = False
                self.rounds += 1
                self._write_state()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run one simulated camera of the lab (inside its namespace)."
    )
    lab_arguments(parser)
    parser.add_argument("name", help="the camera's name in lab.json (cam1, ...)")

    def serve(args: argparse.Namespace) -> Coroutine[Any, Any, None]:
        return CameraProcess(LabDescription.load(LabPaths(args.directory).lab_json), args.name).run()

    return run_main(
        parser, argv, serve, process=lambda args: str(args.name), log=log, unknown_name_exits_2=True
    )


if __name__ == "__main__":
    sys.exit(main())
