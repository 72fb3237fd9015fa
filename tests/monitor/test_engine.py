"""The engine on captures built for cases the corpus lacks: egress, stray cameras, floods."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

from agents.capture.pcap_source import PcapFileSource
from lab import personas, scenario, synth
from monitor.engine import Engine, EngineConfig
from monitor.flows import FlowConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.records import flow_record
from tests.enginerun import run_engine, vendors

NS = 1_000_000_000
HIK = "44:19:b6:00:00:01"
GW = "02:00:00:00:00:01"
T0 = 1_700_000_000 * NS
SITE_POLICY = SitePolicy.from_yaml(
    (Path(__file__).parents[2] / "examples" / "site-policy.yaml").read_text(), "site-policy.yaml"
)


def write(tmp_path: Path, packets: list[tuple[int, bytes]], name: str = "cap.pcap") -> Path:
    path = tmp_path / name
    path.write_bytes(pcap_bytes(packets))
    return path


def rules(alerts: list[dict[str, object]]) -> list[str]:
    return [a["rule"]["id"] for a in alerts]  # type: ignore[index]


def test_egress_to_public_address_is_one_alert_per_incident(tmp_path: Path) -> None:
    # A Hikvision camera connects three times to the same public host and port: one incident.
    pk = []
    for k in range(3):
        pk.append(
            (
                T0 + k * 10 * NS,
                synth.tcp4_frame(
                    HIK, GW, "192.168.1.64", "203.0.113.7", 40000 + k, 8666, flags=synth.TCP_SYN
                ),
            )
        )
        pk.append(
            (
                T0 + k * 10 * NS + 1000,
                synth.tcp4_frame(
                    GW,
                    HIK,
                    "203.0.113.7",
                    "192.168.1.64",
                    8666,
                    40000 + k,
                    flags=synth.TCP_SYN | synth.TCP_ACK,
                ),
            )
        )
    # ... and once to a different port: a second incident.
    pk.append((T0 + 40 * NS, synth.udp4_frame(HIK, GW, "192.168.1.64", "203.0.113.7", 5000, 6002, b"x")))
    # Traffic to private and multicast addresses is allowed by the default policy.
    pk.append((T0 + 41 * NS, synth.udp4_frame(HIK, GW, "192.168.1.64", "192.168.1.1", 5001, 53, b"q")))
    pk.append(
        (
            T0 + 42 * NS,
            synth.udp4_frame(HIK, "01:00:5e:7f:ff:fa", "192.168.1.64", "239.255.255.250", 5002, 1900, b"M"),
        )
    )
    engine, _, alerts = run_engine(write(tmp_path, pk))
    # device.new waits 5 s of capture time for the device's attribution: after the first egress alert.
    assert rules(alerts) == ["egress.unexpected_destination", "device.new", "egress.unexpected_destination"]
    new = alerts[1]
    assert new["@timestamp"] == "2023-11-14T22:13:25.000Z"  # T0 + 5 s
    assert new["event"]["start"] == "2023-11-14T22:13:20.000Z"  # type: ignore[index]  # first seen: T0
    egress = alerts[0]
    assert egress["source"] == {"ip": "192.168.1.64", "port": 40000, "mac": "44-19-b6-00-00-01"}
    assert egress["destination"] == {"ip": "203.0.113.7", "port": 8666}
    assert egress["network"]["transport"] == "tcp"  # type: ignore[index]
    assert egress["network"]["community_id"].startswith("1:")  # type: ignore[index]
    assert egress["device"] == {"manufacturer": "Hikvision", "id": "44-19-b6-00-00-01"}
    assert egress["event"]["severity"] == 3  # type: ignore[index]
    assert "203.0.113.7" in egress["message"] and "block" in egress["message"]  # type: ignore[operator]
    assert egress["event"]["id"] != alerts[2]["event"]["id"]  # type: ignore[index]
    assert engine.gate.suppressed == 2
    # The same capture gives the same ids: one incident, one stable id across runs.
    _, _, again = run_engine(write(tmp_path, pk, "again.pcap"))
    assert [a["event"]["id"] for a in again] == [a["event"]["id"] for a in alerts]  # type: ignore[index]


def test_inbound_connection_is_not_the_cameras_egress(tmp_path: Path) -> None:
    # An outside host opens a connection to the camera (port forward): the camera did not open it, so it is
    # not egress; that the camera accepted it is device.exposed.
    pk = [
        (T0, synth.tcp4_frame(GW, HIK, "198.51.100.1", "192.168.1.64", 50000, 554, flags=synth.TCP_SYN)),
        (
            T0 + 1000,
            synth.tcp4_frame(
                HIK, GW, "192.168.1.64", "198.51.100.1", 554, 50000, flags=synth.TCP_SYN | synth.TCP_ACK
            ),
        ),
    ]
    _, _, alerts = run_engine(write(tmp_path, pk))
    assert rules(alerts) == ["device.exposed", "device.new"]


def test_opener_is_the_syn_sender_when_the_capture_starts_at_the_syn_ack(tmp_path: Path) -> None:
    pk = [
        (
            T0,
            synth.tcp4_frame(
                GW, HIK, "203.0.113.9", "192.168.1.64", 443, 41000, flags=synth.TCP_SYN | synth.TCP_ACK
            ),
        )
    ]
    _, flows, alerts = run_engine(write(tmp_path, pk))
    # The camera never sent a packet: no address to announce it with, but its egress is caught.
    assert rules(alerts) == ["egress.unexpected_destination"]
    assert alerts[0]["destination"] == {"ip": "203.0.113.9", "port": 443}
    assert flow_record(flows[0])["source"]["ip"] == "203.0.113.9"  # first sender stays the record's source


def test_hikvision_camera_outside_the_camera_network(tmp_path: Path) -> None:
    # The site policy watches 10.20.0.0/24 and Hikvision devices wherever they are.
    stray, office_pc = "44:19:b6:00:09:01", "00:14:22:00:04:01"
    pk = [
        (T0, synth.tcp4_frame(stray, GW, "10.30.0.5", "203.0.113.50", 43000, 443, flags=synth.TCP_SYN)),
        (
            T0 + NS,
            synth.tcp4_frame(office_pc, GW, "10.30.0.20", "192.0.2.80", 44000, 443, flags=synth.TCP_SYN),
        ),
        # A private address outside the monitored networks is not allowed by an explicit policy.
        (T0 + 2 * NS, synth.udp4_frame(stray, GW, "10.30.0.5", "10.99.0.1", 5000, 9999, b"x")),
        # The monitored camera network is site-internal, whatever the port.
        (T0 + 3 * NS, synth.udp4_frame(stray, GW, "10.30.0.5", "10.20.0.1", 5001, 53, b"q")),
        (T0 + 4 * NS, synth.tcp4_frame(stray, GW, "10.30.0.5", "10.20.0.1", 5002, 22, flags=synth.TCP_SYN)),
    ]
    engine, _, alerts = run_engine(write(tmp_path, pk), policy=SITE_POLICY)
    got = [(a["rule"]["id"], a["source"]["ip"], a.get("destination", {}).get("ip")) for a in alerts]  # type: ignore[index, union-attr]
    assert got == [
        ("egress.unexpected_destination", "10.30.0.5", "203.0.113.50"),
        ("egress.unexpected_destination", "10.30.0.5", "10.99.0.1"),
        ("device.new", "10.30.0.5", None),  # 5 s after it was first seen
    ]
    assert "watch list" in alerts[2]["message"]  # type: ignore[operator]
    pc = engine.inventory.get(0x00142200_0401)
    assert pc is not None and not pc.watched and pc.manufacturer == "Dell"


def test_demo_site_raises_exactly_the_expected_alerts(tmp_path: Path) -> None:
    """Each persona of the demo site (lab/personas.py) raises exactly its rules, nothing more."""
    from lab import personas

    path = write(tmp_path, list(scenario.site_packets(scenario.demo_shape())))
    engine, _, alerts = run_engine(path, policy=SITE_POLICY)
    p2p_messages = [str(a["message"]) for a in alerts if a["rule"]["id"] == "p2p.nat_traversal"]  # type: ignore[index]
    assert any('EZVIZ XML "STUN"' in m for m in p2p_messages), p2p_messages
    assert any("Dahua Easy4IP (DHGET)" in m for m in p2p_messages), p2p_messages
    # Internal labels (ezviz_xml, dahua_dhget, ...) stay in network.protocol, out of the sentence.
    assert not [m for m in p2p_messages if "_" in m.split(" NAT traversal")[0]], p2p_messages
    got: dict[str, set[tuple[str, str | None]]] = {}
    for a in alerts:
        rule = a["rule"]["id"]  # type: ignore[index]
        if rule == "device.new":
            continue
        got.setdefault(a["source"]["ip"], set()).add((rule, a.get("destination", {}).get("ip")))  # type: ignore[index, union-attr, attr-defined]
    cam1, cam2 = scenario.hik_ip(1), scenario.hik_ip(2)
    assert got == {
        cam1: {  # EZVIZ persona: cloud by name, XML "STUN", UPnP search and mapping
            ("dns.vendor_cloud", scenario.GW_IP),
            ("egress.unexpected_destination", scenario.EZVIZ_CLOUD),
            ("egress.unexpected_destination", personas.EZVIZ_STUN),
            ("p2p.nat_traversal", personas.EZVIZ_STUN),
            ("upnp.port_mapping", "239.255.255.250"),
            ("upnp.port_mapping", scenario.GW_IP),
        },
        scenario.DAHUA_IP: {  # Easy4IP persona
            ("dns.vendor_cloud", scenario.GW_IP),
            ("egress.unexpected_destination", scenario.EASY4IP),
            ("p2p.nat_traversal", scenario.EASY4IP),
        },
        personas.XM_IP: {  # Xiongmai persona: hard-coded resolvers
            ("dns.vendor_cloud", "114.114.114.114"),
            ("dns.resolver_bypass", "114.114.114.114"),
            ("dns.resolver_bypass", "8.8.8.8"),
            ("egress.unexpected_destination", "114.114.114.114"),
            ("egress.unexpected_destination", "8.8.8.8"),
        },
        cam2: {  # an off-site client pulls its video: RTP leaves the site
            ("stream.egress", personas.OFFSITE_VIEWER),
            ("egress.unexpected_destination", personas.OFFSITE_VIEWER),
        },
        # A stranger on site and the off-site client pull cam2's video: they sent the requests, so they
        # are the alerts' source, and the camera the destination (and the device).
        scenario.PC_IP: {("stream.unauthorized_client", cam2)},
        # The off-site client reached cam2 from the Internet: cam2 is exposed.
        personas.OFFSITE_VIEWER: {("stream.unauthorized_client", cam2), ("device.exposed", cam2)},
        scenario.STRAY_IP: {("egress.unexpected_destination", scenario.STRAY_DEST)},
    }
    pulls = [a for a in alerts if a["rule"]["id"] == "stream.unauthorized_client"]  # type: ignore[index]
    assert {a["device"]["id"] for a in pulls} == {"44-19-b6-00-01-02"}  # type: ignore[index]
    assert {a["destination"]["mac"] for a in pulls} == {"44-19-b6-00-01-02"}  # type: ignore[index]
    assert all("mac" not in a["source"] for a in pulls)  # type: ignore[operator]
    # The well-behaved devices (Axis camera, recorder) raise nothing but device.new.
    new = sorted(a["source"]["mac"] for a in alerts if a["rule"]["id"] == "device.new")  # type: ignore[index]
    assert "00-14-22-00-04-01" not in new  # the office PC is not watched
    assert len(new) == 8
    clouds = sorted(a["destination"]["domain"] for a in alerts if a["rule"]["id"] == "dns.vendor_cloud")  # type: ignore[index]
    assert clouds == ["litedev.ezvizlife.com", "pub-cfg.secu100.net", "www.easy4ipcloud.com"]
    egress = [a for a in alerts if a["rule"]["id"] == "egress.unexpected_destination"]  # type: ignore[index]
    assert egress[0]["destination"]["domain"] == "litedev.ezvizlife.com"  # type: ignore[index]
    inv = {d["mac"]: d for d in engine.inventory.records()}
    cam = inv["44-19-b6-00-01-01"]
    assert cam["vendor"] == "hikvision" and cam["watched"] is True
    assert cam["ips"] == [scenario.hik_ip(1)]
    assert cam["evidence"][0]["kind"] == "oui"
    assert {"rtsp", "rtp", "dns", "http"} <= set(cam["protocols"])
    # Attribution from traffic: SADP gives the model and serial; a locally administered MAC is
    # still attributed to Xiongmai by its web server banner.
    cam2_rec = inv["44-19-b6-00-01-02"]
    assert cam2_rec["model"] == "DS-2CD2143G2-I" and cam2_rec["serial"].startswith("DS-2CD2143G2-I")
    assert {e["kind"] for e in cam2_rec["evidence"]} >= {"oui", "sadp", "rtsp_server"}
    xm = inv["02-12-41-00-05-01"]
    assert xm["vendor"] == "xiongmai" and any(e["kind"] == "http_server" for e in xm["evidence"])
    dahua = inv["3c-ef-8c-00-02-01"]
    assert dahua["model"] == "IPC-HFW2431S-S-S2" and any(e["kind"] == "dhip" for e in dahua["evidence"])
    axis = inv["00-40-8c-00-03-01"]
    assert any(e["kind"] == "wsd" for e in axis["evidence"])
    # Traffic with the outside per device (for the metrics): camera 2's video to the off-site
    # client; nothing for the Axis camera, whose discovery multicast stays on the site.
    ext = engine.external_traffic()
    assert ext[0x4419B6000102][2] >= 50 and ext[0x4419B6000102][0] >= 50 * 1200
    assert 0x00408C000301 not in ext and 0x001132000002 not in ext


def flood(n: int, start: int = 0) -> list[tuple[int, bytes]]:
    tpl = bytearray(synth.udp4_frame("00:11:22:33:44:55", GW, "10.0.0.1", "203.0.113.1", 1, 53, b"flood"))
    out = []
    for i in range(start, start + n):
        f = bytearray(tpl)
        # Distinct source address and port per packet: every packet is a new flow.
        f[26:30] = (0x0A000000 | (i >> 16)).to_bytes(4, "big")
        f[34:36] = (i & 0xFFFF).to_bytes(2, "big")
        out.append((T0 + i * 1000, bytes(f)))
    return out


def test_flow_flood_hits_the_bound_and_memory_stays_flat() -> None:
    bound = 1_000
    engine = Engine(SitePolicy.default(), vendors(), EngineConfig(flows=FlowConfig(max_flows=bound)))

    def feed(packets: list[tuple[int, bytes]]) -> None:
        parser = CaptureParser("flood", batch_size=4096)
        for b in parser.feed(pcap_bytes(packets)) + parser.flush():
            engine.feed(b)
            assert len(engine.flows) <= bound

    # Whole batches only, so the per-batch working state is the same at both measurements.
    step = 4096
    feed(flood(2 * step))
    tracemalloc.start()
    feed(flood(2 * step, 2 * step))
    after_4, _ = tracemalloc.get_traced_memory()
    feed(flood(8 * step, 4 * step))
    after_12, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert engine.flows.stats.created == 12 * step
    assert engine.flows.stats.evicted == 12 * step - bound
    # Three times the flows, the same live memory (within noise).
    assert after_12 < after_4 * 1.25 + 256 * 1024


@pytest.mark.parametrize("batch_size", [1, 3, 64, 1000])
def test_flows_do_not_depend_on_batch_size(tmp_path: Path, batch_size: int) -> None:
    # Short timeouts so flows are cut by idle, active and TCP close inside and across batches.
    cfg = FlowConfig(
        tcp_idle_timeout=0.5,
        udp_idle_timeout=0.05,
        other_idle_timeout=0.05,
        active_timeout=2.0,
        tcp_close_linger=0.01,
    )
    shape = scenario.SiteShape(hik_cameras=2, seconds=13.0, video_pps=30)
    path = write(tmp_path, list(scenario.site_packets(shape)))
    _, ref, ref_alerts = run_engine(path, cfg, batch_size=65536, policy=SITE_POLICY)
    _, got, got_alerts = run_engine(path, cfg, batch_size=batch_size, policy=SITE_POLICY)
    # The same alerts, in the same order, with the same timestamps, whatever the batch size.
    assert len(ref_alerts) > 20
    assert got_alerts == ref_alerts

    def canon(flows: list) -> list[str]:  # type: ignore[type-arg]
        return sorted(repr(sorted(flow_record(f).items())) for f in flows)

    assert len(ref) > 30
    reasons = {f.end_reason for f in ref}
    assert {"idle", "active", "closed", "end"} <= reasons
    assert canon(got) == canon(ref)


def test_known_devices_are_watched_but_not_announced(tmp_path: Path) -> None:
    # The site's asset register silences device.new only: the camera's egress is still reported.
    pk = [
        (T0, synth.tcp4_frame(HIK, GW, "192.168.1.64", "198.51.100.1", 50000, 443, flags=synth.TCP_SYN)),
    ]
    text = "site: s\nmonitored: {networks: [192.168.1.0/24]}\nknown_devices: [%s]\n"
    listed = SitePolicy.from_yaml(text % HIK)
    unlisted = SitePolicy.from_yaml(text % "02:00:00:00:00:09")
    capture = write(tmp_path, pk)
    _, _, with_register = run_engine(capture, policy=listed)
    _, _, without = run_engine(capture, policy=unlisted)
    assert rules(with_register) == ["egress.unexpected_destination"]
    assert rules(without) == ["egress.unexpected_destination", "device.new"]


def test_viewer_punch_packet_is_not_the_viewers_video(tmp_path: Path) -> None:
    # FFmpeg-based recorders send a 12-byte RTP "punch" packet to the camera's RTP port before the video
    # starts, so the recorder sends the flow's first packet. The video's sender is still the camera,
    # and the recorder (an allowed viewer, itself on the monitored network) is not sending video.
    recorder, rec_ip, cam_ip = "00:11:32:00:00:02", "10.20.0.2", "10.20.0.11"
    pk = personas.rtsp_session(T0, recorder, HIK, rec_ip, cam_ip, 40000, "Hikvision-Webs", 50000, 60000)
    t = pk[-1][0] + 1000
    punch = struct.pack("!BBHII", 0x80, 0, 0, 0, 0)
    pk.append((t, synth.udp4_frame(recorder, HIK, rec_ip, cam_ip, 50000, 60000, punch)))
    video = synth.RtpTemplate(HIK, recorder, cam_ip, rec_ip, 60000, 50000, 1100, 0x1234)
    pk += [(t + (i + 1) * NS // 50, video.frame(i, i * 1800)) for i in range(100)]
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [10.20.0.0/24]}\nviewers: [10.20.0.2]\n")
    _, _, alerts = run_engine(write(tmp_path, pk), policy=policy)
    assert rules(alerts) == ["device.new", "device.new"]
    # The same session pulled by a non-viewer: the camera's video to it is reported, not the client's punch.
    other = SitePolicy.from_yaml("site: s\nmonitored: {networks: [10.20.0.0/24]}\nviewers: [10.20.0.3]\n")
    _, _, alerts = run_engine(write(tmp_path, pk), policy=other)
    egress = [a for a in alerts if a["rule"]["id"] == "stream.egress"]  # type: ignore[index]
    assert [a["source"]["ip"] for a in egress] == [cam_ip]  # type: ignore[index]


def test_sustained_upstream_to_outside_is_reported_while_it_runs(tmp_path: Path) -> None:
    # A P2P media session (here unlabelled UDP at 1 Mbit/s) from a watched camera to the Internet lasts
    # for minutes: stream.egress must come after its first 10 seconds, not when the flow ends.
    frames = [
        (
            T0 + i * NS // 100,
            synth.udp4_frame(HIK, GW, "10.20.0.11", "198.51.100.50", 40000, 32100, bytes(1200)),
        )
        for i in range(100 * 60)
    ]
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [10.20.0.0/24]}\n")
    engine = Engine(policy, vendors(), EngineConfig())
    raised_at: list[float] = []  # capture time (s after the start) of the batch that raised it
    for batch in PcapFileSource(write(tmp_path, frames), 256).batches():
        events = engine.feed(batch)
        if any(a.rule.id == "stream.egress" for a in events.alerts):
            raised_at.append((int(batch.ts_ns.max()) - T0) / NS)
    events = engine.finish()
    assert not any(a.rule.id == "stream.egress" for a in events.alerts)
    assert len(raised_at) == 1 and 10 <= raised_at[0] <= 12, raised_at
    assert [(f.last_ns - T0) // NS for f in events.flows] == [59]  # the flow itself ran on


def test_viewer_back_channel_to_a_site_camera_is_not_egress(tmp_path: Path) -> None:
    # ONVIF audio back-channel: the recorder (a configured viewer) sends RTP with real payload to the
    # camera on site. Video to the recorder is allowed, and so is the recorder's audio to the camera.
    recorder, rec_ip, cam_ip = "00:11:32:00:00:02", "10.20.0.2", "10.20.0.11"
    audio = synth.RtpTemplate(recorder, HIK, rec_ip, cam_ip, 50002, 60002, 172, 0x4321)
    pk = [(T0 + i * NS // 50, audio.frame(i, i * 160)) for i in range(50)]
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [10.20.0.0/24]}\nviewers: [10.20.0.2]\n")
    _, _, alerts = run_engine(write(tmp_path, pk), policy=policy)
    assert rules(alerts) == ["device.new"]


@pytest.mark.parametrize(
    ("port", "payload"),
    [
        (80, b"GET / HTTP/1.1\r\nHost: x\r\nCache-Control: a\x01b\r\n\r\n"),  # a control character
        (554, b"DESCRIBE rtsp://x/ RTSP/1.0\r\nCSeq: \x00\x00\r\n\r\n"),
        (443, b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),  # a ServerHello cut short
    ],
)
def test_a_parse_error_kept_on_a_flow_does_not_keep_its_batch(port: int, payload: bytes) -> None:
    # A stream parser keeps its flow's error; with the traceback, the error held the frames it went through
    # and with them the batch and its decoded columns for the flow's whole life (benchmarks/mutated.py:
    # gigabytes under malformed traffic). The flow is still live here: only the batch must be gone.
    import gc
    import weakref

    from lab.floods import as_batches, tcp_frame

    engine = Engine(SitePolicy.default(), vendors())
    cam, peer = 0x0A140040, 0xC0A80102
    frames = [
        (T0, tcp_frame(0x020000000002, 0x4419B6000001, peer, cam, 40000, port, 0x02, 1, 0, b"")),
        (T0 + 1000, tcp_frame(0x4419B6000001, 0x020000000002, cam, peer, port, 40000, 0x12, 9, 2, b"")),
        (T0 + 2000, tcp_frame(0x020000000002, 0x4419B6000001, peer, cam, 40000, port, 0x18, 2, 10, payload)),
    ]
    (batch,) = as_batches(frames)
    data = weakref.ref(batch.data)
    engine.feed(batch)
    assert len(engine.flows) == 1
    del batch
    gc.collect()
    assert data() is None
