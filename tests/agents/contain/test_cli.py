"""`camwatch contain`, run as an operator would (a process in the gateway's namespace): render, apply,
status, quarantine, release, remove, dns; exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dns.zone

from agents.contain.audit import last_records
from agents.contain.files import ContainmentFiles
from tests.agents.contain.conftest import needs_nft
from tests.agents.contain.gateway_site import CAM1, CAM2, CLOUD, POLICY, VMS, Site

pytestmark = needs_nft

ROOT = Path(__file__).parents[3]


def camwatch(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", site.gw, sys.executable, "-m", "agents.cli", "contain", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


def files(tmp_path: Path, mode: str = "enforce") -> tuple[Path, Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: cwtest\ngateway: gw\ncapture: {interfaces: [eth1]}\npolicy_file: policy.yaml\n"
        f"state_dir: {tmp_path / 'state'}\nrun_as_user: null\n"
        f"containment: {{mode: {mode}, quarantine: {{max_devices: 2}}}}\n"
    )
    return policy, config


def clean(site: Site) -> None:
    site.nft().load("table inet camwatch {}\ndelete table inet camwatch\n")


def test_render_prints_a_script_nft_loads_again_and_again(site: Site, tmp_path: Path) -> None:
    clean(site)
    policy, _ = files(tmp_path)
    inventory = tmp_path / "devices.json"
    inventory.write_text(
        json.dumps([{"mac": "44-19-b6-00-00-09", "vendor": "hikvision", "ips": ["10.50.0.9"]}])
    )
    done = camwatch(site, "render", "--policy", str(policy), "--inventory", str(inventory))
    assert done.returncode == 0, done.stderr
    for _ in range(2):
        site.nft().load(done.stdout)
    assert "10.50.0.9" in site.nft()._run(["list", "set", "inet", "camwatch", "watched_v4"])
    assert not site.tcp("cam", CAM1, CLOUD, 8666) and site.tcp("cam", CAM1, VMS, 9000)
    plan = json.loads(camwatch(site, "render", "--policy", str(policy), "--json").stdout)
    assert plan["watched"] == ["10.91.0.0/24", "10.92.0.0/24"] and len(plan["digest"]) == 16


def test_render_errors_are_one_line_and_exit_2(site: Site, tmp_path: Path) -> None:
    policy, _ = files(tmp_path)
    done = camwatch(site, "render", "--policy", str(policy), "--never-block", "10.30.0.5")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(
        "camwatch: error: never_block 10.30.0.5/32: watched devices could not reach it"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: x\nmonitored: {networks: [10.0.0.0/33]}\n")
    done = camwatch(site, "render", "--policy", str(bad))
    assert done.returncode == 2 and "invalid policy" in done.stderr and "monitored.networks[0]" in done.stderr
    done = camwatch(site, "render")
    assert (done.returncode, done.stderr) == (
        2,
        "camwatch: error: give the site policy: --policy FILE (or --config FILE)\n",
    )


def test_apply_status_quarantine_release_remove(site: Site, tmp_path: Path) -> None:
    clean(site)
    _, config = files(tmp_path)
    done = camwatch(site, "apply", "--config", str(config))
    assert done.returncode == 0 and done.stdout.startswith("apply applied: plan "), done.stderr
    status = camwatch(site, "status", "--config", str(config))
    assert status.returncode == 0, status.stdout
    assert "ruleset: loaded, plan" in status.stdout and "(matches the configuration)" in status.stdout
    # The configuration's warnings (run_as_user: null keeps root) are the agent's, not each contain command's.
    assert "run_as_user" not in done.stderr + status.stderr
    done = camwatch(
        site, "quarantine", CAM2, "--reason", "investigating", "--for", "10m", "--config", str(config)
    )
    assert done.returncode == 0 and done.stdout.startswith(f"quarantine ip:{CAM2} applied until "), (
        done.stderr
    )
    assert done.stdout.endswith(": investigating\n")
    assert not site.tcp("cam", CAM2, VMS, 9000)
    report = json.loads(camwatch(site, "status", "--config", str(config), "--json").stdout)
    (entry,) = report["quarantined"]
    assert (
        entry["addresses"] == [CAM2]
        and 590 <= entry["remaining"] <= 600
        and entry["actor"].startswith("cli:")
    )
    assert entry["kernel_expires"] is not None and report["problems"] == []
    assert camwatch(site, "release", CAM2, "--config", str(config)).returncode == 0
    assert site.tcp("cam", CAM2, VMS, 9000)
    again = camwatch(site, "release", CAM2, "--reason", "done", "--config", str(config))
    assert again.returncode == 1
    assert again.stderr.endswith(
        f"camwatch: release {CAM2} refused: it is not quarantined (reason given: done)\n"
    )  # the cause where "refused:" says, the operator's reason apart
    never = camwatch(site, "quarantine", "10.92.0.2", "--reason", "x", "--config", str(config))
    assert never.returncode == 1 and "quarantine ip:10.92.0.2 refused: 10.92.0.2" in never.stderr
    assert "is on the never-block list" in never.stderr and never.stderr.endswith("(reason given: x)\n")
    assert camwatch(site, "remove", "--config", str(config), "--reason", "maintenance").returncode == 0
    assert site.nft().table() is None and site.tcp("cam", CAM1, CLOUD, 8666)
    status = camwatch(site, "status", "--config", str(config))
    assert (
        status.returncode == 1
        and "problem: mode is enforce but camwatch's table is not loaded" in status.stdout
    )
    assert "removed with `camwatch contain remove`" in status.stdout
    assert camwatch(site, "apply", "--config", str(config)).returncode == 0
    actions = [(r.action, r.outcome) for r in last_records(ContainmentFiles.at(tmp_path / "state").audit, 10)]
    assert actions == [
        ("apply", "applied"),
        ("quarantine", "applied"),
        ("release", "applied"),
        ("release", "refused"),
        ("quarantine", "refused"),
        ("remove", "applied"),
        ("apply", "applied"),
    ]


def test_a_dry_run_apply_says_dry_run_once(site: Site, tmp_path: Path) -> None:
    clean(site)
    _, config = files(tmp_path, mode="dry-run")
    done = camwatch(site, "apply", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("apply dry-run: plan ") and done.stdout.count("dry") == 1, done.stdout
    assert site.nft().table() is None  # checked, not loaded


def test_commands_that_need_containment_on_say_so(site: Site, tmp_path: Path) -> None:
    _, config = files(tmp_path, mode="off")
    done = camwatch(site, "apply", "--config", str(config))
    assert done.returncode == 2 and "containment.mode is off" in done.stderr
    missing = camwatch(site, "status", "--config", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "no such configuration file" in missing.stderr


def test_dns_sinkholes(site: Site, tmp_path: Path) -> None:
    _, config = files(tmp_path)
    rpz = camwatch(site, "dns", "--format", "rpz")
    assert rpz.returncode == 0
    zone = dns.zone.from_text(rpz.stdout, origin="camwatch.rpz.", relativize=False)
    names = {str(name) for name in zone.nodes}
    assert {"litedev.ezvizlife.com.camwatch.rpz.", "*.hik-connect.com.camwatch.rpz."} <= names
    unbound = camwatch(site, "dns", "--format", "unbound", "--config", str(config), "--zone-file", "/z.rpz")
    assert unbound.returncode == 0, unbound.stderr
    assert '    access-control-tag: 10.91.0.0/24 "camwatch"' in unbound.stdout
    assert "    zonefile: /z.rpz" in unbound.stdout
    # The recorder is inside a watched network and never-block: its own access-control has no tag.
    assert "    access-control: 10.92.0.2/32 allow  # never-block: not sinkholed" in unbound.stdout
    dnsmasq = camwatch(site, "dns", "--format", "dnsmasq")
    assert "address=/litedev.ezvizlife.com/" in dnsmasq.stdout.splitlines()
