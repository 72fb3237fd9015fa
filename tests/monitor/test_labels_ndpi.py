"""Protocol labels against nDPI's, on every nDPI capture of the corpus.

For each flow nDPI classified by DPI as one of the camera-relevant protocols, our `network.protocol`
must be the same protocol on at least 95% of those flows (per the protocol issue). nDPI's
port/IP guesses are not DPI results and are left out. The per-protocol table is printed.
"""

from __future__ import annotations

from collections import Counter

from monitor.flows import Flow
from tests.enginerun import NO_TIMEOUTS, run_engine
from tests.monitor.test_flows_ndpi import ndpi_key
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import ndpi_pairs

# nDPI's names of the camera-relevant protocols -> ours (the same names, lower case).
CAMERA_PROTOCOLS = {
    name: name.lower()
    for name in (
        "RTSP",
        "RTP",
        "RTCP",
        "STUN",
        "DNS",
        "DHCP",
        "NTP",
        "SSDP",
        "WSD",
        "MDNS",
        "MQTT",
        "HTTP",
        "TLS",
    )
}


def test_protocol_labels_agree_with_ndpi() -> None:
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    misses: list[str] = []
    for pcap, out in ndpi_pairs():
        truth = read_ndpi_out(out)
        _, flows, _ = run_engine(pcap, NO_TIMEOUTS)
        ours: dict[object, Flow] = {}
        for f in flows:
            ours.setdefault(ndpi_key(f), f)
        for nf in truth.flows:
            want = CAMERA_PROTOCOLS.get(nf.protocol)
            if want is None or nf.guessed:
                continue
            total[want] += 1
            flow = ours.get(nf.key())
            got = flow.protocol if flow is not None else None
            if got == want:
                agree[want] += 1
            else:
                misses.append(f"{pcap.name}: {nf.l4} {nf.src_ip}:{nf.src_port} -> {nf.dst_ip}:{nf.dst_port} "
                              f"nDPI {nf.protocol}, ours {got}")  # fmt: skip
    print("\nprotocol  nDPI flows  agree  share")
    for proto in sorted(total):
        print(f"{proto:9} {total[proto]:10} {agree[proto]:6} {agree[proto] / total[proto]:6.1%}")
    overall = sum(agree.values()) / sum(total.values())
    print(f"{'all':9} {sum(total.values()):10} {sum(agree.values()):6} {overall:6.1%}")
    print("\n".join(misses[:40]))
    assert sum(total.values()) > 100
    assert overall >= 0.95, misses
