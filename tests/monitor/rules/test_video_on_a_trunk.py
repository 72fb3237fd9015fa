"""The new video paths as a trunk mirror shows them: each packet twice, once on each side of the gateway (the
camera VLAN and the uplink VLAN: a routed copy, other MACs, the TTL one apart), and some repeated (a port
mirrored twice). The alerts are those of the clean capture, each once.
"""

from __future__ import annotations

import struct

from lab import attacks
from lab.synth import checksum, mac_bytes
from tests.enginerun import run_frames
from tests.monitor.rules import test_rtsp_tunnel_rules, test_stream_push
from tests.monitor.rules.traffic import ATTACKER, GW, POLICY, alerts

UPSTREAM = "02:00:00:00:00:99"  # the Internet side of the gateway
CAMERA_VLAN, UPLINK_VLAN = 20, 10


def _tagged(frame: bytes, vlan: int) -> bytes:
    return frame[:12] + struct.pack("!HH", 0x8100, vlan) + frame[12:]


def _routed(frame: bytes) -> bytes:
    """The frame as seen on the gateway's other side: coming in from the Internet before routing (TTL one
    more), or going out after it (TTL one less)."""
    inbound = frame[6:12] == mac_bytes(GW.mac)
    macs = mac_bytes(GW.mac) + mac_bytes(UPSTREAM) if inbound else mac_bytes(UPSTREAM) + mac_bytes(GW.mac)
    ip = bytearray(frame[14:34])
    ip[8] = ip[8] + 1 if inbound else ip[8] - 1
    ip[10:12] = b"\0\0"
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    return _tagged(macs + frame[12:14] + bytes(ip) + frame[34:], UPLINK_VLAN)


def _on_a_trunk(frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for i, (t, frame) in enumerate(sorted(frames)):
        out.append((t, _tagged(frame, CAMERA_VLAN)))
        out.append((t + 50_000, _routed(frame)))
        if i % 3 == 0:
            out.append((t + 1, _tagged(frame, CAMERA_VLAN)))  # the same packet again, mirrored twice
    return out


def test_the_trunk_shows_each_connection_twice() -> None:
    # What the tests below rest on: the copies are flows of their own (one per VLAN), the routed one marked.
    _, flows, _ = run_frames(
        _on_a_trunk(test_stream_push.rtmp_publish(test_stream_push.MEDIA_SERVER)), policy=POLICY
    )
    assert sorted((f.protocol, f.copy) for f in flows) == [("rtmp", False), ("rtmp", True)]


def _summary(frames: list[tuple[int, bytes]]) -> list[tuple[str, object]]:
    return sorted((str(r["rule"]["id"]), r["event"].get("outcome")) for r in alerts(frames))  # type: ignore[attr-defined]


def test_a_tunnelled_pull_with_the_factory_password() -> None:
    frames = test_rtsp_tunnel_rules.tunnel(
        ATTACKER, f"Authorization: {attacks.basic_auth('admin', '12345')}\r\n"
    )
    clean = _summary(frames)
    assert ("stream.unauthorized_client", "success") in clean and (
        "auth.default_credentials",
        "success",
    ) in clean
    assert _summary(_on_a_trunk(frames)) == clean


def test_an_rtsp_push_and_an_rtmp_publish() -> None:
    for frames in (
        test_stream_push.push(test_stream_push.MEDIA_SERVER),
        test_stream_push.rtmp_publish(test_stream_push.MEDIA_SERVER),
    ):
        clean = _summary(frames)
        assert ("stream.egress", None) in clean
        assert _summary(_on_a_trunk(frames)) == clean
