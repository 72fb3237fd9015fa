"""A mirror that shows one direction only, drops, reorders, retransmits, or copies a segment with other
content: no crash, no wrong identity, and counters for what could not be judged."""

from __future__ import annotations

from lab import synth
from lab.personas import tcp_exchange
from monitor.policy import SitePolicy
from tests.enginerun import run_frames

T0 = 1_767_225_600 * 10**9
CAM, GW = "44:19:b6:00:00:01", "00:00:5e:00:01:01"
CAM_IP, CLOUD = "10.20.0.11", "203.0.113.10"
POLICY = SitePolicy.from_yaml("site: s\nmonitored: {networks: [10.20.0.0/24]}\n")


def session() -> list[tuple[int, bytes]]:
    request = b"GET /api HTTP/1.1\r\nHost: litedev.ezvizlife.com\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nServer: App-webs/\r\nContent-Length: 0\r\n\r\n"
    return tcp_exchange(T0, CAM, GW, CAM_IP, CLOUD, 40000, 8666, [(request, response)])


def from_camera(frame: bytes) -> bool:
    return frame[6:12] == synth.mac_bytes(CAM)


def test_one_direction_only() -> None:
    engine, flows, alerts = run_frames([(t, f) for t, f in session() if from_camera(f)], policy=POLICY)
    (flow,) = flows
    assert flow.protocol == "http" and flow.dst_counts == (0, 0)
    egress = [a for a in alerts if a["rule"]["id"] == "egress.unexpected_destination"]  # type: ignore[index]
    assert len(egress) == 1 and egress[0]["source"]["mac"] == "44-19-b6-00-00-01"  # type: ignore[index]
    assert engine.stats.tcp_one_direction == 1


def test_only_the_replies() -> None:
    # The other half of an asymmetric mirror: the cloud's side. The camera opened the session (its SYN is
    # missing, its SYN-ACK reply... the replies come from the service port): it is still its egress.
    engine, flows, alerts = run_frames([(t, f) for t, f in session() if not from_camera(f)], policy=POLICY)
    (flow,) = flows
    assert flow.src[0] == CLOUD and not flow.opener_is_src
    egress = [a for a in alerts if a["rule"]["id"] == "egress.unexpected_destination"]  # type: ignore[index]
    assert [a["source"]["ip"] for a in egress] == [CAM_IP]  # type: ignore[index]
    # The gateway's MAC carried the cloud's packets: it is nobody's identity in the alert.
    assert egress[0]["source"].get("mac") != "00-00-5e-00-01-01"  # type: ignore[index, union-attr]
    assert engine.stats.tcp_one_direction == 1


def test_drops_reordering_retransmissions_and_conflicting_overlaps_are_counted() -> None:
    frames = session()
    data = [i for i, (_, f) in enumerate(frames) if len(f) > 60 and from_camera(f)]
    (req,) = data
    t, frame = frames[req]
    # The request cut in two segments, the second one first; the first retransmitted; a third copy of the
    # first with other bytes in it (an overlap that disagrees).
    head_len = 14 + 20 + 20
    body = frame[head_len:]
    seq = int.from_bytes(frame[38:42], "big")

    def seg(offset: int, chunk: bytes, dt: int) -> tuple[int, bytes]:
        tcp = synth.tcp(
            CAM_IP, CLOUD, 40000, 8666, chunk, flags=synth.TCP_PSH | synth.TCP_ACK, seq=seq + offset
        )
        return (t + dt, synth.ether(CAM, GW, 0x0800, synth.ipv4(CAM_IP, CLOUD, 6, tcp)))

    first, second = body[:20], body[20:]
    pieces = [seg(20, second, 0), seg(0, first, 1), seg(0, first, 2), seg(0, b"X" * 20, 3)]
    mangled = [*frames[:req], *pieces, *frames[req + 1 :]]
    engine, flows, _ = run_frames(mangled, policy=POLICY)
    (flow,) = flows
    assert flow.protocol == "http"  # the request was read whole, in order, once
    order = engine.analysis.order
    assert order.duplicates >= 1 and order.holes == 0
    # A mirror that lost a segment for good: the segment after it waits, and the hole is counted when the
    # flow ends with it still open.
    engine, _, _ = run_frames([*frames[:req], seg(20, second, 0), *frames[req + 1 :]], policy=POLICY)
    assert engine.analysis.order.holes == 1
