"""Community ID of our flows against Zeek's `community_id_v1` outputs and Arkime's sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.communityid import community_id
from tests.enginerun import NO_TIMEOUTS, run_engine
from tests.truth.arkime import community_id as arkime_cid
from tests.truth.arkime import read_arkime_test
from tests.truth.paths import arkime_pairs, zeek_community_id_pairs
from tests.truth.zeek import read_community_id_out

ZEEK = zeek_community_id_pairs()
ARKIME = [(p, t) for p, t in arkime_pairs() if any(arkime_cid(s) for s in read_arkime_test(t))]


@pytest.mark.parametrize(("pcap", "out"), ZEEK, ids=[p.name for p, _ in ZEEK])
def test_flow_community_ids_match_zeek(pcap: Path, out: Path) -> None:
    cases = read_community_id_out(out)
    assert cases
    _, flows, _ = run_engine(pcap, NO_TIMEOUTS)
    ours = {f.community_id() for f in flows}
    assert {c.community_id for c in cases} <= ours


@pytest.mark.parametrize(("pcap", "test"), ARKIME, ids=[p.name for p, _ in ARKIME])
def test_flow_community_ids_match_arkime(pcap: Path, test: Path) -> None:
    expected = {cid for s in read_arkime_test(test) if (cid := arkime_cid(s))}
    _, flows, _ = run_engine(pcap, NO_TIMEOUTS)
    assert expected <= {f.community_id() for f in flows}


def test_spec_examples_icmp_and_order() -> None:
    # Both directions of one flow hash alike; ICMP echo and reply map to one id, an
    # unpaired ICMP type (destination unreachable) is one-way and keeps its order.
    a, b = bytes([192, 168, 0, 1]), bytes([10, 0, 0, 1])
    assert community_id(a, b, 6, 1234, 80) == community_id(b, a, 6, 80, 1234)
    assert community_id(a, b, 1, icmp_type=8, icmp_code=0) == community_id(b, a, 1, icmp_type=0, icmp_code=0)
    assert community_id(a, b, 1, icmp_type=3, icmp_code=1) != community_id(b, a, 1, icmp_type=3, icmp_code=1)
    # Known value from the spec's reference test data (seed 0, TCP 128.232.110.120:34855 -> 66.35.250.204:80).
    src, dst = bytes([128, 232, 110, 120]), bytes([66, 35, 250, 204])
    assert community_id(src, dst, 6, 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
