"""A content sniffer (`looks_like`) against nDPI's DPI verdicts, flow by flow, over the nDPI captures.

The engine asks a protocol's `looks_like` about the first packets of a flow whose ports say nothing, so a
sniffer must fire on some packet of each flow of its protocol (also when the capture starts mid-session)
and on no packet of another protocol's flow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import NamedTuple

from tests.monitor.analyzers.payloads import tcp_payloads, udp_payloads
from tests.truth.ndpi import NdpiFlow, read_ndpi_out
from tests.truth.paths import ndpi_pairs


class Verdict(NamedTuple):
    """Did the sniffer fire on any payload of this nDPI flow?"""

    capture: str
    flow: NdpiFlow
    fired: bool

    def __str__(self) -> str:
        f = self.flow
        return f"{self.capture}: {f.l4} {f.src_ip}:{f.src_port} -> {f.dst_ip}:{f.dst_port} nDPI {f.protocol}"


def sniffer_verdicts(looks_like: Callable[[bytes], bool], l4: str) -> list[Verdict]:
    """One verdict per flow nDPI classified by DPI (not guessed) with transport `l4` ("TCP" or "UDP")."""
    out: list[Verdict] = []
    for pcap, truth in ndpi_pairs():
        payloads = tcp_payloads(pcap) if l4 == "TCP" else udp_payloads(pcap)
        fired: dict[frozenset[tuple[str, int]], bool] = defaultdict(bool)
        for p in payloads:
            key = frozenset({(p.src, p.sport), (p.dst, p.dport)})
            if p.payload and not fired[key]:
                fired[key] = looks_like(p.payload)
        for flow in read_ndpi_out(truth).flows:
            if flow.l4 == l4 and not flow.guessed:
                ends = frozenset({(flow.src_ip, flow.src_port), (flow.dst_ip, flow.dst_port)})
                out.append(Verdict(pcap.name, flow, fired[ends]))
    return out
