"""``camwatch learn`` end to end, and the issue's measure: learn a site from one capture, then replay a
later capture of the same site (names resolving to other addresses, the phone-home again, new
behaviours) with the learned policy: the normal life is quiet, the phone-home and every new behaviour
alert."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents import cli
from lab import sitelife
from lab.sitelife import LifeShape, site_life
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.enginerun import run_engine

NS = 1_000_000_000
DAY = 86_400 * NS


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The learning capture (2 h, with a scan and the vendor phone-home) and a later one (the next day)."""
    root = tmp_path_factory.mktemp("site")
    (root / "base.yaml").write_text(sitelife.LIFE_POLICY, encoding="utf-8")
    (root / "learn.pcap").write_bytes(pcap_bytes(list(site_life(LifeShape(scan=True)))))
    later = LifeShape(epoch=1, new_behaviours=True, start_ns=sitelife.T0 + DAY)
    (root / "later.pcap").write_bytes(pcap_bytes(list(site_life(later))))
    return root


@pytest.fixture(scope="module")
def learned(site: Path) -> tuple[Path, str]:
    out = site / "learned.yaml"
    args = ["learn", str(site / "learn.pcap"), "--policy", str(site / "base.yaml"), "--out", str(out)]
    args += ["--alerts", str(site / "findings.jsonl"), "--mud", str(site / "mud")]
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli.main(args) == 0
    return out, buffer.getvalue()


def alert_set(alerts: list[dict[str, object]]) -> set[tuple[str, str, str | None, int | None]]:
    out = set()
    for a in alerts:
        rule, src = a["rule"], a["source"]
        dst = a.get("destination", {})
        assert isinstance(rule, dict) and isinstance(src, dict) and isinstance(dst, dict)
        out.add((str(rule["id"]), str(src["ip"]), dst.get("ip"), dst.get("port")))
    return out


def test_after_learning_normal_life_is_quiet_and_the_phone_home_and_new_behaviours_alert(
    site: Path, learned: tuple[Path, str]
) -> None:
    policy = SitePolicy.from_yaml(learned[0].read_bytes())
    _, _, alerts = run_engine(site / "later.pcap", policy=policy)
    cams = {(c.vendor, c.n): c.ip for c in sitelife.cameras(LifeShape())}
    hik0, hik1, hik2, hik3 = (cams[("hikvision", i)] for i in range(4))
    dahua0, dahua1 = cams[("dahua", 0)], cams[("dahua", 1)]
    new_port = {
        (
            "egress.unexpected_destination",
            hik3,
            sitelife.ntp_address(sitelife.cameras(LifeShape())[3], k, 1),
            443,
        )
        for k in range(4)
    }
    assert alert_set(alerts) == {
        # The phone-home, again.
        ("dns.vendor_cloud", hik0, sitelife.GW_IP, 53),
        ("egress.unexpected_destination", hik0, sitelife.EZVIZ_IP, 8666),
        ("dns.vendor_cloud", dahua0, sitelife.GW_IP, 53),
        ("egress.unexpected_destination", dahua0, sitelife.EASY4IP_IP, 8800),
        ("p2p.nat_traversal", dahua0, sitelife.EASY4IP_IP, 8800),
        # Every new behaviour: a new name, a new address, a known name on a new port, UPnP.
        ("egress.unexpected_destination", hik2, sitelife.NEW_NAME_IP, 443),
        ("egress.unexpected_destination", dahua1, sitelife.NEW_IP, 8443),
        ("upnp.port_mapping", hik1, "239.255.255.250", 1900),
        ("upnp.port_mapping", hik1, sitelife.GW_IP, 49152),
        *new_port,
        # The camera that scanned while the site learned (device.scanning flags it as a whole: nothing of it
        # is learned, it is not a known device) is announced when it shows up again.
        ("device.new", hik1, None, None),
    }
    # The same capture with the base policy alone: the normal life would alert (so the quiet is learned).
    _, _, base_alerts = run_engine(site / "later.pcap", policy=SitePolicy.from_yaml(sitelife.LIFE_POLICY))
    noisy = {a for a in alert_set(base_alerts) if a[0] in ("egress.unexpected_destination", "device.new")}
    assert len(noisy) > 40


def test_the_learned_policy_is_complete_commented_and_passes_check_config(
    site: Path, learned: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = learned
    assert cli.main(["check-config", str(path)]) == 0
    assert "OK: site lifesite" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    policy = SitePolicy.from_yaml(text)
    base = SitePolicy.from_yaml(sitelife.LIFE_POLICY)
    assert (policy.site, policy.monitored_networks, policy.resolvers, policy.viewers) == (
        base.site,
        base.monitored_networks,
        base.resolvers,
        base.viewers,
    )
    learned_to = {
        (r.name, *r.names, *(str(n) for n in r.networks), str(sorted(r.ports or ()))) for r in policy.allow
    }
    assert learned_to == {
        ("learned: Dahua IPC-HFW2431S-S-S2, 123/udp", "*.pool.ntp.example", "[(123, 'udp')]"),
        ("learned: Dahua IPC-HFW2431S-S-S2, 443/tcp", sitelife.VMS_NAME, "[(443, 'tcp')]"),
        ("learned: Hikvision DS-2CD2143G2-I, 123/udp", sitelife.NTP_NAME, "[(123, 'udp')]"),
        ("learned: Hikvision DS-2CD2143G2-I, 443/tcp", sitelife.VMS_NAME, "[(443, 'tcp')]"),
        ("learned: Hikvision DS-2CD2143G2-I, 514/udp", "198.51.100.20/32", "[(514, 'udp')]"),
    }
    # Never learned: the vendor clouds, the scan.
    for absent in ("ezviz", "easy4ip", sitelife.EZVIZ_IP, sitelife.EASY4IP_IP, "198.18."):
        assert absent not in text
    # Every learned rule carries its comment: devices, flows, first and last seen.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('  - name: "learned:'):
            assert (
                "device(s)" in lines[i - 2]
                and "flows, first seen" in lines[i - 1]
                and "last seen" in lines[i - 1]
            )
    # Every camera and the recorder are known devices now, but the camera that scanned: device.scanning
    # flagged it as a whole, so nothing of it is learned.
    cams = sitelife.cameras(LifeShape())
    scanner = next(c for c in cams if c.vendor == "hikvision" and c.n == 1)
    macs = {int(c.mac.replace(":", ""), 16) for c in cams} | {int(sitelife.REC_MAC.replace(":", ""), 16)}
    assert macs - policy.known_devices == {int(scanner.mac.replace(":", ""), 16)}


def test_findings_are_printed_and_their_alerts_written(site: Path, learned: tuple[Path, str]) -> None:
    _, report = learned
    assert "[scan] 44-19-b6-01-00-01 opened flows to 32+ addresses on tcp/23" in report
    assert "[flagged] litedev.ezvizlife.com (tcp/8666): flagged by dns.vendor_cloud" in report
    assert "[flagged] www.easy4ipcloud.com (udp/8800)" in report
    records = [
        json.loads(line) for line in (site / "findings.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    rules = {r["rule"]["id"] for r in records}
    assert rules == {"dns.vendor_cloud", "p2p.nat_traversal", "device.scanning"}
    assert "44-19-b6-01-00-01" in report and "flagged by device.scanning" in report


def test_a_bad_base_policy_is_named_and_nothing_is_written(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: s\nmonitored:\n  networks: [10.20.0.5/24]\nalow: []\n", encoding="utf-8")
    out = tmp_path / "learned.yaml"
    rc = cli.main(["learn", str(site / "learn.pcap"), "--policy", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert (
        "monitored.networks[0]" in err
        and "did you mean 10.20.0.0/24" in err
        and "did you mean 'allow'" in err
    )


def test_too_many_destinations_are_refused_and_nothing_is_written(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "learned.yaml"
    args = ["learn", str(site / "learn.pcap"), "--policy", str(site / "base.yaml"), "--out", str(out)]
    rc = cli.main([*args, "--max-rules", "3", "--mud", str(tmp_path / "mud")])
    err = capsys.readouterr().err
    assert rc == 1 and not out.exists() and not (tmp_path / "mud").exists()
    assert "5 destinations would be learned, more than --max-rules 3" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--from-state", "/nonexistent"], "one source"),
        (["--min-span", "soon"], "--min-span 'soon'"),
        (["--min-flows", "0"], "at least 1"),
        (["--out", "/nonexistent/dir/x.yaml"], "does not exist"),
        (["--mud", "m", "--mud-url", "http://mud.example.com/"], "https://"),
    ],
)
def test_bad_arguments_are_one_line(
    site: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "learn",
        str(site / "learn.pcap"),
        "--policy",
        str(site / "base.yaml"),
        "--out",
        str(tmp_path / "o.yaml"),
    ]
    if "--out" in extra:
        args = args[:-2]
    rc = cli.main([*args, *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_a_missing_state_directory_is_an_input_error_with_or_without_relearn(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same mistake, the same exit status (1: an input could not be read) and the same line."""
    missing = str(tmp_path / "no-state")
    learn = ["learn", "--from-state", missing, "--policy", str(site / "base.yaml"), "--out",
             str(tmp_path / "o.yaml")]  # fmt: skip
    relearn = ["learn", "--relearn", "44:19:b6:00:00:01", "--from-state", missing]
    errors = []
    for args in (learn, relearn):
        assert cli.main(args) == 1, args
        errors.append(capsys.readouterr().err)
    assert (
        errors[0] == errors[1] == f"camwatch: error: {missing}: no such state directory: give the agent's "
        "state_dir (e.g. /var/lib/camwatch)\n"
    )
    # A MAC that is not one stays a bad argument.
    (tmp_path / "state").mkdir()
    assert cli.main(["learn", "--relearn", "camera-1", "--from-state", str(tmp_path / "state")]) == 2


def test_a_min_span_of_0_learns_what_was_seen_at_once(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/learning.md: --min-span takes 0 (a bare number is seconds)."""
    args = ["learn", str(site / "learn.pcap"), "--policy", str(site / "base.yaml")]
    assert cli.main([*args, "--out", str(tmp_path / "a.yaml"), "--min-span", "0"]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "b.yaml"), "--min-span", "0s"]) == 0
    body = [(tmp_path / n).read_text().split("\n", 3)[3] for n in ("a.yaml", "b.yaml")]  # past the header
    assert body[0] == body[1]
    assert "over 0 s" in (tmp_path / "a.yaml").read_text()


def test_a_damaged_capture_is_an_input_error(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.pcap"
    broken.write_bytes((site / "learn.pcap").read_bytes()[:5000] + b"\xff" * 64)
    out = tmp_path / "o.yaml"
    rc = cli.main(["learn", str(broken), "--policy", str(site / "base.yaml"), "--out", str(out)])
    assert rc == 1 and not out.exists()
    assert "nothing written" in capsys.readouterr().err
