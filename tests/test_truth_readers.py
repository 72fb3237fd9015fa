"""Tests of the ground-truth readers (`tests/truth/`) against the real files of `tests/data/corpus/`."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from monitor.communityid import community_id
from tests.truth import arkime, paths
from tests.truth.ndpi import NdpiResult, read_ndpi_out, split_attrs
from tests.truth.nfstream import read_nfstream_csv
from tests.truth.suricata import read_suricata_checks, read_suricata_test
from tests.truth.zeek import (
    as_bool,
    as_float,
    as_int,
    as_list,
    as_str,
    parse_community_id_line,
    read_community_id_out,
    read_zeek_log,
    unescape,
)

MANIFEST = paths.CORPUS / "MANIFEST.md"
LICENCES = {
    "ndpi": "LGPL-3.0",
    "nfstream": "LGPL-3.0",
    "zeek": "BSD-3-Clause",
    "suricata-verify": "MIT",
    "arkime": "Apache-2.0",
}
# Truth files no reader parses: btest scripts and free-form script stdout.
UNPARSED_ZEEK = re.compile(r"(^TEST_SCRIPT__.+|^\.stdout$|^output$)")

# btest masks the first timestamp and the #open/#close dates of every baseline with this letter.
MASKED_TS = "X" * 10 + "." + "X" * 6
MASKED_DATE = "-".join(["X" * 4] + ["X" * 2] * 5)


def _rel(p: Path) -> str:
    return p.relative_to(paths.CORPUS).as_posix()


def _ids(items: list[Path]) -> list[str]:
    return [_rel(p) for p in items]


def _pair_ids(pairs: list[tuple[Path, Path]]) -> list[str]:
    return [_rel(t) for _, t in pairs]


def _catalogue(pattern: str) -> dict[str, re.Match[str]]:
    """Claims of the MANIFEST per-file catalogue (written by an independent parser), keyed by truth path."""
    rx = re.compile(pattern)
    found = (rx.match(line) for line in MANIFEST.read_text(encoding="utf-8").splitlines())
    return {m.group("path"): m for m in found if m is not None}


def _cid(src: str, dst: str, proto: int, sport: int = 0, dport: int = 0, **icmp: int) -> str:
    return community_id(
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, proto, sport, dport, **icmp
    )


# ----------------------------------------------------------------------------------- corpus copy


def _manifest_table() -> dict[str, tuple[str, int, str]]:
    rows: dict[str, tuple[str, int, str]] = {}
    row_re = re.compile(
        r"^\| `((?:pcaps|truth)/[^`]+)` \| [^|]+ \| `[^`]+` \| `[0-9a-f]{12}` "
        r"\| (\S+) \| (\d+) \| `([0-9a-f]{64})` \|$"
    )
    for line in MANIFEST.read_text(encoding="utf-8").splitlines():
        m = row_re.match(line)
        if m:
            rows[m.group(1)] = (m.group(2), int(m.group(3)), m.group(4))
    return rows


def test_manifest_lists_every_file_with_its_sha256_and_licence() -> None:
    table = _manifest_table()
    on_disk = {_rel(p) for p in paths.CORPUS.rglob("*") if p.is_file() and p != MANIFEST}
    assert set(table) == on_disk
    for rel, (licence, size, sha) in table.items():
        data = (paths.CORPUS / rel).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha), rel
        assert licence == LICENCES[rel.split("/")[1]], rel


def test_every_truth_file_has_its_capture_and_a_reader() -> None:
    assert len(paths.ndpi_pairs()) == len(paths.ndpi_outs()) > 0
    assert len(paths.nfstream_pairs()) == len(paths.nfstream_csvs()) > 0
    assert len(paths.arkime_pairs()) == len(paths.arkime_tests()) > 0
    assert len(paths.zeek_log_pairs()) == len(paths.zeek_logs()) > 0
    assert len(paths.zeek_community_id_pairs()) == len(paths.zeek_community_id_outs()) == 2
    covered = {
        *paths.ndpi_outs(),
        *paths.nfstream_csvs(),
        *paths.arkime_tests(),
        *paths.suricata_tests(),
        *paths.zeek_logs(),
        *paths.zeek_community_id_outs(),
    }
    unparsed = {p for p in paths.TRUTH.rglob("*") if p.is_file() and p not in covered}
    unexpected = [
        p for p in unparsed if not (p.is_relative_to(paths.TRUTH / "zeek") and UNPARSED_ZEEK.match(p.name))
    ]
    assert unexpected == []


def test_paths_helpers() -> None:
    assert paths.pcap("ndpi/sip.pcap").is_file()
    assert paths.truth("ndpi/sip.pcap.out").is_file()
    log = paths.truth("zeek/dhcp/dhcp_inform.pcap/scripts.base.protocols.dhcp.inform/dhcp.log")
    assert paths.zeek_trace_of(log) == paths.pcap("zeek/dhcp/dhcp_inform.pcap")
    assert (paths.pcap("ndpi/sip.pcap"), paths.truth("ndpi/sip.pcap.out")) in paths.ndpi_pairs()


# ----------------------------------------------------------------------------------------- nDPI


@pytest.mark.parametrize("out", paths.ndpi_outs(), ids=_ids(paths.ndpi_outs()))
def test_ndpi_summary_matches_flow_lines(out: Path) -> None:
    r = read_ndpi_out(out)
    assert r.flows and r.summary and r.breeds and r.header
    assert sum(t.flows for t in r.summary.values()) == len(r.flows)
    assert sum(t.packets for t in r.summary.values()) == sum(f.packets for f in r.flows)
    assert sum(t.bytes for t in r.summary.values()) == sum(f.bytes for f in r.flows)
    per_app: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for f in r.flows:
        acc = per_app[f.app]
        acc[0] += f.packets
        acc[1] += f.bytes
        acc[2] += 1
    assert {app: [t.packets, t.bytes, t.flows] for app, t in r.summary.items()} == per_app
    breeds = (sum(t.packets for t in r.breeds.values()), sum(t.bytes for t in r.breeds.values()))
    assert breeds == (sum(f.packets for f in r.flows), sum(f.bytes for f in r.flows))


@pytest.mark.parametrize("out", paths.ndpi_outs(), ids=_ids(paths.ndpi_outs()))
def test_ndpi_flow_lines_are_well_formed(out: Path) -> None:
    r = read_ndpi_out(out)
    for section in (r.detected, r.undetected):
        assert [f.index for f in section] == list(range(1, len(section) + 1))
    assert all(a.bytes >= b.bytes for a, b in zip(r.detected, r.detected[1:], strict=False))
    for f in r.flows:
        assert f.bidirectional == (f.s2c_packets > 0)
        assert f.c2s_packets > 0 and f.proto_ids and f.app
        assert "[" not in f.src_ip and "[" not in f.dst_ip
        ipaddress.ip_address(f.src_ip)
        ipaddress.ip_address(f.dst_ip)
        assert f.l4 in {"TCP", "UDP", "ICMP", "ICMPV6", "IGMP"}
        assert f.undetected == (f.app == "Unknown")
        if f.l4 not in ("TCP", "UDP"):
            assert f.src_port == f.dst_port == 0
    # the number of flows nDPI says it classified per confidence level
    by_conf = Counter(f.confidence for f in r.flows)
    stated = {
        k.removeprefix("Confidence ").strip(): int(v.split()[0])
        for k, v in r.header.items()
        if k.startswith("Confidence ")
    }
    assert stated == dict(by_conf)


NDPI_CLAIMS = _catalogue(
    r"^    - nDPI `truth/(?P<path>ndpi/[^`]+)`: \*\*(?P<flows>\d+) flows\*\* \((?P<det>\d+) classified, "
    r"(?P<und>\d+) in 'Undetected flows'\); packets (?P<pkts>\d+), bytes (?P<bytes>\d+)"
)


@pytest.mark.parametrize("out", paths.ndpi_outs(), ids=_ids(paths.ndpi_outs()))
def test_ndpi_totals_agree_with_manifest_catalogue(out: Path) -> None:
    claim = NDPI_CLAIMS[out.relative_to(paths.TRUTH).as_posix()]
    r = read_ndpi_out(out)
    got = (
        len(r.flows),
        len(r.detected),
        len(r.undetected),
        sum(f.packets for f in r.flows),
        sum(f.bytes for f in r.flows),
    )
    assert got == tuple(int(claim.group(k)) for k in ("flows", "det", "und", "pkts", "bytes"))


def _ndpi(name: str) -> NdpiResult:
    return read_ndpi_out(paths.truth(f"ndpi/{name}.out"))


def test_ndpi_sip_known_rows() -> None:
    r = _ndpi("sip.pcap")
    first = r.flows[0]
    assert (first.l4, first.src_ip, first.src_port, first.dst_ip, first.dst_port) == (
        "UDP",
        "192.168.1.2",
        5060,
        "212.242.33.35",
        5060,
    )
    assert (first.c2s_packets, first.c2s_bytes, first.s2c_packets, first.s2c_bytes) == (53, 21940, 31, 15635)
    assert (first.master, first.app, first.protocol, first.proto_ids, first.confidence) == (
        None,
        "SIP",
        "SIP",
        (100,),
        "DPI",
    )
    assert first.bidirectional and first.duration_s == pytest.approx(1521.57)
    assert first.attrs["PLAIN TEXT"] == "REGISTER sip"
    rtp = r.flows[2]
    assert (rtp.app, rtp.bidirectional, rtp.attrs["Stream Content"]) == ("RTP", False, "Audio")
    (unknown,) = r.undetected
    assert (unknown.src_port, unknown.dst_ip, unknown.dst_port, unknown.app) == (
        30001,
        "212.242.33.36",
        40393,
        "Unknown",
    )
    assert (unknown.confidence, unknown.undetected, unknown.guessed, unknown.duration_s) == (
        "Unknown",
        True,
        True,
        0.0,
    )
    assert r.summary["SIP"].packets == 102 and r.summary["SIP"].flows == 2


def test_ndpi_rtsp_and_hls() -> None:
    (rtsp,) = _ndpi("rtsp_setup_http.pcapng").flows
    assert (rtsp.src_ip, rtsp.src_port, rtsp.dst_ip, rtsp.dst_port, rtsp.bidirectional) == (
        "172.28.5.170",
        63840,
        "172.28.4.26",
        8554,
        False,
    )
    assert (rtsp.app, rtsp.category, rtsp.attrs["User-Agent"]) == (
        "RTSP",
        "Media/1",
        "LibVLC/3.0.16 (LIVE555 Streaming Media v2016.11.28)",
    )
    (hls,) = _ndpi("hls.pcapng").flows
    assert (hls.master, hls.app, hls.protocol, hls.proto_ids, hls.hostname) == (
        "HTTP",
        "HLS",
        "HTTP",
        (7, 418),
        "192.168.88.231",
    )


def test_ndpi_vlan_tunnel_and_ipv6() -> None:
    rtmp = _ndpi("rtmp.pcap").flows
    assert [(f.vlan, f.tunnel, f.app) for f in rtmp] == [
        (113, "GTP", "RTMP"),
        (113, "GTP", "RTMP"),
        (None, None, "RTMP"),
    ]
    ptp = _ndpi("ptpv2.pcap").flows[0]
    assert (ptp.src_ip, ptp.src_port, ptp.dst_ip, ptp.dst_port) == (
        "fe80::20:9400:d",
        320,
        "fe80::2b0:aeff:fe01:f921",
        320,
    )
    syslog = _ndpi("syslog.pcap")
    (und,) = syslog.undetected
    assert (und.l4, und.src_ip, und.src_port, und.vlan) == ("TCP", "169.46.82.162", 52173, 1906)
    # the same endpoints on another VLAN are another flow
    same = [f for f in syslog.detected if f.src_ip == "10.186.117.194" and f.src_port == 49948]
    assert [(f.vlan, f.app) for f in same] == [(1506, "Syslog")] and same[0].key() != und.key()


def test_ndpi_icmp_igmp_dhcp_and_nested_brackets() -> None:
    r = _ndpi("alexa-app.pcapng")
    icmp6 = [f for f in r.flows if f.l4 == "ICMPV6"]
    assert ("::", "ff02::16") in [(f.src_ip, f.dst_ip) for f in icmp6]
    (igmp,) = [f for f in r.flows if f.l4 == "IGMP"]
    assert (igmp.src_ip, igmp.dst_ip, igmp.c2s_packets, igmp.c2s_bytes) == ("0.0.0.0", "224.0.0.1", 2, 92)
    dhcp = next(f for f in r.flows if f.app == "DHCP" and f.hostname is not None)
    assert (dhcp.hostname, dhcp.attrs["DHCP Class Ident"]) == ("android-1c1335ec95a27318", "dhcpcd-5.5.6")
    ua = next(f.attrs["User-Agent"] for f in r.flows if "PitanguiBridge" in f.attrs.get("User-Agent", ""))
    assert ua.endswith(
        "PitanguiBridge/1.16.4.5-[MANUFACTURER=LGE][RELEASE=5.1.1][BRAND=lge][SDK=22][MODEL=LGLS751]"
    )
    icmp = _ndpi("stun_signal.pcapng").flows[2]
    assert (icmp.l4, icmp.src_ip, icmp.src_port, icmp.dst_port, icmp.packets) == (
        "ICMP",
        "35.158.183.167",
        0,
        0,
        34,
    )


def test_ndpi_header_guess_and_ja3_table() -> None:
    chrome = _ndpi("443-chrome.pcap")
    assert chrome.header["Guessed flow protos"] == "1"
    assert (chrome.flows[0].confidence, chrome.flows[0].guessed) == ("Match by port", True)
    tls = _ndpi("tls_alert.pcap")  # has a "JA3 Host Stats:" table whose rows also start with "\t<n>\t"
    assert [(f.master, f.app, f.hostname) for f in tls.flows] == [
        ("TLS", "Google", "www.google-analytics.com"),
        (None, "TLS", None),
    ]
    names = [f.hostname for f in _ndpi("netbios.pcap").flows[:3]]
    assert names == ["xstream_hy", "ozi", "*"]


def test_split_attrs() -> None:
    assert split_attrs("[a: 1][UA: x-[K=V][K2=V2]][< 1 sec]") == ["a: 1", "UA: x-[K=V][K2=V2]", "< 1 sec"]
    with pytest.raises(ValueError):
        split_attrs("[a: 1][b")


# ----------------------------------------------------------------------------------------- Zeek


@pytest.mark.parametrize("log_path", paths.zeek_logs(), ids=_ids(paths.zeek_logs()))
def test_zeek_logs_parse(log_path: Path) -> None:
    log = read_zeek_log(log_path)
    is_cut = log_path.name.endswith(".cut")
    assert (log.types is None) == (is_cut or not log.fields)
    if log.fields and not is_cut:
        assert log.path is not None and log_path.name.startswith(log.path.split("_")[0])
        assert log.meta["open"] == log.meta["close"] == MASKED_DATE
    for row in log.rows:
        assert list(row) == log.fields
        for name, value in row.items():
            assert value not in (log.unset_field, log.empty_field)
            zeek_type = log.type_of(name)
            if zeek_type is not None and zeek_type.startswith(("set[", "vector[")):
                assert value is None or isinstance(value, list)
            else:
                assert value is None or isinstance(value, str)
        if "ts" in row:
            assert row["ts"] == MASKED_TS  # canonicalised by btest


ZEEK_CLAIMS = _catalogue(
    r"^    - Zeek `truth/(?P<path>zeek/[^`]+)`: (?P<rows>\d+) rows; fields: ?(?P<fields>.*)$"
)


@pytest.mark.parametrize("log_path", paths.zeek_logs(), ids=_ids(paths.zeek_logs()))
def test_zeek_logs_agree_with_manifest_catalogue(log_path: Path) -> None:
    claim = ZEEK_CLAIMS[log_path.relative_to(paths.TRUTH).as_posix()]
    log = read_zeek_log(log_path)
    assert len(log.rows) == int(claim.group("rows"))
    assert log.fields == claim.group("fields").split()


def _zeek(rel: str) -> list[dict[str, str | list[str] | None]]:
    return read_zeek_log(paths.truth(f"zeek/{rel}")).rows


def test_zeek_dhcp_logs() -> None:
    (discover,) = _zeek(
        "dhcp/dhcp_discover_param_req_and_client_id.pcap/scripts.base.protocols.dhcp.dhcp-discover-msg-types/dhcp.log"
    )
    assert discover["host_name"] == "test0000"
    assert (discover["mac"], discover["requested_addr"], discover["msg_types"]) == (
        "00:0b:82:01:fc:42",
        "208.67.222.222",
        ["DISCOVER"],
    )
    assert discover["client_addr"] is None and discover["uids"] == ["CHhAvVGS1DHFjwGM9"]
    (inform,) = _zeek("dhcp/dhcp_inform.pcap/scripts.base.protocols.dhcp.inform/dhcp.log")
    assert inform["host_name"] is None
    assert (inform["mac"], inform["client_addr"], inform["msg_types"]) == (
        "90:b1:1c:99:49:29",
        "128.2.6.122",
        ["INFORM", "ACK"],
    )
    assert as_float(inform["duration"]) == pytest.approx(0.004327)


def test_zeek_conn_and_dns_logs() -> None:
    (conn,) = _zeek("http/get.pcap/core.tcp.reassembly-known-ports/conn.log")
    assert (conn["id.orig_h"], as_int(conn["id.orig_p"]), conn["id.resp_h"], as_int(conn["id.resp_p"])) == (
        "141.142.228.5",
        59856,
        "192.150.187.43",
        80,
    )
    assert (conn["proto"], conn["service"], conn["conn_state"], conn["history"]) == (
        "tcp",
        "http",
        "SF",
        "ShADadFf",
    )
    counts = [
        as_int(conn[k])
        for k in ("orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "orig_bytes", "resp_bytes")
    ]
    assert counts == [7, 512, 7, 5379, 136, 5007]
    assert conn["tunnel_parents"] is None and as_bool(conn["local_orig"]) is False
    (flipped,) = _zeek("ntp/misordered-ntp.pcap/scripts.base.protocols.ntp.misordered-ntp/conn.log")
    assert (flipped["history"], flipped["service"], as_int(flipped["orig_pkts"])) == ("D^", "ntp", 2)
    wiki = _zeek("wikipedia.pcap/opt.basic/conn.log")
    assert wiki[0]["id.orig_h"] == "141.142.220.202" and wiki[0]["duration"] is None
    assert wiki[1]["id.orig_h"] == "fe80::217:f2ff:fed7:cf65"
    (dns,) = _zeek("dns53.pcap/scripts.base.protocols.dns.flip/dns.log")
    assert dns["query"] == "us.v27.distributed.net" and as_int(dns["id.orig_p"]) == 53
    answers = as_list(dns["answers"])
    assert len(answers) == 8 and answers[0] == "206.109.64.186" and len(as_list(dns["TTLs"])) == 8
    queries = {r["query"] for r in _zeek("wikipedia.pcap/opt.basic/dns.log")}
    assert {"upload.wikimedia.org", "meta.wikimedia.org", "gemini._sftp-ssh._tcp.local"} <= queries


def test_zeek_other_logs() -> None:
    (http,) = _zeek("http/get.pcap/core.tcp.reassembly-known-ports/http.log")
    assert (http["host"], http["uri"], http["user_agent"], as_int(http["status_code"])) == (
        "bro.org",
        "/download/CHANGES.bro-aux.txt",
        "Wget/1.14 (darwin12.2.0)",
        200,
    )
    assert http["tags"] == []  # "(empty)" set
    (syslog,) = _zeek("syslog-single-udp.pcap/scripts.base.protocols.syslog.trace/syslog.log")
    assert syslog["message"] == "Apr  5 12:56:51 robin: Hello, syslog!\\x00"
    assert unescape(as_str(syslog["message"]) or "") == "Apr  5 12:56:51 robin: Hello, syslog!\x00"
    (ssl,) = _zeek("tls/ecdhe.pcap/scripts.base.protocols.ssl.ecdhe/ssl.log")
    assert (ssl["server_name"], ssl["version"], ssl["curve"]) == (None, "TLSv12", "secp256r1")
    assert len(as_list(ssl["cert_chain_fps"])) == 3
    publish = _zeek("mqtt.pcap/scripts.base.protocols.mqtt.mqtt/mqtt_publish.log")
    assert [(p["topic"], p["payload"]) for p in publish][1] == ("SampleTopic", "Hello MQTT")
    assert len(_zeek("sip/wireshark.pcap/scripts.base.protocols.sip.wireshark/sip.log")) == 36


def test_zeek_cut_and_empty_baselines() -> None:
    (row,) = _zeek("udp-broadcast.pcap/core.udp-broadcast-no-flip/conn.log.cut")
    assert (row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"], row["history"]) == (
        "192.168.1.1",
        "40190",
        "255.255.255.255",
        "7437",
        "D",
    )
    (vlan,) = _zeek("http-vlan-0.pcap/scripts.base.protocols.vlan.vlan-0/conn.log.cut")
    assert vlan == {"id.ctx.vlan": "0", "id.ctx.inner_vlan": None, "vlan": "0", "inner_vlan": None}
    empty = read_zeek_log(
        paths.truth(
            "zeek/dns/mdns.pcap/scripts.policy.protocols.dns.detect-external-names-mdns-broadcast/notice.log"
        )
    )
    assert (empty.fields, empty.rows, empty.path) == ([], [], None)  # banner only: no notice expected


@pytest.mark.parametrize(
    ("capture", "out"), paths.zeek_community_id_pairs(), ids=_pair_ids(paths.zeek_community_id_pairs())
)
def test_zeek_community_id_outs(capture: Path, out: Path) -> None:
    cases = read_community_id_out(out)
    assert cases and capture.is_file()
    for c in cases:
        assert c.transport == {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}[c.proto]
        assert _cid(c.orig_h, c.resp_h, c.proto, c.orig_p, c.resp_p) == c.community_id


def test_zeek_community_id_known_values() -> None:
    (tcp,) = read_community_id_out(
        paths.truth("zeek/communityid/tcp.pcap/bifs.community_id.run-pcaps/tcp.pcap.out")
    )
    assert (tcp.orig_h, tcp.orig_p, tcp.resp_h, tcp.resp_p, tcp.proto, tcp.community_id) == (
        "128.232.110.120",
        34855,
        "66.35.250.204",
        80,
        6,
        "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
    )
    (udp,) = read_community_id_out(
        paths.truth("zeek/communityid/udp.pcap/bifs.community_id.run-pcaps/udp.pcap.out")
    )
    assert (udp.orig_h, udp.orig_p, udp.resp_h, udp.resp_p, udp.proto) == (
        "192.168.1.52",
        54585,
        "8.8.8.8",
        53,
        17,
    )
    assert udp.community_id == "1:d/FP5EW3wiY1vCndhwleRRKHowQ="


def test_zeek_community_id_line_formats() -> None:
    # Inline lines in the printed format (no ICMP baseline is in the copy): ICMP "ports" are type/code,
    # older Zeek prints no ctx field. The ICMP values are the Community ID spec's echo-request example.
    icmp = parse_community_id_line(
        "[orig_h=192.168.0.89, orig_p=8/icmp, resp_h=192.168.0.1, resp_p=0/icmp, proto=1, ctx=[]], "
        "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="
    )
    assert icmp is not None and (icmp.orig_p, icmp.resp_p, icmp.transport, icmp.proto) == (8, 0, "icmp", 1)
    assert (
        _cid(icmp.orig_h, icmp.resp_h, 1, icmp_type=icmp.orig_p, icmp_code=icmp.resp_p) == icmp.community_id
    )
    old = parse_community_id_line(
        "[orig_h=fe80::1, orig_p=5353/udp, resp_h=ff02::fb, resp_p=5353/udp, proto=17], 1:abc="
    )
    assert old is not None and (old.orig_h, old.resp_h, old.community_id) == ("fe80::1", "ff02::fb", "1:abc=")
    assert parse_community_id_line("### BTest baseline data") is None


# --------------------------------------------------------------------------------------- Arkime

ARKIME_CLAIMS = _catalogue(
    r"^    - Arkime `truth/(?P<path>arkime/[^`]+)`: \*\*(?P<n>\d+) sessions\*\*; "
    r"packets (?P<pkts>\d+), frame bytes (?P<bytes>\d+)"
)


@pytest.mark.parametrize(("capture", "test_file"), paths.arkime_pairs(), ids=_pair_ids(paths.arkime_pairs()))
def test_arkime_sessions(capture: Path, test_file: Path) -> None:
    sessions = arkime.read_arkime_test(test_file)
    claim = ARKIME_CLAIMS[test_file.relative_to(paths.TRUTH).as_posix()]
    assert capture.is_file()
    assert len(sessions) == int(claim.group("n"))
    assert sum(arkime.network_packets(s) for s in sessions) == int(claim.group("pkts"))
    assert sum(arkime.network_bytes(s) for s in sessions) == int(claim.group("bytes"))
    for s in sessions:
        ipaddress.ip_address(arkime.source_ip(s))
        ipaddress.ip_address(arkime.destination_ip(s))
        assert arkime.network_packets(s) == arkime.source_packets(s) + arkime.destination_packets(s)
        assert arkime.network_bytes(s) == arkime.source_bytes(s) + arkime.destination_bytes(s)
        assert arkime.protocols(s) and arkime.vlans(s) == []
        proto = arkime.ip_protocol(s)
        cid = arkime.community_id(s)
        if proto in (6, 17) and "dhcp" not in arkime.protocols(s):
            expected = _cid(
                arkime.source_ip(s),
                arkime.destination_ip(s),
                proto,
                arkime.source_port(s),
                arkime.destination_port(s),
            )
            assert cid == expected
        if "dns" in arkime.protocols(s):
            assert arkime.dns_query_hosts(s)


def test_arkime_known_sessions() -> None:
    tcp = arkime.read_arkime_test(paths.truth("arkime/dns-tcp.test"))
    assert [(arkime.source_port(s), arkime.community_id(s), arkime.dns_query_hosts(s)) for s in tcp] == [
        (49342, "1:aiyyBmnGUlby3uK/mWpMfvJm2U4=", ["google.com"]),
        (49343, "1:Ni+vClyYvGtwxC4Wu5dkGjaQ8ts=", ["aol.com"]),
    ]
    (tls,) = arkime.read_arkime_test(paths.truth("arkime/tls13.test"))
    assert (arkime.source_ip(tls), arkime.destination_port(tls), arkime.community_id(tls)) == (
        "2001:16d8:ffce:10:aca8:353c:291d:a9b3",
        443,
        "1:+howsemozCcnIdXPNBANfoSfiAw=",
    )
    (igmp,) = arkime.read_arkime_test(paths.truth("arkime/igmp.test"))
    assert (arkime.ip_protocol(igmp), arkime.source_port(igmp), arkime.community_id(igmp)) == (2, 0, None)
    assert (arkime.network_packets(igmp), arkime.protocols(igmp)) == (29, ["igmp"])
    (dhcp,) = arkime.read_arkime_test(paths.truth("arkime/wireshark-dhcp.test"))
    assert (arkime.source_ip(dhcp), arkime.source_port(dhcp), arkime.destination_port(dhcp)) == (
        "0.0.0.0",
        68,
        67,
    )
    assert (arkime.community_id(dhcp), dhcp["dhcp"]["mac"], dhcp["dhcp"]["id"]) == (
        None,
        ["00:0b:82:01:fc:42"],
        ["3d1d", "3d1e"],
    )
    repo = arkime.read_arkime_test(paths.truth("arkime/dns-wiresharkrepo.test"))
    assert len(arkime.dns_query_hosts(repo[0])) == 12 and "www.netbsd.org" in arkime.dns_query_hosts(repo[0])
    # nbns.test: the same 5-tuple appears in two sessions (split by Arkime's UDP timeout)
    nbns = arkime.read_arkime_test(paths.truth("arkime/nbns.test"))
    cids = Counter(arkime.community_id(s) for s in nbns)
    assert cids["1:t4zL7qEN8sILhXXFxBieTz/X9hU="] == 2
    (icmp,) = [s for s in nbns if arkime.ip_protocol(s) == 1]
    assert arkime.community_id(icmp) == _cid(
        arkime.source_ip(icmp), arkime.destination_ip(icmp), 1, icmp_type=icmp["icmp"]["type"][0], icmp_code=0
    )


def test_arkime_accessors_on_other_layouts() -> None:
    tagged = {"network": {"vlan": {"id": [10, 20]}}, "dns": {"queryHost": ["a.example", "b.example"]}}
    assert arkime.vlans(tagged) == [10, 20] and arkime.dns_query_hosts(tagged) == ["a.example", "b.example"]
    assert arkime.vlans({"vlan": 7}) == [7] and arkime.dns_query_hosts({}) == []


# ------------------------------------------------------------------------------------- nfstream

NFSTREAM_CLAIMS = _catalogue(
    r"^    - nfstream `truth/(?P<path>nfstream/[^`]+)`: \*\*(?P<n>\d+) flows\*\*, "
    r"packets (?P<pkts>\d+), bytes (?P<bytes>\d+)"
)


@pytest.mark.parametrize(
    ("capture", "csv_path"), paths.nfstream_pairs(), ids=_pair_ids(paths.nfstream_pairs())
)
def test_nfstream_csvs(capture: Path, csv_path: Path) -> None:
    flows = read_nfstream_csv(csv_path)
    claim = NFSTREAM_CLAIMS[csv_path.relative_to(paths.TRUTH).as_posix()]
    assert capture.is_file()
    assert [f.id for f in flows] == list(range(len(flows)))
    assert (
        len(flows),
        sum(f.bidirectional_packets for f in flows),
        sum(f.bidirectional_bytes for f in flows),
    ) == (
        int(claim.group("n")),
        int(claim.group("pkts")),
        int(claim.group("bytes")),
    )
    assert all(f.application_name and 0 <= f.application_confidence <= 7 for f in flows)


def test_nfstream_known_rows() -> None:
    (stun,) = read_nfstream_csv(paths.truth("nfstream/stun_facebook.pcapng.csv"))
    assert (stun.bidirectional_packets, stun.bidirectional_bytes, stun.master, stun.app) == (
        75,
        10554,
        "STUN",
        "FacebookVoip",
    )
    assert (stun.application_category_name, stun.application_is_guessed, stun.application_confidence) == (
        "VoIP",
        False,
        6,
    )
    dhcp = read_nfstream_csv(paths.truth("nfstream/dhcp_big_endian.pcapng.csv"))
    assert [(f.bidirectional_packets, f.bidirectional_bytes, f.master, f.app) for f in dhcp] == [
        (2, 628, None, "DHCP"),
        (2, 684, None, "DHCP"),
    ]
    # nfstream's coap_mqtt.pcap is a longer capture than nDPI's, with the same 16 flows by application
    nf = Counter(f.application_name for f in read_nfstream_csv(paths.truth("nfstream/coap_mqtt.pcap.csv")))
    nd = {app: t.flows for app, t in _ndpi("coap_mqtt.pcap").summary.items()}
    assert nf == nd == {"COAP": 8, "MQTT": 4, "Dropbox": 4}


# ------------------------------------------------------------------------------ suricata-verify


SURICATA_CAPTURES = paths.suricata_captures()
# The catalogue's summary of each test.yaml (its source had the files) and the copy note of the captures whose
# truth files were not in the snapshot the copy was made from.
_SURICATA_CLAIM = (
    r"^    - suricata-verify `(?P<path>truth/suricata-verify/[^`]+/test\.yaml)`: (?P<n>\d+) checks;"
)
_NOT_COPIED = "- **camwatch copy note**: not present in the source snapshot, so not copied here: "


def _not_copied() -> set[str]:
    lines = MANIFEST.read_text(encoding="utf-8").splitlines()
    notes = [line.removeprefix(_NOT_COPIED) for line in lines if line.startswith(_NOT_COPIED)]
    return {name for note in notes for name in re.findall(r"`([^`]+)`", note)}


def test_suricata_captures_are_all_there() -> None:
    """Seven suricata-verify tests were copied (captures only); a lost capture fails here, not silently."""
    assert len(SURICATA_CAPTURES) == 7
    assert {_rel(paths.suricata_test_of(c)) for c in SURICATA_CAPTURES} == set(_catalogue(_SURICATA_CLAIM))


@pytest.mark.parametrize("capture", SURICATA_CAPTURES, ids=_ids(SURICATA_CAPTURES))
def test_suricata_test_yamls(capture: Path) -> None:
    """Each capture's test.yaml is either here, parsed, with the checks the catalogue counted, or recorded in
    the MANIFEST as absent from the source snapshot (all seven today: suricata-verify's test.yaml files were
    not in it, and no other copy of the corpus has them)."""
    test_yaml = paths.suricata_test_of(capture)
    claim = _catalogue(_SURICATA_CLAIM)[_rel(test_yaml)]
    if not test_yaml.is_file():
        assert _rel(test_yaml) in _not_copied()
        return
    test = read_suricata_test(test_yaml)
    assert len(test.checks) + len(test.other_checks) == int(claim.group("n"))
    checks = read_suricata_checks(test_yaml)
    assert checks and all(count >= 0 and match for count, match in checks)


def test_suricata_reader(tmp_path: Path) -> None:
    # The suricata-verify truth files were not in the source snapshot (see the corpus MANIFEST); this is a
    # hand-written descriptor in suricata-verify's documented test.yaml format.
    descriptor = tmp_path / "test.yaml"
    descriptor.write_text(
        "requires:\n"
        "  min-version: 8\n"
        "args:\n"
        "  - -k none\n"
        "checks:\n"
        "  - filter:\n"
        "      count: 1\n"
        "      match:\n"
        "        event_type: dns\n"
        "        src_ip: 10.16.1.11\n"
        "        dns.type: request\n"
        "  - filter:\n"
        "      requires:\n"
        "        min-version: 9\n"
        "      count: 0\n"
        "      match:\n"
        "        flow.pkts_toserver: 1\n"
        "  - shell:\n"
        "      args: grep x fast.log\n",
        encoding="utf-8",
    )
    test = read_suricata_test(descriptor)
    assert (test.requires, test.args) == ({"min-version": 8}, ["-k none"])
    assert read_suricata_checks(descriptor) == [
        (1, {"event_type": "dns", "src_ip": "10.16.1.11", "dns.type": "request"}),
        (0, {"flow.pkts_toserver": 1}),
    ]
    assert test.checks[1].requires == {"min-version": 9} and test.other_checks == [
        {"shell": {"args": "grep x fast.log"}}
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - filter:\n      match: {}\n", encoding="utf-8")
    with pytest.raises(ValueError):
        read_suricata_test(bad)
