"""``platform.registration``: a watched camera joins a GB/T 28181 or EHome/ISUP platform outside the site; a
platform on the site or allowed by the policy, and other SIP, are not reported."""

from __future__ import annotations

from pathlib import Path

from lab import payloads, synth
from monitor.policy import SitePolicy
from tests.enginerun import run_frames
from tests.monitor.rules.test_video_on_a_trunk import _on_a_trunk
from tests.monitor.rules.traffic import GW, HIK, MS, NS, RECORDER, T0, Host, alerts, exchange, of_rule

RULE = "platform.registration"
DEVICE = "34020000001320000001"
PLATFORM = "34020000002000000001"
OUTSIDE = "203.0.113.7"
FIRMWARE = "V5.5.0 build 170725"


def _udp(
    src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int, data: bytes, t: int = T0
) -> tuple[int, bytes]:
    return (t, synth.udp4_frame(src_mac, dst_mac, src, dst, sport, dport, data))


def _gb_register(dst: str = OUTSIDE, port: int = 5060) -> list[tuple[int, bytes]]:
    return [
        _udp(HIK.mac, GW.mac, HIK.ip, dst, 5060, port, payloads.gb28181_register(DEVICE, PLATFORM, HIK.ip)),
        _udp(
            HIK.mac,
            GW.mac,
            HIK.ip,
            dst,
            5060,
            port,
            payloads.gb28181_keepalive(DEVICE, PLATFORM, HIK.ip),
            T0 + MS,
        ),
    ]


def test_a_camera_registering_to_an_outside_gb28181_platform() -> None:
    records = alerts(_gb_register())
    (a,) = of_rule(records, RULE)
    message = str(a["message"])
    assert message.startswith(
        f"Hikvision device {HIK.ip} (44-19-b6-00-00-11) is registering with a GB/T 28181 video"
    )
    assert (
        f"platform at {OUTSIDE}:5060, outside the site (device code {DEVICE}, a network camera; platform"
        in message
    )
    assert "turn off Platform Access (GB28181)" in message
    assert a["camwatch"]["platform"] == {  # type: ignore[index]
        "protocol": "gb28181",
        "message": "REGISTER",
        "device_id": DEVICE,
        "platform_id": PLATFORM,
        "agent": "IP Camera",
    }
    assert a["network"]["protocol"] == "sip" and a["destination"]["ip"] == OUTSIDE  # type: ignore[index]


def test_on_an_odd_port_and_on_a_trunk_with_routed_copies_it_is_one_alert() -> None:
    records = alerts(_on_a_trunk(_gb_register(port=15060)))
    (a,) = of_rule(records, RULE)
    assert f"{OUTSIDE}:15060" in str(a["message"])


def test_over_tcp() -> None:
    frames = exchange(
        T0,
        HIK,
        Host(OUTSIDE, GW.mac),
        40100,
        5060,
        [(payloads.gb28181_register(DEVICE, PLATFORM, HIK.ip), b"")],
    )
    (a,) = of_rule(alerts(frames), RULE)
    assert a["network"]["transport"] == "tcp"  # type: ignore[index]


def _invite(platform_ip: str = OUTSIDE, platform: str = PLATFORM) -> tuple[int, bytes]:
    invite = (
        f"INVITE sip:{DEVICE}@3402000000 SIP/2.0\r\nFrom: <sip:{platform}@3402000000>;tag=1\r\n"
        f"To: <sip:{DEVICE}@3402000000>\r\nCSeq: 20 INVITE\r\nContent-Type: APPLICATION/SDP\r\n\r\n"
        "v=0\r\ns=Play\r\n"
    ).encode()
    return _udp(GW.mac, HIK.mac, platform_ip, HIK.ip, 5060, 5060, invite)


def test_what_a_camera_is_sent_is_not_its_registration() -> None:
    # Anyone can send a camera GB/T 28181: SIP scanners, a branch camera registering to the site's platform.
    frames = [_invite()] + [
        _udp(
            GW.mac,
            HIK.mac,
            f"198.51.100.{i}",
            HIK.ip,
            5060,
            5060,
            payloads.gb28181_register(PLATFORM, DEVICE, "x"),
        )
        for i in range(5)
    ]
    assert of_rule(alerts(frames), RULE) == []


def test_a_camera_registered_before_camwatch_started_is_seen_by_its_keepalive() -> None:
    # The platform's INVITE comes first on the flow; the camera's keep-alive on the same flow is its own.
    keepalive = payloads.gb28181_keepalive(DEVICE, PLATFORM, HIK.ip)
    frames = [_invite(), _udp(HIK.mac, GW.mac, HIK.ip, OUTSIDE, 5060, 5060, keepalive, T0 + MS)]
    (a,) = of_rule(alerts(frames), RULE)
    assert f"is in a GB/T 28181 session (MESSAGE) with a video platform at {OUTSIDE}:5060" in str(
        a["message"]
    )
    platform = a["camwatch"]["platform"]  # type: ignore[index]
    assert (platform["device_id"], platform["platform_id"]) == (DEVICE, PLATFORM)
    assert a["source"]["ip"] == HIK.ip  # type: ignore[index]


def test_a_camera_registering_to_an_ehome_platform_tells_its_firmware() -> None:
    frames = [
        _udp(
            HIK.mac, GW.mac, HIK.ip, OUTSIDE, 40000, 7660, payloads.ehome_register("cam1", FIRMWARE, HIK.ip)
        ),
        _udp(GW.mac, HIK.mac, OUTSIDE, HIK.ip, 7660, 40000, payloads.ehome_register_ok(), T0 + MS),
    ]
    engine, _, records = run_frames(frames, policy=_policy())
    (a,) = of_rule(records, RULE)
    assert "is registering with a Hikvision EHome/ISUP video platform" in str(a["message"])
    assert f"(device code cam1; firmware {FIRMWARE})" in str(a["message"])
    assert "turn off Platform Access (EHome/ISUP)" in str(a["message"])
    device = next(d for d in engine.inventory if d.ips and HIK.ip in d.ips)
    assert device.firmware == FIRMWARE


def test_an_ehome_registration_over_tcp_in_small_segments() -> None:
    register = payloads.ehome_register("cam1", FIRMWARE, HIK.ip)
    turns = [(register[i : i + 60], b"") for i in range(0, len(register), 60)]
    frames = exchange(T0, HIK, Host(OUTSIDE, GW.mac), 40200, 7660, turns)
    (a,) = of_rule(alerts(frames), RULE)
    assert a["network"]["protocol"] == "ehome" and f"firmware {FIRMWARE}" in str(a["message"])  # type: ignore[index]


def test_an_ehome_device_registered_before_camwatch_started_is_seen_by_its_keepalive() -> None:
    keepalive = payloads.ehome_register("cam1", FIRMWARE, HIK.ip).replace(b"REGISTER", b"KEEPALIVE")
    frames = [
        _udp(HIK.mac, GW.mac, HIK.ip, OUTSIDE, 40000, 7660, keepalive, T0 + i * 15 * NS) for i in range(3)
    ]
    (a,) = of_rule(alerts(frames), RULE)
    assert "is in a Hikvision EHome/ISUP session (KEEPALIVE) with a video platform" in str(a["message"])


def test_a_gb28181_register_over_tcp_in_small_segments() -> None:
    register = payloads.gb28181_register(DEVICE, PLATFORM, HIK.ip)
    turns = [(register[i : i + 20], b"") for i in range(0, len(register), 20)]  # the start line cut too
    frames = exchange(T0, HIK, Host(OUTSIDE, GW.mac), 40300, 5060, turns)
    (a,) = of_rule(alerts(frames), RULE)
    assert a["camwatch"]["platform"]["device_id"] == DEVICE  # type: ignore[index]


def test_a_platform_on_the_site_or_allowed_is_not_reported() -> None:
    assert of_rule(alerts(_gb_register(dst=RECORDER.ip)), RULE) == []
    allowed = _policy(f"allow:\n  - name: our platform\n    to: [{OUTSIDE}/32]\n    ports: [5060/udp]\n")
    _, _, records = run_frames(_gb_register(), policy=allowed)
    assert of_rule(records, RULE) == []


def test_a_watched_device_doing_voip_sip_is_not_a_platform_registration() -> None:
    records = alerts(
        [
            _udp(
                HIK.mac,
                GW.mac,
                HIK.ip,
                OUTSIDE,
                5060,
                5060,
                payloads.sip_register("door1", "voip.example", HIK.ip),
            )
        ]
    )
    assert of_rule(records, RULE) == []


def test_an_unwatched_host_registering_is_not_reported() -> None:
    office = "10.30.0.5"
    frame = _udp(
        "00:50:56:00:00:05",
        GW.mac,
        office,
        OUTSIDE,
        5060,
        5060,
        payloads.gb28181_register(DEVICE, PLATFORM, office),
    )
    assert of_rule(alerts([frame]), RULE) == []


def _policy(extra: str = "") -> SitePolicy:
    text = (Path(__file__).parents[3] / "examples" / "site-policy.yaml").read_text()
    if extra:
        text = text.replace("allow:\n", extra, 1) if "allow:\n" in text else text + extra
    return SitePolicy.from_yaml(text, "site-policy.yaml")


def test_a_gb28181_registration_over_ipv6() -> None:
    cam6, platform6 = "2001:db8:20::11", "2001:db8:dead::7"
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [2001:db8:20::/64]}\n", "p")
    register = payloads.gb28181_register(DEVICE, PLATFORM, cam6)
    frame = synth.ether(
        HIK.mac,
        GW.mac,
        0x86DD,
        synth.ipv6(cam6, platform6, 17, synth.udp(cam6, platform6, 5060, 5060, register)),
    )
    _, _, records = run_frames([(T0, frame)], policy=policy)
    (a,) = of_rule(records, RULE)
    assert f"at [{platform6}]:5060, outside the site" in str(a["message"])
