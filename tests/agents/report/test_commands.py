"""``camwatch report`` and ``camwatch inventory export`` on the command line: from files, from an agent's
configuration, and what bad input costs (exit codes, one line naming the file and the fix)."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents import cli
from agents.contain.files import ContainmentFiles
from agents.contain.quarantine import QuarantineBook, QuarantineEntry
from lab import scenario
from monitor.pcapwrite import pcap_bytes

ROOT = Path(__file__).parents[3]
POLICY = ROOT / "examples" / "site-policy.yaml"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo site replayed: inventory.json, alerts.jsonl, flows.jsonl."""
    d = tmp_path_factory.mktemp("replayed")
    pcap = d / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=2, seconds=20.0))))
    args = ["replay", str(pcap), "--policy", str(POLICY), "--alerts", str(d / "alerts.jsonl"),
            "--flows", str(d / "flows.jsonl"), "--inventory", str(d / "inventory.json")]  # fmt: skip
    assert cli.main(args) == 0
    return d


def ledger(out: Path) -> dict[str, dict[str, str]]:
    with (out / "ledger.csv").open(newline="") as fh:
        return {r["mac"]: r for r in csv.DictReader(fh)}


def test_a_register_with_bad_rows_names_each_and_keeps_the_good_ones(
    replayed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "register.csv").write_text(
        "mac,name,location,status,replace_by,colour\n"
        f"{scenario.hik_mac(1)},Gate,North gate,scheduled,2026-03-31,red\n"
        "44:19:b6:00:01,Bad,,active,,\n"
        f"{scenario.hik_mac(2)},Yard,Yard east,gone,31/12/2026,\n"
    )
    out = tmp_path / "out"
    code = cli.main(["report", "--inventory", str(replayed / "inventory.json"),
                     "--alerts", str(replayed / "alerts.jsonl"), "--register", str(tmp_path / "register.csv"),
                     "--out", str(out), "--as-of", "2026-04-01"])  # fmt: skip
    assert code == 0
    err = caplog.text  # logged at WARNING: on stderr outside pytest
    assert "register.csv: line 1: unknown column 'colour'" in err
    assert "register.csv: line 3: mac: '44:19:b6:00:01' is not a MAC address: the row is skipped" in err
    assert "register.csv: line 4: status: 'gone' is not one of active, scheduled, removed" in err
    assert (
        "register.csv: line 4: replace_by: '31/12/2026' is not a date (left empty); write it as 2026-12-31"
        in err
    )
    rows = ledger(out)
    assert (
        rows["44-19-b6-00-01-01"]["status"] == "scheduled" and rows["44-19-b6-00-01-01"]["overdue"] == "yes"
    )
    yard = rows["44-19-b6-00-01-02"]
    assert (yard["status"], yard["location"], yard["replace_by"]) == ("active", "Yard east", "")


def test_the_report_from_an_agents_configuration(replayed: Path, tmp_path: Path) -> None:
    """--config: the agent's inventory_file, alerts_file, flows_file (rotated ones too) and register."""
    (tmp_path / "flows.20260101T000000Z.jsonl").write_text((replayed / "flows.jsonl").read_text())
    (tmp_path / "flows.jsonl").write_text("")
    (tmp_path / "alerts.jsonl").write_text((replayed / "alerts.jsonl").read_text())
    (tmp_path / "devices.json").write_text((replayed / "inventory.json").read_text())
    (tmp_path / "register.csv").write_text(f"mac,status\n{scenario.hik_mac(1)},removed\n")
    (tmp_path / "agent.yaml").write_text(
        "site: depot-7\ncapture: {interfaces: [eth1]}\nstate_dir: state\nrun_as_user: null\n"
        "alerts_file: alerts.jsonl\nflows_file: flows.jsonl\ninventory_file: devices.json\n"
        "asset_register: register.csv\n"
    )
    out = tmp_path / "out"
    assert cli.main(["report", "--config", str(tmp_path / "agent.yaml"), "--out", str(out)]) == 0
    rows = ledger(out)
    gate = rows["44-19-b6-00-01-01"]
    assert gate["status"] == "removed" and int(gate["external_destinations"]) > 0
    assert "Removal programme: depot-7" in (out / "index.html").read_text()
    assert "flows.20260101T000000Z.jsonl" in (out / "index.html").read_text()  # the rotated file was read
    # Without inventory_file the agent's saved state is read.
    (tmp_path / "agent.yaml").write_text(
        "site: depot-7\ncapture: {interfaces: [eth1]}\nstate_dir: state\nrun_as_user: null\n"
        "alerts_file: alerts.jsonl\n"
    )
    assert (
        cli.main(["report", "--config", str(tmp_path / "agent.yaml"), "--out", str(out)]) == 1
    )  # no state yet


def test_the_ledger_shows_containment_from_the_agents_state(replayed: Path, tmp_path: Path) -> None:
    """With a containment section: quarantined devices with their end and why, the others in the mode."""
    (tmp_path / "alerts.jsonl").write_text((replayed / "alerts.jsonl").read_text())
    (tmp_path / "devices.json").write_text((replayed / "inventory.json").read_text())
    (tmp_path / "agent.yaml").write_text(
        f"site: depot-7\ncapture: {{interfaces: [eth1]}}\nstate_dir: {tmp_path / 'state'}\n"
        "run_as_user: null\nalerts_file: alerts.jsonl\ninventory_file: devices.json\n"
        f"policy_file: {POLICY}\ncontainment: {{mode: dry-run}}\n"
    )
    now = time.time()
    book = QuarantineBook()
    for n, (until, rule) in enumerate([(now + 3600, "p2p.nat_traversal"), (now - 60, "stream.egress")], 1):
        device = scenario.hik_mac(n).replace(":", "-")
        book.active[device] = QuarantineEntry(device, (), now - 600, until, "agent", "test", rule)
    path = ContainmentFiles.at(tmp_path / "state").book
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(book.to_json()))
    out = tmp_path / "out"
    assert cli.main(["report", "--config", str(tmp_path / "agent.yaml"), "--out", str(out)]) == 0
    rows = ledger(out)
    ends = datetime.fromtimestamp(now + 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rows["44-19-b6-00-01-01"]["containment"] == f"quarantined until {ends} (rule p2p.nat_traversal)"
    assert rows["44-19-b6-00-01-02"]["containment"] == "dry-run"  # its quarantine has ended
    assert f"quarantined until {ends}" in (out / "index.html").read_text()
    # A damaged book costs the quarantines on the page, not the report; the file is left where it is.
    path.write_text("{")
    assert cli.main(["report", "--config", str(tmp_path / "agent.yaml"), "--out", str(out)]) == 0
    assert ledger(out)["44-19-b6-00-01-01"]["containment"] == "dry-run" and path.read_text() == "{"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--out", "OUT"], 2, "give --inventory FILE and --alerts FILE, or --config FILE of an agent"),
        (["--inventory", "INV", "--out", "OUT"], 2, "give --alerts FILE"),
        (["--inventory", "MISSING", "--alerts", "ALERTS", "--out", "OUT"], 1, "MISSING: does not exist"),
        (["--inventory", "OLD", "--alerts", "ALERTS", "--out", "OUT"], 1,
         "OLD: is an agent state file of version 0; this camwatch reads version 1; run camwatch report with"),
        # The inventory (a JSON document over many lines) or the flows given as the alerts: the wrong file.
        (["--inventory", "INV", "--alerts", "INV", "--out", "OUT"], 1,
         "inventory.json: is not a file of alert records: none of its"),
        (["--inventory", "INV", "--alerts", "FLOWS", "--out", "OUT"], 1,
         "flows.jsonl: is not a file of alert records: none of its"),
        (["--inventory", "INV", "--alerts", "ALERTS", "--flows", "ALERTS", "--out", "OUT"], 1,
         "alerts.jsonl: is not a file of flow records: none of its"),
    ],
)  # fmt: skip
def test_bad_report_arguments_and_inputs(
    replayed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    (tmp_path / "old.json").write_text(json.dumps({"version": 0, "saved": 0, "devices": []}))
    paths = {"OUT": tmp_path / "out", "INV": replayed / "inventory.json",
             "MISSING": tmp_path / "missing.json", "OLD": tmp_path / "old.json",
             "ALERTS": replayed / "alerts.jsonl", "FLOWS": replayed / "flows.jsonl"}  # fmt: skip
    argv = ["report", *(str(paths.get(a, a)) for a in args)]
    assert cli.main(argv) == code
    err = capsys.readouterr().err.replace(str(tmp_path) + "/", "").replace(str(replayed) + "/", "")
    for name, path in paths.items():
        err = err.replace(path.name, name) if name in ("MISSING", "OLD") else err
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "ledger.csv").exists()  # nothing half written


def test_inventory_export_without_inputs_names_only_its_own_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["inventory", "export"]) == 2
    err = capsys.readouterr().err
    assert err == "camwatch: error: give --inventory FILE, or --config FILE of an agent\n"


def test_alert_files_with_some_bad_lines_are_read_and_the_count_said(
    replayed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = (replayed / "alerts.jsonl").read_text().splitlines(keepends=True)
    flows = (replayed / "flows.jsonl").read_text().splitlines(keepends=True)
    inv, out = str(replayed / "inventory.json"), str(tmp_path / "out")
    # A half line at the end (the agent is writing): skipped, said as such.
    (tmp_path / "half.jsonl").write_text("".join(alerts) + '{"rule": {"id"')
    assert (
        cli.main(["report", "--inventory", inv, "--alerts", str(tmp_path / "half.jsonl"), "--out", out]) == 0
    )
    assert "half.jsonl: its last line is not a complete alert record (a file being written)" in caplog.text
    caplog.clear()
    # More flows than alerts: read, and said to be probably the wrong file, with the count.
    mixed = alerts[:2] + flows[:5]
    (tmp_path / "mixed.jsonl").write_text("".join(mixed))
    assert (
        cli.main(["report", "--inventory", inv, "--alerts", str(tmp_path / "mixed.jsonl"), "--out", out]) == 0
    )
    assert (
        "mixed.jsonl: 5 of its 7 lines are not alert records and were skipped (line 3 is a flow record, for "
        "--flows): probably the wrong file" in caplog.text
    )
    assert sum(int(r["alerts"]) for r in ledger(tmp_path / "out").values()) == 2


def test_inventory_export_formats(replayed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = str(replayed / "inventory.json")
    assert cli.main(["inventory", "export", "--inventory", inv]) == 0
    exported = json.loads(capsys.readouterr().out)
    everything = json.loads((replayed / "inventory.json").read_text())
    assert [d["mac"] for d in exported] == [
        d["mac"] for d in everything if d["watched"] and not d.get("router")
    ]  # routers excepted, as in the ledger
    assert cli.main(["inventory", "export", "--inventory", inv, "--all", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(everything)
    out = tmp_path / "netbox.csv"
    assert cli.main(["inventory", "export", "--inventory", inv, "--format", "netbox", "--out", str(out)]) == 2
    assert "NetBox needs a site" in capsys.readouterr().err
    args = ["inventory", "export", "--inventory", inv, "--format", "netbox", "--netbox-site", "depot-7",
            "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == len(exported) and {r["site"] for r in rows} == {"depot-7"}


def test_an_empty_site_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "inv.json").write_text("[]")
    (tmp_path / "alerts.jsonl").write_text("")
    args = ["report", "--inventory", str(tmp_path / "inv.json"), "--alerts", str(tmp_path / "alerts.jsonl"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(args) == 0
    assert "the ledger is empty" in capsys.readouterr().err
    assert cli.main(["inventory", "export", "--inventory", str(tmp_path / "inv.json")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "[]\n" and "no device to export" in captured.err


@pytest.mark.parametrize("command", [["report", "--out", "out"], ["inventory", "export"]])
def test_an_agent_that_has_not_saved_yet_is_said_so(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh install: the configuration names the agent's state directory, where nothing is saved yet.
    (tmp_path / "agent.yaml").write_text(
        "site: depot-7\ncapture: {interfaces: [eth1]}\nstate_dir: state\nrun_as_user: null\n"
    )
    assert cli.main([*command, "--config", str(tmp_path / "agent.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'state' / 'inventory.json'}: does not exist yet: this configuration's agent" in err
    assert "start the agent (it saves every minute) and try again, or give --inventory FILE" in err
