"""ARP, NDP and DHCPv6: the address claims a host makes on its own segment.

No capture of the corpus has DHCPv6, and its NDP is a handful of frames, so these messages are built with
scapy (an implementation independent of ours) from RFC 826, RFC 4861 and RFC 8415; the corpus's ARP
frames are read too.
"""

from __future__ import annotations

import pytest
from scapy.layers.dhcp6 import (
    DUID_EN,
    DUID_LL,
    DUID_LLT,
    DHCP6_RelayForward,
    DHCP6_Reply,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptRelayMsg,
)
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptSrcLLAddr,
)
from scapy.layers.l2 import ARP

from monitor.analyzers import AnalyzerError, arp, dhcpv6, ndp
from tests.monitor.analyzers.payloads import only_analyzer_errors
from tests.truth.paths import PCAPS

CAM = "44:19:b6:00:00:01"
CAM_INT = 0x4419B6000001
ROUTER = "00:00:5e:00:01:01"
ROUTER_INT = 0x00005E000101


# ---------------------------------------------------------------------------------------------- ARP


def test_arp_request_and_reply() -> None:
    req = arp.ArpPacket.parse(bytes(ARP(op=1, hwsrc=CAM, psrc="10.20.0.11", pdst="10.20.0.1")))
    assert (req.operation, req.sender_mac, req.sender_ip, req.target_ip) == (
        1,
        CAM_INT,
        "10.20.0.11",
        "10.20.0.1",
    )
    rep = arp.ArpPacket.parse(bytes(ARP(op=2, hwsrc=ROUTER, psrc="10.20.0.1", hwdst=CAM, pdst="10.20.0.11")))
    assert (rep.sender_mac, rep.sender_ip, rep.target_mac) == (ROUTER_INT, "10.20.0.1", CAM_INT)
    assert not rep.is_probe and not rep.is_announcement
    probe = arp.ArpPacket.parse(bytes(ARP(op=1, hwsrc=CAM, psrc="0.0.0.0", pdst="10.20.0.11")) + bytes(18))
    assert probe.is_probe  # RFC 5227: claims nothing
    gratuitous = arp.ArpPacket.parse(bytes(ARP(op=1, hwsrc=CAM, psrc="10.20.0.11", pdst="10.20.0.11")))
    assert gratuitous.is_announcement


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes(ARP())[:27], "shorter than the 28"),
        (b"\x00\x06" + bytes(ARP())[2:], "not Ethernet/IPv4"),
        (bytes(ARP(op=3)), "neither request"),
    ],
)
def test_arp_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        arp.ArpPacket.parse(data)


def test_arp_frames_of_the_corpus() -> None:
    from scapy.utils import PcapReader

    seen = 0
    for pcap in sorted(PCAPS.rglob("*.pcap*")):
        with PcapReader(str(pcap)) as reader:
            for pkt in reader:
                if ARP in pkt:
                    ours = arp.ArpPacket.parse(bytes(pkt[ARP]))
                    assert ours.sender_ip == pkt[ARP].psrc and ours.target_ip == pkt[ARP].pdst
                    assert ours.sender_mac == int(pkt[ARP].hwsrc.replace(":", ""), 16)
                    seen += 1
    assert seen >= 10


# ---------------------------------------------------------------------------------------------- NDP


def test_neighbour_solicitation_and_advertisement() -> None:
    ns = ndp.NdpMessage.parse(bytes(ICMPv6ND_NS(tgt="fe80::1") / ICMPv6NDOptSrcLLAddr(lladdr=CAM)))
    assert (ns.name, ns.target, ns.source_ll, ns.target_ll) == (
        "neighbor_solicitation",
        "fe80::1",
        CAM_INT,
        None,
    )
    na = ndp.NdpMessage.parse(bytes(ICMPv6ND_NA(tgt="2001:db8::11", R=0) / ICMPv6NDOptDstLLAddr(lladdr=CAM)))
    assert (na.target, na.target_ll, na.router) == ("2001:db8::11", CAM_INT, False)
    router_na = ndp.NdpMessage.parse(bytes(ICMPv6ND_NA(tgt="fe80::1", R=1)))
    assert router_na.router and router_na.target_ll is None
    # The override flag: the owner's answer sets it, a proxy's or an anycast holder's does not (RFC 4861).
    assert ndp.NdpMessage.parse(bytes(ICMPv6ND_NA(tgt="fe80::1", O=1))).override
    assert not ndp.NdpMessage.parse(bytes(ICMPv6ND_NA(tgt="fe80::1", O=0))).override


def test_router_advertisement_and_solicitation() -> None:
    ra = bytes(ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptMTU() / ICMPv6NDOptSrcLLAddr(lladdr=ROUTER))
    msg = ndp.NdpMessage.parse(ra)
    assert (msg.name, msg.router_lifetime, msg.source_ll) == ("router_advertisement", 1800, ROUTER_INT)
    rs = ndp.NdpMessage.parse(bytes(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=CAM)))
    assert rs.source_ll == CAM_INT


def test_ndp_sniffer_and_refusals() -> None:
    assert ndp.looks_like(bytes(ICMPv6ND_NS(tgt="fe80::1")))
    echo = bytes(ICMPv6EchoRequest())
    assert not ndp.looks_like(echo)
    with pytest.raises(AnalyzerError, match="not Neighbor Discovery"):
        ndp.NdpMessage.parse(echo)
    with pytest.raises(AnalyzerError, match="length 0"):
        ndp.NdpMessage.parse(bytes(ICMPv6ND_NS(tgt="fe80::1")) + b"\x01\x00" + bytes(6))
    with pytest.raises(AnalyzerError, match="runs past"):
        ndp.NdpMessage.parse(bytes(ICMPv6ND_NS(tgt="fe80::1")) + b"\x01\x02" + bytes(6))


# ---------------------------------------------------------------------------------------------- DHCPv6


def _reply(duid: object, *addresses: tuple[str, int]) -> bytes:
    ia = DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr=a, validlft=v) for a, v in addresses])
    return bytes(DHCP6_Reply(trid=0x1234) / DHCP6OptClientId(duid=duid) / ia)


def test_dhcpv6_reply_leases_addresses_to_the_duid_mac() -> None:
    msg = dhcpv6.parse(_reply(DUID_LLT(lladdr=CAM, timeval=1), ("2001:db8::11", 3600), ("2001:db8::12", 0)))
    assert (msg.name, msg.transaction_id, msg.relayed) == ("reply", 0x1234, False)
    assert msg.addresses == (("2001:db8::11", 3600), ("2001:db8::12", 0))
    assert msg.client_mac == CAM_INT
    assert dhcpv6.parse(_reply(DUID_LL(lladdr=CAM), ("2001:db8::11", 60))).client_mac == CAM_INT
    assert dhcpv6.parse(_reply(DUID_EN(enterprisenum=9, id=b"x"), ("2001:db8::11", 60))).client_mac is None


def test_dhcpv6_relay_messages_are_followed() -> None:
    inner = _reply(DUID_LL(lladdr=CAM), ("2001:db8::11", 60))
    relayed = bytes(
        DHCP6_RelayForward(linkaddr="2001:db8::1", peeraddr="fe80::11") / DHCP6OptRelayMsg(message=inner)
    )
    msg = dhcpv6.parse(relayed)
    assert msg.relayed and msg.client_mac == CAM_INT and msg.addresses == (("2001:db8::11", 60),)
    solicit = dhcpv6.parse(bytes(DHCP6_Solicit(trid=7) / DHCP6OptClientId(duid=DUID_LL(lladdr=CAM))))
    assert solicit.name == "solicit" and solicit.addresses == ()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x07\x00\x00", "shorter than a message header"),
        (b"\x2a\x00\x00\x01", "not a DHCPv6 message type"),
        (b"\x07\x00\x00\x01\x00\x01\x00\x10abc", "runs past the end"),
        (bytes(DHCP6_RelayForward()), "without a Relay Message"),
    ],
)
def test_dhcpv6_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        dhcpv6.parse(data)


def test_every_truncation_raises_only_analyzer_errors() -> None:
    samples = [
        (arp.ArpPacket.parse, bytes(ARP(op=2, hwsrc=CAM, psrc="10.20.0.11"))),
        (ndp.NdpMessage.parse, bytes(ICMPv6ND_RA() / ICMPv6NDOptSrcLLAddr(lladdr=ROUTER))),
        (dhcpv6.parse, _reply(DUID_LLT(lladdr=CAM), ("2001:db8::11", 3600))),
    ]
    for parse, data in samples:
        for n in range(len(data)):
            only_analyzer_errors(parse, data[:n])
