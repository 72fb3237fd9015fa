"""Live capture realities: segmentation offload hands AF_PACKET super-frames larger than the MTU, with
checksums left to the hardware (root, network namespaces).

A veth passes a TCP sender's 64 kB segments through unsegmented (TSO/GSO): on the receiving side the
capture sees frames of up to 64 kB whose TCP checksums were never filled in. Each must be counted with
its real length (the flow's bytes are the frames' lengths, as a NIC with GRO on would deliver them), and
the analyzers must read them like any other segment. docs/deployment.md says how to turn these
offloads off on a mirror interface, so that the counts are the packets that were on the wire.
"""

from __future__ import annotations

import socket
import threading
import time

from agents.capture.afpacket import RingSource
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.agents.netns import NetnsPair, inside, netns_pair
from tests.agents.test_afpacket import Collector
from tests.enginerun import vendors

__all__ = ["netns_pair"]

SIZE = 2_000_000


def test_offloaded_super_frames_are_counted_with_their_length(netns_pair: NetnsPair) -> None:
    pair = netns_pair
    with inside(pair.ns_b):
        source = RingSource(pair.if_b, idle_s=0.1).open()
        server = socket.create_server((pair.addr_b, 0))
    port = server.getsockname()[1]
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                received.extend(chunk)

    capture = Collector(source).start()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with inside(pair.ns_a):
        client = socket.create_connection((pair.addr_b, port))
    with client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n" + bytes(SIZE))
    thread.join(10)
    server.close()
    capture.wait_for(b"GET / HTTP/1.1", 1)
    time.sleep(0.5)  # the last segments and the FINs reach the ring
    capture.stop()
    assert len(received) == SIZE + 27
    frames = [(data, caplen, wirelen) for data, caplen, wirelen, _ in capture.packets]
    assert max(w for _, _, w in frames) > 1514  # the offload's super-frames reached the capture
    # Through the engine as the agent feeds it (the capture's own lengths, written as a pcap).
    parser = CaptureParser("offload")
    pcap = pcap_bytes([(1_000_000_000 + i, data, w) for i, (data, _, w) in enumerate(frames)])
    engine = Engine(SitePolicy.default(), vendors(), EngineConfig())
    flows = []
    for batch in [*parser.feed(pcap), *parser.flush()]:
        flows += engine.feed(batch).flows
    flows += engine.finish().flows
    (flow,) = [f for f in flows if port in (f.src[1], f.dst[1])]
    assert flow.bytes == sum(w for data, _, w in frames if _is_flow(data, port))
    assert flow.protocol == "http"  # the super-frame's payload is read like any segment
    assert engine.analysis.stats.parse_errors == 0


def _is_flow(frame: bytes, port: int) -> bool:
    if frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return False
    l4 = 14 + (frame[14] & 0x0F) * 4
    return port in (int.from_bytes(frame[l4 : l4 + 2], "big"), int.from_bytes(frame[l4 + 2 : l4 + 4], "big"))
