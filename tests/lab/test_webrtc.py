"""The lab's WebRTC live view (aiortc both ends), its signalling server and its STUN server, run for real.

The live view runs once on the host's own addresses (unprivileged) and once between two network namespaces
(root; skipped with the reason otherwise). Every test is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiortc import RTCPeerConnection

from agents.capture.afpacket import RecvSource
from lab.video import VideoSpec
from lab.webrtc import LiveViewError, LiveViewServer, StunServer, start_live_view
from monitor.analyzers import stun
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.agents.netns import NetnsPair, inside, netns_pair
from tests.enginerun import run_engine

__all__ = ["netns_pair"]  # the fixture, imported for pytest

T = TypeVar("T")
SPEC = VideoSpec(width=160, height=96, fps=15, gop=30, bitrate=100_000)
MIN_FRAMES = 15  # one second of video at 15 fps


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def http(port: int, raw: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes to the signalling server; status and JSON body of its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    writer.write_eof()  # so that a request cut short ends here instead of timing out
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def post(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


# -- STUN server ---------------------------------------------------------------------------------------


def test_stun_server_answers_binding_with_the_source_address() -> None:
    async def scenario() -> None:
        async with StunServer("127.0.0.1", 0) as server:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", server.port))
                # Junk first: it must be dropped without harming the server.
                await loop.sock_sendall(sock, b"\x17\xfe\xfd" + bytes(20))
                tid = os.urandom(12)
                await loop.sock_sendall(sock, stun.build(stun.METHOD_BINDING, "request", tid))
                reply = stun.StunMessage.parse(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
                assert reply.type_name == "Binding Response"
                assert reply.transaction_id == tid
                assert reply.fingerprint_ok is True
                assert reply.software == "camwatch-lab"
                assert reply.xor_mapped_address == stun.StunAddress(*sock.getsockname())
            assert (server.requests, server.dropped) == (1, 1)

    run(scenario())


def test_stun_server_ignores_everything_but_binding_requests() -> None:
    server = StunServer()
    tid = bytes(range(12))
    indication = stun.build(stun.METHOD_BINDING, "indication", tid)
    allocate = stun.build(0x003, "request", tid)
    classic = bytes.fromhex("0001 0000") + bytes(16)  # RFC 3489 Binding request: no cookie
    for data in (indication, allocate, classic, b"", b"\x00", os.urandom(64)):
        assert server.answer(data, "10.0.0.1", 1234) is None
    assert server.requests == 0 and server.dropped == 6
    ok = server.answer(stun.build(stun.METHOD_BINDING, "request", tid), "2001:db8::7", 5)
    assert ok is not None
    assert stun.StunMessage.parse(ok).public_address == stun.StunAddress("2001:db8::7", 5)


# -- signalling ----------------------------------------------------------------------------------------


def test_signalling_answers_bad_requests_with_an_error_and_keeps_serving() -> None:
    bad: list[tuple[bytes, int]] = [
        (b"HELLO\r\n\r\n", 400),
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
        (b"GET /offer HTTP/1.1\r\n\r\n", 405),
        (b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"POST /offer HTTP/1.1\r\n\r\n", 411),
        (b"POST /offer HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"POST /offer HTTP/1.1\r\nContent-Length: x1\r\n\r\n", 400),
        (b"POST /offer HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST /offer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /status HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (post("/offer", b"{not json"), 400),
        (post("/offer", b"[1, 2]"), 400),
        (post("/offer", json.dumps({"sdp": "v=0\r\n", "type": "answer"}).encode()), 400),
        (post("/offer", json.dumps({"sdp": 5, "type": "offer"}).encode()), 400),
        (post("/offer", json.dumps({"sdp": "v=0\r\nm=video x\r\n", "type": "offer"}).encode()), 400),
        (post("/offer", b'{"sdp": "v=0\\r\\n", "type": "offer"}')[:-5], 400),  # body cut short
    ]

    async def scenario() -> None:
        async with LiveViewServer("127.0.0.1", 0) as server:
            for raw, expected in bad:
                status, body = await http(server.port, raw)
                assert status == expected, raw[:60]
                assert body["error"]
            status, body = await http(server.port, b"GET /status HTTP/1.1\r\n\r\n")
            assert status == 200
            assert body == {"frames_received": 0, "sessions": []}

    run(scenario())


def test_signalling_limits_the_number_of_peers() -> None:
    async def offer() -> bytes:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
        await pc.close()
        return body

    async def scenario() -> None:
        async with LiveViewServer("127.0.0.1", 0, max_peers=1) as server:
            body = await offer()
            status, answer = await http(server.port, post("/offer", body))
            assert status == 200 and answer["type"] == "answer" and answer["sdp"].startswith("v=0")
            status, answer = await http(server.port, post("/offer", body))
            assert status == 503 and "max_peers 1" in answer["error"]
            assert [s.state for s in server.sessions] in (["new"], ["connecting"])
        # Closing the server closes its peers.
        assert [s.state for s in server.sessions] == ["closed"]

    run(scenario())


def test_live_view_reports_signalling_failures() -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # nothing listens there once the socket is closed
        with pytest.raises(LiveViewError, match="live view to"):
            await start_live_view(signaling_url=f"http://127.0.0.1:{port}/offer", spec=SPEC, timeout=5)
        with pytest.raises(LiveViewError, match="not http"):
            await start_live_view(signaling_url="ftp://x/offer", spec=SPEC, timeout=5)
        async with LiveViewServer("127.0.0.1", 0) as server:
            with pytest.raises(LiveViewError, match="404"):
                await start_live_view(signaling_url=f"http://127.0.0.1:{server.port}/x", spec=SPEC, timeout=5)

    run(scenario())


# -- the live view -------------------------------------------------------------------------------------


async def live_view_session(camera_url: str, stun_server: str | None, server: LiveViewServer) -> None:
    """Connect, check frames arrive, close, check the cloud side sees the session end."""
    session = await start_live_view(signaling_url=camera_url, spec=SPEC, stun_server=stun_server, timeout=10)
    try:
        assert session.connected
        assert await wait_for(lambda: server.frames_received > MIN_FRAMES, 5), server.sessions
    finally:
        await session.close()
    assert session.state == "closed"
    # The camera's DTLS close_notify ends the cloud's session too.
    assert await wait_for(lambda: all(s.state == "closed" for s in server.sessions), 5), server.sessions
    (status,) = server.sessions
    assert status.frames_received > MIN_FRAMES
    assert status.codec == "video/H264"


def test_live_view_on_local_addresses() -> None:
    async def scenario() -> None:
        async with LiveViewServer("127.0.0.1", 0) as server:
            await live_view_session(f"http://127.0.0.1:{server.port}/offer", None, server)

    run(scenario(), timeout=30)


def in_namespace(ns: str, fn: Callable[[], Awaitable[None]]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``fn`` on an event loop in a thread inside namespace ``ns``; the list collects its error."""
    errors: list[BaseException] = []

    def main() -> None:
        try:
            with inside(ns):

                async def bounded() -> None:
                    async with asyncio.timeout(30):
                        await fn()

                asyncio.run(bounded())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name=f"webrtc-{ns}")
    thread.start()
    return thread, errors


POLICY = {"site": "lab", "monitored": {"networks": ["10.199.0.1/32"]}}  # A watched; B (cloud) outside


def test_live_view_between_namespaces_with_stun(netns_pair: NetnsPair, tmp_path: Path) -> None:
    """Camera in namespace A, cloud (signalling + STUN) in namespace B: the camera asks B's STUN server for
    its reflexive address, connects and streams. Captured on A's interface with camwatch's capture and
    replayed through the engine: the fresh session is labelled and alerted like the golden capture."""
    pair = netns_pair
    ready = threading.Event()
    done = threading.Event()
    box: dict[str, Any] = {}

    async def cloud() -> None:
        async with StunServer(pair.addr_b, 0) as stun_srv, LiveViewServer(pair.addr_b, 0) as server:
            box.update(server=server, stun=stun_srv, port=server.port, stun_port=stun_srv.port)
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.05)

    async def camera() -> None:
        assert ready.wait(10)
        server: LiveViewServer = box["server"]
        url = f"http://{pair.addr_b}:{box['port']}/offer"
        try:
            await live_view_session(url, f"{pair.addr_b}:{box['stun_port']}", server)
        finally:
            done.set()

    with inside(pair.ns_a):
        source = RecvSource(pair.if_a, idle_s=0.05).open()
    packets: list[tuple[int, bytes]] = []

    def capture() -> None:
        for batch in source.batches():
            packets.extend((int(batch.ts_ns[i]), batch.packet(i)) for i in range(len(batch)))

    capturer = threading.Thread(target=capture, name="capture")
    capturer.start()
    try:
        cloud_thread, cloud_errors = in_namespace(pair.ns_b, cloud)
        camera_thread, camera_errors = in_namespace(pair.ns_a, camera)
        camera_thread.join(40)
        done.set()
        cloud_thread.join(10)
    finally:
        source.close()
        capturer.join(5)
    assert not camera_thread.is_alive() and not cloud_thread.is_alive()
    if camera_errors or cloud_errors:
        raise (camera_errors + cloud_errors)[0]
    # aioice queried the STUN server for the camera's server-reflexive candidate.
    assert box["stun"].requests >= 1

    path = tmp_path / "live.pcap"
    path.write_bytes(pcap_bytes(packets))
    _, flows, alerts = run_engine(path, policy=SitePolicy.from_mapping(POLICY))
    labels = {f.protocol for f in flows if f.proto == 17}
    assert {"stun", "srtp"} <= labels, labels
    by_rule = {a["rule"]["id"]: a for a in alerts if a["source"]["ip"] == pair.addr_a}
    assert {"p2p.nat_traversal", "stream.egress"} <= set(by_rule), sorted(by_rule)
    assert by_rule["stream.egress"]["network"]["protocol"] == "srtp"
    # Alerts are judged on capture time: within 10 s of the session's first packet.
    start = min(ts for ts, _ in packets)
    for rule in ("p2p.nat_traversal", "stream.egress"):
        stamp = datetime.fromisoformat(by_rule[rule]["@timestamp"].replace("Z", "+00:00"))
        assert stamp.timestamp() - start / 1e9 < 10
