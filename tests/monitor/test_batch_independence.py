"""What the analyzers see of a flow must not depend on where batches end (replay reads 65,536 packets a batch;
live capture whatever arrived since the last read).

The flow table picks the packets to show the analyzers when it groups a batch, with the flow's budget at
that moment (12 packets for a new flow). A label given inside the batch changes the budget: a control
protocol's to every packet (the analysis then asks the flow table for the rest of the batch's packets), a
media or encrypted session's to a few more (the analysis skips what the flow table picked beyond them).
Before, a camera that sends its DNS lookups from one source port (many embedded resolvers do) had its 7th
and later lookups of a replay's first batch unread: the lookup of its vendor's P2P cloud was missed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.payloads import dns_answer, dns_query
from lab.synth import udp4_frame
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.enginerun import run_engine

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
CAM_MAC, CAM_IP = "44:19:b6:00:00:01", "192.168.1.64"  # a Hikvision OUI
DNS_MAC, RESOLVER = "02:00:00:00:00:53", "192.168.1.1"
POLICY = SitePolicy.from_yaml("site: s\nmonitored: {networks: [192.168.1.0/24]}\n")
BENIGN = [f"time{i}.example.org" for i in range(6)]
CLOUD = "litedev.ezvizlife.com"


def _lookups(tmp_path: Path) -> Path:
    """Six benign lookups, then the P2P cloud's, all from source port 5000, one a second."""
    packets = []
    for i, name in enumerate([*BENIGN, CLOUD]):
        t = T0 + i * NS
        query = udp4_frame(CAM_MAC, DNS_MAC, CAM_IP, RESOLVER, 5000, 53, dns_query(i + 1, name))
        answer = udp4_frame(
            DNS_MAC, CAM_MAC, RESOLVER, CAM_IP, 53, 5000, dns_answer(i + 1, name, "203.0.113.9")
        )
        packets += [(t, query), (t + NS // 100, answer)]
    path = tmp_path / "lookups.pcap"
    path.write_bytes(pcap_bytes(packets))
    return path


@pytest.mark.parametrize("batch_size", [1, 4, 65536])
def test_a_lookup_late_in_a_long_dns_flow_is_seen(tmp_path: Path, batch_size: int) -> None:
    _, flows, alerts = run_engine(_lookups(tmp_path), policy=POLICY, batch_size=batch_size)
    (flow,) = flows
    assert (flow.protocol, flow.packets) == ("dns", 14)
    cloud = [a for a in alerts if a["rule"]["id"] == "dns.vendor_cloud"]  # type: ignore[index]
    assert len(cloud) == 1 and CLOUD in str(cloud[0]["message"])


CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "pcaps"


@pytest.mark.parametrize(
    "capture",
    ["arkime/dns-wiresharkrepo.pcap", "arkime/mqtt_big.pcap", "ndpi/alexa-app.pcapng", "ndpi/sip.pcap"],
)
def test_what_the_analyzers_read_does_not_depend_on_batch_size(capture: str) -> None:
    # Control flows (DNS, MQTT), capped ones (TLS) and media (RTP after SIP/SDP): the packets read, the labels
    # and the alerts are those of one packet per batch.
    results = []
    for batch_size in (1, 5, 65536):
        engine, flows, alerts = run_engine(CORPUS / capture, batch_size=batch_size)
        labels = sorted((str(f.key), f.protocol or "") for f in flows)
        results.append((engine.analysis.stats.packets, labels, sorted(str(a["event"]["id"]) for a in alerts)))  # type: ignore[index]
    assert results[0] == results[1] == results[2]
