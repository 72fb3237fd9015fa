"""IANA protocol keywords for ECS network.transport."""

from __future__ import annotations

import pytest

from monitor.iana import KEYWORDS, transport_name


@pytest.mark.parametrize(
    ("number", "keyword"),
    [(0, "hopopt"), (1, "icmp"), (2, "igmp"), (6, "tcp"), (17, "udp"), (41, "ipv6"), (47, "gre"),
     (50, "esp"), (51, "ah"), (58, "ipv6-icmp"), (89, "ospfigp"), (103, "pim"), (112, "vrrp"),
     (115, "l2tp"), (132, "sctp"), (135, "mobility header"), (136, "udplite"), (145, "nsh")],
)  # fmt: skip
def test_keywords_of_well_known_numbers(number: int, keyword: str) -> None:
    assert transport_name(number) == keyword


def test_numbers_without_a_keyword_are_written_as_numbers() -> None:
    # 61, 63, 68, 99, 114: the registry's "any ..." placeholders; 146-252 unassigned; 253-254 experiments.
    for number in (61, 63, 68, 99, 114, 146, 200, 253, 254, 255):
        assert transport_name(number) == str(number)


def test_every_keyword_is_lowercase_and_unique() -> None:
    assert len(KEYWORDS) == 141  # 146 numbers 0-145, five without a keyword
    assert all(k == k.lower() and k.strip() == k and k for k in KEYWORDS.values())
    assert len(set(KEYWORDS.values())) == len(KEYWORDS)


def test_an_igmp_flow_record_says_igmp() -> None:
    from pathlib import Path

    from monitor.records import flow_record
    from tests.enginerun import run_engine

    corpus = Path(__file__).resolve().parents[1] / "data" / "corpus" / "pcaps" / "arkime" / "igmp.pcap"
    _, flows, _ = run_engine(corpus)
    transports = {flow_record(f)["network"]["transport"] for f in flows}
    assert "igmp" in transports and "2" not in transports
