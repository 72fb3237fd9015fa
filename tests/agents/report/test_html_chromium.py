"""The report's page in a real headless browser (Debian's chromium): it renders, logs nothing to the console
(no script error, no blocked fetch: the page is self-contained), and every number on it is the CSV's."""

from __future__ import annotations

import csv
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agents import cli
from lab import scenario
from monitor.pcapwrite import pcap_bytes

ROOT = Path(__file__).parents[3]
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # No network even if the page tried: every host name fails to resolve (and would log an error).
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr", "--v=0",
)  # fmt: skip
TABLE = (
    "mac", "name", "location", "ip", "vendor", "model", "firmware", "status", "replace_by", "overdue",
    "first_seen", "last_seen", "external_destinations", "last_external", "vendor_cloud", "p2p", "upnp",
    "default_credentials", "exploit_attempts", "alerts", "containment",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="chromium is not installed (scripts/test installs it)"
)


def chromium(tmp_path: Path, page: Path, *args: str) -> tuple[str, str]:
    """Run chromium on ``page`` with a fresh profile; (stdout, stderr)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    res = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout, res.stderr


class Page(HTMLParser):
    """What the rendered DOM says: figures, chart bars, and the ledger table's cells by MAC."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.bars: dict[str, int] = {}
        self.rows: dict[str, dict[str, str]] = {}
        self.external: list[str] = []
        self._table: str | None = None
        self._mac: str | None = None
        self._field: tuple[str, str] | None = None  # (kind, name) of the element whose text is read
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))
        if tag == "table":
            self._table = a.get("id")
        elif tag == "tr" and self._table == "ledger" and a.get("data-mac"):
            self._mac = a["data-mac"]
            self.rows[str(self._mac)] = {}
        elif a.get("data-figure"):
            self._field, self._text = ("figure", str(a["data-figure"])), ""
        elif tag == "td" and self._table == "ledger" and a.get("data-col") and self._mac:
            self._field, self._text = ("cell", str(a["data-col"])), ""
        elif tag == "g" and a.get("data-bar"):
            self.bars[str(a["data-bar"])] = int(str(a["data-value"]))

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._field is not None and tag in ("span", "td"):
            kind, name = self._field
            if kind == "figure":
                self.figures[name] = self._text
            elif self._mac is not None:
                self.rows[self._mac][name] = self._text
            self._field = None
        if tag == "table":
            self._table = None


def make_report(tmp_path: Path, register: str | None) -> Path:
    pcap = tmp_path / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=3, seconds=20.0))))
    args = ["replay", str(pcap), "--policy", str(ROOT / "examples" / "site-policy.yaml"),
            "--alerts", str(tmp_path / "alerts.jsonl"), "--flows", str(tmp_path / "flows.jsonl"),
            "--inventory", str(tmp_path / "inventory.json")]  # fmt: skip
    assert cli.main(args) == 0
    out = tmp_path / "report"
    args = ["report", "--inventory", str(tmp_path / "inventory.json"),
            "--alerts", str(tmp_path / "alerts.jsonl"), "--flows", str(tmp_path / "flows.jsonl"),
            "--out", str(out), "--as-of", "2026-06-01", "--site", "depot-7"]  # fmt: skip
    if register is not None:
        (tmp_path / "register.csv").write_text(register)
        args += ["--register", str(tmp_path / "register.csv")]
    assert cli.main(args) == 0
    return out


def check(tmp_path: Path, out: Path) -> list[dict[str, str]]:
    """Render the page; the DOM's numbers against the CSV; returns the CSV rows."""
    page = out / "index.html"
    html = page.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    dom, log = chromium(tmp_path, page, "--dump-dom")
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert console == [], "the page logged to the console:\n" + "\n".join(console)
    parsed = Page()
    parsed.feed(dom)
    assert parsed.external == []  # nothing to fetch: no src, no href
    with (out / "ledger.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    # The ledger table: every CSV row, every shown column, the same text.
    assert set(parsed.rows) == {r["mac"] for r in rows}
    for r in rows:
        assert parsed.rows[r["mac"]] == {c: r[c] for c in TABLE}, r["mac"]
    # The summary figures, recomputed from the CSV.
    n = lambda col: sum(1 for r in rows if int(r[col]) > 0)  # noqa: E731
    status = Counter(r["status"] for r in rows)
    assert parsed.figures == {
        "devices": str(len(rows)),
        "status-active": str(status["active"]),
        "status-scheduled": str(status["scheduled"]),
        "status-removed": str(status["removed"]),
        "status-unregistered": str(status["unregistered"]),
        "overdue": str(sum(r["overdue"] == "yes" for r in rows)),
        "internet": str(n("external_destinations")),
        "vendor-cloud": str(n("vendor_cloud")),
        "p2p": str(n("p2p")),
        "alerts": str(sum(int(r["alerts"]) for r in rows)),
    }
    # The charts' bars.
    for key in ("active", "scheduled", "removed", "unregistered"):
        assert parsed.bars.get(f"status:{key}", 0) == status[key]  # an empty chart has no bars
    vendors = Counter(r["manufacturer"] or r["vendor"] or "unknown" for r in rows)
    assert {k[7:]: v for k, v in parsed.bars.items() if k.startswith("vendor:")} == dict(vendors)
    return rows


def rendered_pixels(tmp_path: Path, page: Path) -> float:
    """The page rendered to a PNG by chromium; the spread of its pixel values (0: a blank picture)."""
    import cv2

    shot = tmp_path / "shot.png"
    _, log = chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2000")
    assert [line for line in log.splitlines() if "CONSOLE" in line] == []
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2000, 1280)
    return float(image.std())


def test_the_report_renders_and_its_numbers_are_the_csvs(tmp_path: Path) -> None:
    register = (
        "mac,name,location,model,owner,status,replace_by,notes\n"
        f"{scenario.hik_mac(1)},Gate,North gate,DS-2CD2043G2,Facilities,scheduled,2026-03-31,\n"
        f'{scenario.hik_mac(2)},Yard,"Yard, east",,Facilities,removed,2026-01-31,taken down\n'
        f"{scenario.hik_mac(3)},Door <b>A</b>,Entrance & hall,,Security,scheduled,2026-09-30,\n"
        "44:19:b6:00:09:09,Spare,Store room,,,active,,never installed\n"
    )
    out = make_report(tmp_path, register)
    rows = check(tmp_path, out)
    assert {r["status"] for r in rows} == {"scheduled", "removed", "active", "unregistered"}
    assert sum(r["overdue"] == "yes" for r in rows) == 1  # the gate; the door is due in September
    # Text from the register is shown as text, never as markup.
    assert "Door <b>A</b>" in {r["name"] for r in rows}
    assert "<b>A</b>" not in (out / "index.html").read_text()
    assert rendered_pixels(tmp_path, out / "index.html") > 5


def test_an_empty_site_renders_too(tmp_path: Path) -> None:
    (tmp_path / "inventory.json").write_text("[]")
    (tmp_path / "alerts.jsonl").write_text("")
    out = tmp_path / "report"
    args = ["report", "--inventory", str(tmp_path / "inventory.json"),
            "--alerts", str(tmp_path / "alerts.jsonl"), "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    assert check(tmp_path, out) == []
    assert "No watched device and no device in the register." in (out / "index.html").read_text()
