"""NTP analyzer: corpus payloads against Zeek's ntp.log and nDPI's NTP labels; rejection of non-NTP."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, ntp
from tests.monitor.analyzers.payloads import only_analyzer_errors, print_table, udp_payloads
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import PCAPS, ndpi_pairs, zeek_log_pairs
from tests.truth.zeek import as_float, as_int, as_str, read_zeek_log

Key = tuple[int, int, int | None, str | None, float | None, str | None]


def _key(
    version: int, mode: int, stratum: int | None, ref: str | None, poll: float | None, xmt: float | None
) -> Key:
    return (version, mode, stratum, ref, poll, f"{xmt:.6f}" if xmt is not None else None)


def test_ntp_matches_zeek(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ntp.log row (version, mode, stratum, ref_id, poll, xmt_time) is one of our packets."""
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, log in [(p, t) for p, t in zeek_log_pairs() if t.name == "ntp.log"]:
        ours: Counter[Key] = Counter()
        payloads = udp_payloads(pcap, 123)
        for p in payloads:
            m = ntp.parse(p.payload)
            if m.stratum is None:
                continue  # control/private modes: Zeek's ntp.log only has the standard header modes
            poll = float(2**m.poll) if m.poll is not None else None
            ours[_key(m.version, m.mode, m.stratum, m.reference_id, poll, m.transmit_time)] += 1
        theirs: Counter[Key] = Counter()
        for row in read_zeek_log(log).rows:
            xmt = as_float(row["xmt_time"])
            theirs[
                _key(
                    as_int(row["version"]) or 0,
                    as_int(row["mode"]) or 0,
                    as_int(row["stratum"]),
                    as_str(row["ref_id"]),
                    as_float(row["poll"]),
                    xmt if xmt else None,
                )
            ] += 1
        matched = sum((ours & theirs).values())
        total = sum(theirs.values())
        if matched != total:
            failures.append(f"{pcap.name}: missing {theirs - ours}, extra {ours - theirs}")
        table.append((pcap.name, len(payloads), sum(ours.values()), total, matched))
    print_table(
        capsys, "NTP vs Zeek ntp.log", ("capture", "packets", "std mode", "zeek rows", "rows agree"), table
    )
    assert table and not failures, failures


def test_ntp_matches_ndpi_labels(capsys: pytest.CaptureFixture[str]) -> None:
    """nDPI labels these flows NTP; the capture names give the version (NTPv2.pcap, NTPv3.pcap)."""
    table: list[tuple[object, ...]] = []
    for pcap, out in ndpi_pairs():
        flows = [f for f in read_ndpi_out(out).flows if f.protocol == "NTP"]
        if not flows:
            continue
        msgs = [ntp.parse(p.payload) for p in udp_payloads(pcap, 123)]
        versions = sorted({m.version for m in msgs})
        table.append((pcap.name, len(flows), len(msgs), versions, sorted({m.mode_name for m in msgs})))
        assert msgs and all(ntp.looks_like(p.payload) for p in udp_payloads(pcap, 123))
        if pcap.name.startswith("NTPv"):
            assert versions == [int(pcap.name[4])]
    print_table(capsys, "NTP vs nDPI", ("capture", "NTP flows", "our packets", "versions", "modes"), table)
    assert table


def test_reference_ids() -> None:
    pkts = [ntp.parse(p.payload) for p in udp_payloads(PCAPS / "zeek" / "ntp" / "misordered-ntp.pcap", 123)]
    by_stratum = {m.stratum: m.reference_id for m in pkts}
    assert by_stratum[1] == "GPSs"  # a stratum-1 source code
    assert by_stratum[0] == "\\x00\\x00\\x00\\x00"  # kiss code field empty, shown as Zeek shows it


def _header(first: int, stratum: int = 2) -> bytes:
    return bytes([first, stratum, 6, 0xEC]) + bytes(8) + bytes([192, 0, 2, 1]) + bytes(32)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (_header(0x00 | (5 << 3) | 3), "version 5"),
        (_header(0x00 | (4 << 3) | 0), "reserved mode"),
        (_header(0x23)[:47], "shorter"),
        (_header(0x23, stratum=17), "reserved stratum"),
        (bytes([(2 << 3) | 6]) + bytes(5), "control message"),
        (bytes([(2 << 3) | 7]) + bytes(3), "private message"),
    ],
)
def test_rejects_non_ntp(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        ntp.parse(data)
    assert not ntp.looks_like(data)


def test_client_server_control_private() -> None:
    m = ntp.parse(_header(0x23))  # LI 0, v4, client
    assert (m.version, m.mode, m.mode_name, m.stratum, m.poll, m.reference_id) == (
        4,
        3,
        "client",
        2,
        6,
        "192.0.2.1",
    )
    assert m.transmit_time is None
    monlist = ntp.parse(bytes([0x17, 0x00, 0x03, 0x2A]) + bytes(4))  # ntpdc monlist request (mode 7)
    assert monlist.mode_name == "private" and monlist.stratum is None
    assert ntp.parse(bytes([0x16, 0x02]) + bytes(10)).mode_name == "control"


SAMPLES = [p.payload for pcap in sorted(PCAPS.rglob("*.pcap*")) for p in udp_payloads(pcap, 123)][:40]


def test_every_truncation_raises_only_analyzer_error() -> None:
    assert SAMPLES
    for data in SAMPLES:
        for n in range(len(data)):
            only_analyzer_errors(ntp.parse, data[:n])
            assert isinstance(ntp.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(ntp.parse, data)
    assert isinstance(ntp.looks_like(data), bool)
