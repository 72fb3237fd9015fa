"""DHCP analyzer: corpus payloads against Zeek's dhcp.log, Arkime's dhcp fields, nDPI's DHCP attributes and
nfstream's labels; hand-built option edge cases; malformed input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, dhcp
from tests.monitor.analyzers.payloads import Payload, only_analyzer_errors, print_table, udp_payloads
from tests.truth.arkime import read_arkime_test
from tests.truth.ndpi import read_ndpi_out
from tests.truth.nfstream import read_nfstream_csv
from tests.truth.paths import PCAPS, arkime_pairs, ndpi_pairs, nfstream_pairs, zeek_log_pairs
from tests.truth.zeek import as_list, as_str, read_zeek_log


def _dhcp(pcap: Path) -> list[tuple[Payload, dhcp.DhcpMessage]]:
    out = []
    for p in udp_payloads(pcap):
        if {p.sport, p.dport} & {67, 68}:
            out.append((p, dhcp.parse(p.payload)))
    return out


def _by_xid(msgs: list[tuple[Payload, dhcp.DhcpMessage]]) -> dict[int, list[dhcp.DhcpMessage]]:
    groups: dict[int, list[dhcp.DhcpMessage]] = {}
    for _, m in msgs:
        groups.setdefault(m.xid, []).append(m)
    return groups


def _nonzero(addr: str | None) -> str | None:
    return None if addr in (None, "0.0.0.0") else addr


def test_dhcp_matches_zeek(capsys: pytest.CaptureFixture[str]) -> None:
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, log in [(p, t) for p, t in zeek_log_pairs() if t.name == "dhcp.log"]:
        groups = _by_xid(_dhcp(pcap))
        for row in read_zeek_log(log).rows:
            types = [t.lower() for t in as_list(row["msg_types"])]
            group = next((g for g in groups.values() if [m.message_type for m in g] == types), [])
            ours = {
                "msg_types": [m.message_type for m in group],
                "mac": next((m.mac for m in group), None),
                "host_name": next((m.host_name for m in group if m.host_name), None),
                "requested_addr": next((m.requested_address for m in group if m.requested_address), None),
                "assigned_addr": next((_nonzero(m.yiaddr) for m in group if m.message_type == "ack"), None),
                "client_addr": next((_nonzero(m.ciaddr) for m in group if _nonzero(m.ciaddr)), None),
            }
            theirs = {
                "msg_types": types,
                "mac": as_str(row["mac"]),
                "host_name": as_str(row["host_name"]),
                "requested_addr": as_str(row["requested_addr"]),
                "assigned_addr": as_str(row["assigned_addr"]),
                "client_addr": as_str(row["client_addr"]),
            }
            agree = [k for k in theirs if ours[k] == theirs[k]]
            failures += [
                f"{pcap.name} {k}: ours {ours[k]!r} zeek {theirs[k]!r}" for k in theirs if k not in agree
            ]
            table.append(
                (pcap.name, ",".join(types), f"{len(agree)}/{len(theirs)}", theirs["host_name"] or "-")
            )
    print_table(capsys, "DHCP vs Zeek dhcp.log", ("capture", "msg_types", "fields agree", "host_name"), table)
    assert table and not failures, failures


def test_dhcp_matches_arkime(capsys: pytest.CaptureFixture[str]) -> None:
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, truth in arkime_pairs():
        sessions = [s for s in read_arkime_test(truth) if isinstance(s.get("dhcp"), dict)]
        if not sessions:
            continue
        msgs = [m for _, m in _dhcp(pcap)]
        for s in sessions:
            d = s["dhcp"]
            checks = {
                "id": ({f"{m.xid:x}" for m in msgs}, set(d.get("id", []))),
                "mac": ({m.mac for m in msgs}, set(d.get("mac", []))),
                "type": ({(m.message_type or "").upper() for m in msgs}, set(d.get("type", []))),
                "requestIp": (
                    {m.requested_address for m in msgs if m.requested_address},
                    set(d.get("requestIp", [])),
                ),
            }
            agree = [k for k, (ours, theirs) in checks.items() if ours == theirs]
            failures += [f"{pcap.name} {k}: {checks[k]}" for k in checks if k not in agree]
            table.append(
                (pcap.name, len(msgs), ",".join(sorted(d.get("type", []))), f"{len(agree)}/{len(checks)}")
            )
    print_table(capsys, "DHCP vs Arkime dhcp", ("capture", "our msgs", "types", "fields agree"), table)
    assert table and not failures, failures


def test_dhcp_matches_ndpi(capsys: pytest.CaptureFixture[str]) -> None:
    """nDPI's Hostname, `DHCP Fingerprint` (option 55) and `DHCP Class Ident` (option 60) per DHCP flow."""
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, out in ndpi_pairs():
        flows = [f for f in read_ndpi_out(out).flows if f.protocol == "DHCP"]
        if not flows:
            continue
        msgs = _dhcp(pcap)
        for f in flows:
            ends = {(f.src_ip, f.src_port), (f.dst_ip, f.dst_port)}
            mine = [m for p, m in msgs if {(p.src, p.sport), (p.dst, p.dport)} == ends]
            checks: dict[str, tuple[object, object]] = {"parsed": (bool(mine), True)}
            if f.hostname:
                checks["hostname"] = ({m.host_name for m in mine} - {None}, {f.hostname})
            if "DHCP Fingerprint" in f.attrs:
                prl = {",".join(map(str, m.parameter_request_list)) for m in mine if m.parameter_request_list}
                checks["fingerprint"] = (prl, {f.attrs["DHCP Fingerprint"]})
            if "DHCP Class Ident" in f.attrs:
                checks["class ident"] = (
                    {m.vendor_class for m in mine} - {None},
                    {f.attrs["DHCP Class Ident"]},
                )
            agree = [k for k, (a, b) in checks.items() if a == b]
            failures += [f"{pcap.name} flow {f.index} {k}: {checks[k]}" for k in checks if k not in agree]
            table.append((pcap.name, f.index, len(mine), f"{len(agree)}/{len(checks)}"))
    print_table(capsys, "DHCP vs nDPI", ("capture", "flow", "our msgs", "fields agree"), table)
    assert table and not failures, failures


def test_nfstream_dhcp_flows_parse() -> None:
    for pcap, csv_path in nfstream_pairs():
        if not any(f.application_name == "DHCP" for f in read_nfstream_csv(csv_path)):
            continue
        msgs = _dhcp(pcap)
        assert [m.message_type for _, m in msgs] == ["discover", "offer", "request", "ack"], pcap.name
        assert all(dhcp.looks_like(p.payload) for p, _ in msgs)


def test_extended_option_60_and_fqdn() -> None:
    # suricata-verify "dhcp-eve-extended-option-60": a macOS-named Windows client with option 81.
    msgs = _dhcp(PCAPS / "suricata-verify" / "dhcp-eve-extended-option-60" / "input.pcap")
    request = next(m for _, m in msgs if m.message_type == "request")
    assert request.vendor_class == "MSFT 5.0"
    assert request.host_name == "NicksMacBook"
    assert request.client_fqdn == "NicksMacBook"
    assert request.requested_address == "192.168.1.111"
    assert request.client_id == b"\x01" + bytes.fromhex("28cfdadc8d76")


# --- hand-built ------------------------------------------------------------------------------------


def _bootp(op: int = 1, sname: bytes = b"", file: bytes = b"", hlen: int = 6) -> bytes:
    head = struct.pack("!BBBBIHH", op, 1, hlen, 0, 0xDEADBEEF, 0, 0x8000)
    head += bytes([192, 0, 2, 9]) + bytes(12)  # ciaddr, yiaddr, siaddr, giaddr
    head += bytes.fromhex("4447cc000001") + bytes(10)
    return head + sname.ljust(64, b"\x00") + file.ljust(128, b"\x00") + dhcp.MAGIC_COOKIE


def test_options_overload_concatenation_and_missing_end() -> None:
    file_field = bytes([12, 4]) + b"cam1" + b"\xff"
    opts = bytes([53, 1, 3, 52, 1, 1, 60, 3]) + b"hik" + bytes([60, 4]) + b"vision"[:4]
    opts += bytes([81, 3 + 4, 0x04, 0, 0]) + b"\x03cam\x00"[:4]  # E flag, wire-encoded name, cut root
    msg = dhcp.parse(_bootp(file=file_field) + opts)  # no END option at all
    assert msg.message_type == "request"
    assert msg.host_name == "cam1"  # from the overloaded file field
    assert msg.vendor_class == "hikvisi"  # RFC 3396 concatenation
    assert msg.client_fqdn == "cam"
    assert msg.mac == "44:47:cc:00:00:01" and msg.chaddr == 0x4447CC000001
    assert msg.ciaddr == "192.0.2.9" and msg.option(53) == b"\x03"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_bootp()[:-1] + b"\x00", "magic cookie"),
        (_bootp()[:200], "shorter"),
        (_bootp(op=3), "neither request"),
        (_bootp(hlen=17), "exceeds chaddr"),
        (_bootp() + bytes([12, 10]) + b"abc", "runs past"),
        (_bootp() + bytes([12]), "cut before its length"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        dhcp.parse(data)


SAMPLES = [p.payload for pcap in sorted(PCAPS.rglob("*.pcap*")) for p in udp_payloads(pcap, 67)]


def test_every_truncation_raises_only_analyzer_error() -> None:
    assert SAMPLES
    for data in SAMPLES:
        for n in range(len(data)):
            only_analyzer_errors(dhcp.parse, data[:n])
            assert isinstance(dhcp.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(dhcp.parse, data)
    only_analyzer_errors(dhcp.parse, _bootp() + data)
    assert isinstance(dhcp.looks_like(data), bool)
