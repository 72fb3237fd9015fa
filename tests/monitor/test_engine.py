"""The engine on captures built for cases the corpus lacks: egress, stray cameras, floods."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from agents.lab import scenario, synth
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
    assert rules(alerts) == ["device.new", "egress.unexpected_destination", "egress.unexpected_destination"]
    egress = alerts[1]
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
    # An outside host opens a connection to the camera (port forward): the camera did not open it.
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
    assert rules(alerts) == ["device.new"]


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
    assert rules(alerts) == ["device.new", "egress.unexpected_destination"]
    assert alerts[1]["destination"] == {"ip": "203.0.113.9", "port": 443}
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
        ("device.new", "10.30.0.5", None),
        ("egress.unexpected_destination", "10.30.0.5", "203.0.113.50"),
        ("egress.unexpected_destination", "10.30.0.5", "10.99.0.1"),
    ]
    assert "watch list" in alerts[0]["message"]  # type: ignore[operator]
    pc = engine.inventory.get(0x00142200_0401)
    assert pc is not None and not pc.watched and pc.manufacturer == "Dell"


def test_demo_site_raises_exactly_the_expected_alerts(tmp_path: Path) -> None:
    path = write(tmp_path, list(scenario.site_packets(scenario.demo_shape())))
    engine, _, alerts = run_engine(path, policy=SITE_POLICY)
    egress = sorted(
        (a["source"]["ip"], a["destination"]["ip"]) for a in alerts if a["rule"]["id"].startswith("egress")
    )  # type: ignore[index]
    assert egress == [
        (scenario.hik_ip(1), scenario.EZVIZ_CLOUD),
        (scenario.DAHUA_IP, scenario.EASY4IP),
        (scenario.STRAY_IP, scenario.STRAY_DEST),
    ]
    new = sorted(a["source"]["mac"] for a in alerts if a["rule"]["id"] == "device.new")  # type: ignore[index]
    # Everything on the camera network, and the stray Hikvision; not the office PC.
    assert "00-14-22-00-04-01" not in new
    assert len(new) == 7
    inv = {d["mac"]: d for d in engine.inventory.records()}
    cam = inv["44-19-b6-00-01-01"]
    assert cam["vendor"] == "hikvision" and cam["watched"] is True
    assert cam["ips"] == [scenario.hik_ip(1)]
    assert cam["evidence"][0]["kind"] == "oui"
    assert cam["peers"] == 3  # recorder, gateway, the cloud


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
    bound = 2_000
    engine = Engine(SitePolicy.default(), vendors(), EngineConfig(flows=FlowConfig(max_flows=bound)))

    def feed(packets: list[tuple[int, bytes]]) -> None:
        parser = CaptureParser("flood", batch_size=8192)
        for b in parser.feed(pcap_bytes(packets)) + parser.flush():
            engine.feed(b)
            assert len(engine.flows) <= bound

    # Whole batches only, so the per-batch working state is the same at both measurements.
    step = 8192
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
    _, ref, _ = run_engine(path, cfg, batch_size=65536)
    _, got, _ = run_engine(path, cfg, batch_size=batch_size)

    def canon(flows: list) -> list[str]:  # type: ignore[type-arg]
        return sorted(repr(sorted(flow_record(f).items())) for f in flows)

    assert len(ref) > 30
    reasons = {f.end_reason for f in ref}
    assert {"idle", "active", "closed", "end"} <= reasons
    assert canon(got) == canon(ref)
