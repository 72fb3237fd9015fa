"""``device.scanning``: a Mirai-infected camera's scan is one critical alert with counts, the telnet ports
and a sample, that absorbs the egress alerts of its connections; a recorder connecting to its cameras, a
camera's NTP and DNS, and discovery multicast are not scans."""

from __future__ import annotations

import ipaddress

import pytest

from lab import attacks, personas, synth
from monitor.rules.scanning import ADDRESS_THRESHOLD
from tests.monitor.rules.traffic import GW, HIK, MS, NS, RECORDER, T0, XM, Host, alerts, exchange, of_rule

RULE = "device.scanning"


def _mirai(n: int, t: int = T0, every: int = 20 * MS, prefix: str = "203.0.113.") -> list[tuple[int, bytes]]:
    """A Mirai scanner on the Xiongmai board: SYNs to n addresses, port 23 (a tenth 2323); nothing answers."""
    frames = []
    for i in range(n):
        dst = f"{prefix}{i + 1}" if i < 250 else str(ipaddress.IPv4Address(f"{prefix}0") + i + 1)
        port = 2323 if i % 10 == 9 else 23
        frames.append((t + i * every, attacks.mirai_syn(XM.mac, GW.mac, XM.ip, dst, 40000 + i, port)))
    return frames


def test_a_mirai_scan_is_one_critical_alert_with_counts() -> None:
    records = alerts(_mirai(200))
    (a,) = of_rule(records, RULE)
    assert a["event"]["severity"] == 5 and a["device"]["id"] == XM.mac_id and a["source"]["ip"] == XM.ip  # type: ignore[index]
    scan = a["camwatch"]["scan"]  # type: ignore[index]
    assert scan["mirai"] >= 3 and scan["telnet"] >= 3 and len(scan["sample"]) == 10
    assert scan["sample"][0] == "203.0.113.1:23" and "Mirai" in str(a["message"])
    assert "ip" not in a.get("destination", {})  # type: ignore[operator]
    # Its connections' egress alerts are folded into the scan's incident, not one alert per destination.
    egress = of_rule(records, "egress.unexpected_destination")
    assert len(egress) <= 4  # the rule's cap (3), and the other telnet port's first (monitor/alerts.py)
    assert {e["camwatch"]["incident"]["id"] for e in egress} == {a["camwatch"]["incident"]["id"]}  # type: ignore[index]


def test_a_plain_scan_of_the_site_network_refused_by_rst() -> None:
    """Not Mirai's sequence numbers: a port-80 sweep of 10.20.0.0/24, the hosts that exist refusing."""
    frames = []
    for i in range(60):
        dst = f"10.20.0.{100 + i}"
        syn = synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, dst, 50000 + i, 80, flags=synth.TCP_SYN, seq=i)
        rst = synth.tcp4_frame(
            GW.mac, HIK.mac, dst, HIK.ip, 80, 50000 + i, flags=synth.TCP_RST | synth.TCP_ACK, ack=i + 1
        )
        frames += [(T0 + i * 50 * MS, syn), (T0 + i * 50 * MS + MS, rst)]
    (a,) = of_rule(alerts(frames), RULE)
    assert (
        a["camwatch"]["scan"]["mirai"] == 0 and a["camwatch"]["scan"]["failed_addresses"] >= ADDRESS_THRESHOLD
    )  # type: ignore[index]
    assert "Mirai" not in str(a["message"]).split(":")[0]


def test_a_port_scan_of_one_host() -> None:
    frames = []
    for port in range(1, 101):
        syn = synth.tcp4_frame(
            HIK.mac, GW.mac, HIK.ip, "10.20.0.1", 51000 + port, port, flags=synth.TCP_SYN, seq=port
        )
        frames.append((T0 + port * 10 * MS, syn))
    (a,) = of_rule(alerts(frames), RULE)
    assert a["camwatch"]["scan"]["ports"] == 100 and a["camwatch"]["scan"]["addresses"] == 1  # type: ignore[index]


def test_a_recorder_connecting_to_its_cameras_is_not_a_scan() -> None:
    """The recorder (a Hikvision NVR, watched) connects to 64 cameras at boot, all within milliseconds:
    they accept, so nothing failed."""
    nvr = Host("10.20.0.3", "44:19:b6:00:00:03")
    frames = []
    for i in range(64):
        cam = Host(f"10.20.0.{100 + i}", f"44:19:b6:00:01:{i:02x}")
        frames += exchange(
            T0 + i * 100_000,
            nvr,
            cam,
            52000 + i,
            554,
            [(personas.rtsp_request("OPTIONS", f"rtsp://{cam.ip}/", 1), personas.rtsp_response(1, "Hik"))],
        )
    assert of_rule(alerts(frames), RULE) == []


def test_normal_camera_life_is_not_a_scan() -> None:
    """NTP and DNS every few seconds, SSDP and WS-Discovery multicast, its recorder pulling video."""
    frames = []
    for i in range(120):
        t = T0 + i * NS
        frames += personas.udp_pair(
            t, HIK.mac, GW.mac, HIK.ip, GW.ip, 40000 + i, 123, b"\x23" + bytes(47), b"\x24" + bytes(47)
        )
        frames += personas.udp_pair(
            t + MS,
            HIK.mac,
            GW.mac,
            HIK.ip,
            GW.ip,
            41000 + i,
            53,
            personas.dns_query(i, "time.ys7.com"),
            personas.dns_answer(i, "time.ys7.com", "10.20.0.1"),
        )
        frames.append(
            (
                t + 2 * MS,
                synth.udp4_frame(
                    HIK.mac, "01:00:5e:7f:ff:fa", HIK.ip, "239.255.255.250", 3702, 3702, b"<Hello/>"
                ),
            )
        )
    frames += exchange(
        T0,
        RECORDER,
        HIK,
        53000,
        554,
        [(personas.rtsp_request("DESCRIBE", f"rtsp://{HIK.ip}/", 1), personas.rtsp_response(1, "Hik"))],
    )
    assert of_rule(alerts(frames), RULE) == []


def test_unanswered_attempts_below_the_threshold_are_not_a_scan() -> None:
    frames = []
    for i in range(ADDRESS_THRESHOLD - 2):
        syn = synth.tcp4_frame(
            HIK.mac, GW.mac, HIK.ip, f"198.51.100.{i + 1}", 54000 + i, 443, flags=synth.TCP_SYN, seq=i
        )
        frames.append((T0 + i * 100 * MS, syn))
    assert of_rule(alerts(frames), RULE) == []


@pytest.mark.parametrize("batch_size", [1, 50])
def test_the_same_alert_whatever_the_batch_size(batch_size: int) -> None:
    frames = _mirai(80)
    key = [
        (a["event"]["id"], a["@timestamp"], a["camwatch"]["scan"]["attempts"])
        for a in of_rule(alerts(frames), RULE)
    ]  # type: ignore[index]
    assert [
        (a["event"]["id"], a["@timestamp"], a["camwatch"]["scan"]["attempts"])
        for a in of_rule(alerts(frames, batch_size), RULE)
    ] == key  # type: ignore[index]
    assert len(key) == 1


def test_an_ipv6_scan_writes_its_sample_with_brackets() -> None:
    # A watched camera sweeps IPv6 telnet. "2001:db8:77::1:23" is itself an address: the port must be told
    # apart ([address]:port, RFC 3986).
    src = "2001:db8:20:1::11"
    frames = []
    for i in range(60):
        dst = f"2001:db8:77::{i + 1:x}"
        seg = synth.tcp(src, dst, 50000 + i, 23, flags=synth.TCP_SYN, seq=i)
        frames.append((T0 + i * 50 * MS, synth.ether(HIK.mac, GW.mac, 0x86DD, synth.ipv6(src, dst, 6, seg))))
    (a,) = of_rule(alerts(frames), RULE)
    sample = a["camwatch"]["scan"]["sample"]  # type: ignore[index]
    assert sample[0] == "[2001:db8:77::1]:23" and all(s.startswith("[") for s in sample)


def test_sessions_met_mid_stream_are_not_failed_attempts() -> None:
    # The capture starts while the camera's cloud connections run (the cloud's data first), then the camera
    # sweeps telnet: the running sessions are connections, not refused or unanswered attempts.
    frames = []
    pa = synth.TCP_PSH | synth.TCP_ACK
    for i, port in enumerate((443, 8666, 7660)):
        cloud = f"198.51.100.{i + 1}"
        t = T0 + i * MS
        frames.append(
            (t, synth.tcp4_frame(GW.mac, HIK.mac, cloud, HIK.ip, port, 40000 + i, b"data", flags=pa))
        )
        frames.append(
            (t + MS, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, cloud, 40000 + i, port, b"ack", flags=pa))
        )
    for i in range(60):
        syn = synth.tcp4_frame(
            HIK.mac, GW.mac, HIK.ip, f"203.0.113.{i + 1}", 50000 + i, 23, flags=synth.TCP_SYN
        )
        frames.append((T0 + 10 * MS + i * 50 * MS, syn))
    (a,) = of_rule(alerts(frames), RULE)
    scan = a["camwatch"]["scan"]  # type: ignore[index]
    assert scan["failed_addresses"] == 60
    assert not any(s.startswith("198.51.100.") for s in scan["sample"])
    # Their opening was not seen and only their ports say the camera opened them: not attempts at all.
    assert "60 connection attempts" in str(a["message"]) and "60 of them refused or unanswered" in str(
        a["message"]
    )


def test_a_camera_infected_again_days_later_is_reported_again() -> None:
    # Mirai lives in RAM: the camera is reset, then infected again three days later and scans again.
    day = 86_400 * NS
    records = alerts(_mirai(200) + _mirai(200, t=T0 + 3 * day))
    scans = of_rule(records, RULE)
    assert len(scans) == 2 and scans[1]["@timestamp"] > scans[0]["@timestamp"]  # type: ignore[operator]


def test_a_recorder_reconnecting_to_rebooting_cameras_is_not_a_scan() -> None:
    # A PoE switch lost power for 3 minutes: while its 40 cameras boot, their RTSP servers refuse the
    # recorder's reconnects (RST) for 30 s. They accepted it before: peers, not scan targets.
    cams = [Host(f"10.20.0.{100 + i}", f"44:19:b6:00:01:{i:02x}") for i in range(40)]
    options = (b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\n\r\n", b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n")
    frames = [
        f
        for i, cam in enumerate(cams)
        for f in exchange(T0 + i * MS, RECORDER, cam, 50000 + i, 554, [options])
    ]
    port = 51000
    for attempt in range(3):  # a retry every 10 s per camera while they boot
        for i, cam in enumerate(cams):
            t = T0 + 180 * NS + attempt * 10 * NS + i * 20 * MS
            syn = synth.tcp4_frame(
                RECORDER.mac, cam.mac, RECORDER.ip, cam.ip, port, 554, flags=synth.TCP_SYN, seq=1
            )
            rst = synth.tcp4_frame(cam.mac, RECORDER.mac, cam.ip, RECORDER.ip, 554, port,
                                   flags=synth.TCP_RST | synth.TCP_ACK, ack=2)  # fmt: skip
            frames += [(t, syn), (t + MS, rst)]
            port += 1
    assert of_rule(alerts(frames), RULE) == []


def test_the_attempts_counted_are_the_window_s() -> None:
    # 20 ordinary connections, a quiet window, then a scan: the alert counts the scan's attempts only.
    hosts = [Host(f"198.51.100.{i + 1}", GW.mac) for i in range(20)]
    frames = [
        f for i, h in enumerate(hosts) for f in exchange(T0 + i * MS, XM, h, 30000 + i, 443, [(b"x", b"y")])
    ]
    (a,) = of_rule(alerts(frames + _mirai(200, t=T0 + 300 * NS)), RULE)
    assert a["camwatch"]["scan"]["attempts"] == 200  # type: ignore[index]
