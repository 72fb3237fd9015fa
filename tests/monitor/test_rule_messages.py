"""What the person on call reads: the alert messages of the demo site and of a WebRTC live view.

A message must say what happened in words that are true of that traffic: a STUN/ICE exchange with a WebRTC
peer is not "the vendor's P2P service"; a vendor-cloud name is "an endpoint of the EZVIZ cloud", not "a ezviz
cloud endpoint".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab import scenario
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.rules.dns import _KIND_NAMES
from monitor.vendors.clouds import KINDS
from tests.enginerun import run_engine

ROOT = Path(__file__).parents[2]
WEBRTC = ROOT / "tests" / "data" / "fixtures" / "webrtc" / "liveview.pcap"


def _messages(alerts: list[dict[str, Any]], rule: str) -> list[str]:
    return [str(a["message"]) for a in alerts if a["rule"]["id"] == rule]


def test_vendor_cloud_and_vendor_p2p_messages(tmp_path: Path) -> None:
    path = tmp_path / "demo.pcap"
    path.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    policy = SitePolicy.from_yaml((ROOT / "examples" / "site-policy.yaml").read_bytes(), source="policy")
    _, _, alerts = run_engine(path, policy=policy)
    clouds = _messages(alerts, "dns.vendor_cloud")
    assert any("litedev.ezvizlife.com, an endpoint of the EZVIZ cloud:" in m for m in clouds), clouds
    assert any("www.easy4ipcloud.com, an endpoint of the Dahua P2P service:" in m for m in clouds), clouds
    assert not any(" a ezviz" in m or " a dahua" in m or " a xiongmai" in m for m in clouds), clouds
    p2p = _messages(alerts, "p2p.nat_traversal")
    assert any('EZVIZ XML "STUN" NAT traversal' in m and "through EZVIZ's P2P service" in m for m in p2p), p2p
    assert any("Dahua Easy4IP (DHGET)" in m and "through Dahua's Easy4IP P2P service" in m for m in p2p), p2p


def test_stun_with_a_webrtc_peer_is_not_called_the_vendors_service(tmp_path: Path) -> None:
    _, _, alerts = run_engine(WEBRTC)
    (message,) = _messages(alerts, "p2p.nat_traversal")
    assert "STUN/ICE NAT traversal with 203.0.113.10" in message
    assert "P2P service" not in message and "vendor" not in message
    assert "WebRTC" in message and "block STUN/TURN" in message


def test_every_cloud_kind_has_words() -> None:
    assert set(_KIND_NAMES) == KINDS


def test_resolver_bypass_without_resolvers_is_dns_off_the_site(tmp_path: Path) -> None:
    """docs/policy.md, "No resolvers, no viewers": without `resolvers`, DNS off the site is still a bypass."""
    path = tmp_path / "demo.pcap"
    path.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    text = (ROOT / "examples" / "site-policy.yaml").read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if not line.startswith("resolvers:"))
    assert without != text
    for source in (text, without):
        policy = SitePolicy.from_yaml(source.encode(), source="policy")
        _, _, alerts = run_engine(path, policy=policy)
        bypassed = {a["destination"]["ip"] for a in alerts if a["rule"]["id"] == "dns.resolver_bypass"}
        # The Xiongmai board's hard-coded public resolvers; its lookups through the site resolver are not.
        assert bypassed == {"114.114.114.114", "8.8.8.8"}, (policy.resolvers, bypassed)
