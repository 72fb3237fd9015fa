"""The vendor-cloud catalogue: the packaged file loads and is sourced, lookups, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.vendors.clouds import CloudCatalogue, CloudCatalogueError, CloudEntry, normalize_domain

PACKAGED = Path(__file__).parents[2] / "monitor" / "vendors" / "data" / "clouds.yaml"


@pytest.fixture(scope="module")
def catalogue() -> CloudCatalogue:
    return CloudCatalogue.load()


def test_packaged_catalogue_loads_and_is_sourced(catalogue: CloudCatalogue) -> None:
    assert len(catalogue.entries) >= 15
    for entry in catalogue.entries:
        assert entry.source.strip(), entry
        assert entry.domains or entry.ports, entry
    assert {"hikvision", "ezviz", "dahua", "imou", "xiongmai", "uniview", "cs2"} <= catalogue.vendors()
    # The same file loads by path.
    assert CloudCatalogue.load(str(PACKAGED)).entries == catalogue.entries


@pytest.mark.parametrize(
    ("name", "vendor", "kind"),
    [
        ("litedev.ezvizlife.com", "ezviz", "cloud"),
        ("foo.hik-connect.com", "hikvision", "cloud"),
        ("www.easy4ipcloud.com", "dahua", "p2p"),
        ("pub-cfg.secu100.net", "xiongmai", "cloud"),
        ("x.xmcsrv.net", "xiongmai", "cloud"),
        ("time.ys7.com", "ezviz", "ntp"),
        ("a.ezcloud.uniview.com", "uniview", "cloud"),
        ("a.b.c.hik-connect.com", "hikvision", "cloud"),
        ("LiteDev.EZVIZlife.com.", "ezviz", "cloud"),  # case and the trailing dot do not matter
        ("apiieu.ezvizlife.com", "ezviz", "api"),  # the wildcard, where no exact name is listed
    ],
)
def test_match_domain(catalogue: CloudCatalogue, name: str, vendor: str, kind: str) -> None:
    entry = catalogue.match_domain(name)
    assert entry is not None and (entry.vendor, entry.kind) == (vendor, kind)


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "ezvizlife.com.evil.net",
        "hik-connect.com",
        "evilhik-connect.com",
        "com",
        "",
        ".",
        "ezcloud.uniview.com",
    ],
)
def test_match_domain_none(catalogue: CloudCatalogue, name: str) -> None:
    # A wildcard covers names strictly below its suffix, not the suffix itself nor look-alikes.
    assert catalogue.match_domain(name) is None


def test_exact_beats_wildcard_and_longest_suffix_wins() -> None:
    cat = CloudCatalogue.from_data(
        {
            "version": 1,
            "entries": [
                {"vendor": "a", "kind": "cloud", "domains": ["*.example.com"], "source": "s"},
                {"vendor": "b", "kind": "p2p", "domains": ["*.p2p.example.com"], "source": "s"},
                {"vendor": "c", "kind": "ntp", "domains": ["time.p2p.example.com"], "source": "s"},
            ],
        }
    )

    def vendor(name: str) -> str | None:
        entry = cat.match_domain(name)
        return entry.vendor if entry is not None else None

    assert [vendor(n) for n in ("x.example.com", "x.p2p.example.com", "time.p2p.example.com")] == [
        "a",
        "b",
        "c",
    ]
    assert vendor("p2p.example.com") == "a"


def test_match_port(catalogue: CloudCatalogue) -> None:
    assert [e.vendor for e in catalogue.match_port(6002, "udp")] == ["ezviz"]
    assert [e.vendor for e in catalogue.match_port(8800, "UDP")] == ["dahua"]
    assert {e.vendor for e in catalogue.match_port(32100, "udp")} == {"cs2"}
    assert catalogue.match_port(6002, "tcp") == [] and catalogue.match_port(443, "udp") == []
    assert [e.signatures for e in catalogue.match_port(31006, "tcp")] == [("mqtt",)]


def test_signatures_name_the_p2p_analyzers(catalogue: CloudCatalogue) -> None:
    sigs = {s for e in catalogue.entries for s in e.signatures}
    assert {"p2p.ezviz_xml", "p2p.dahua_dhget", "p2p.dahua_ptcp", "p2p.cs2_pppp", "mqtt"} <= sigs


def test_normalize_domain() -> None:
    assert normalize_domain(" WWW.Example.COM. ") == "www.example.com"


def test_entry_describe() -> None:
    entry = CloudEntry("cs2", "p2p", (), ((32100, "udp"),), (), "src")
    assert entry.describe() == "cs2/p2p 32100/udp"


# --- errors -------------------------------------------------------------------------------------------------


def good_entry(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "vendor": "ezviz",
        "kind": "p2p",
        "domains": ["a.example.com"],
        "ports": ["6002/udp"],
    }
    entry["source"] = "https://example.org/writeup"
    entry.update(over)
    return {k: v for k, v in entry.items() if v is not ...}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (good_entry(source=...), "entry 0 (ezviz), field 'source': missing"),
        (good_entry(source="  "), "field 'source': expected a non-empty string"),
        (good_entry(vendor="Hik Vision"), "field 'vendor': 'Hik Vision' is not a canonical key"),
        (good_entry(vendor=...), "entry 0, field 'vendor': missing"),
        (good_entry(kind="cdn"), "field 'kind': 'cdn' is not one of"),
        (
            good_entry(domains=["bad_name.example.com"]),
            "field 'domains': 'bad_name.example.com' is not a host name",
        ),
        (good_entry(domains=["*.com"]), "is not a host name"),
        (good_entry(domains=["a.example.com", "A.example.com."]), "listed twice"),
        (good_entry(domains="a.example.com"), "field 'domains': expected a list"),
        (good_entry(domains=[3]), "field 'domains': expected strings"),
        (good_entry(ports=["6002"]), "field 'ports': '6002' is not <1-65535>/<tcp|udp>"),
        (good_entry(ports=["70000/udp"]), "'70000/udp' is not"),
        (good_entry(signatures=["P2P PPPP"]), "field 'signatures'"),
        (good_entry(domains=[], ports=[]), "at least one domain or one port"),
        (good_entry(soruce="typo"), "field 'soruce': unknown field"),
        ("just a string", "entry 0: expected a mapping"),
    ],
)
def test_bad_entries(entry: object, message: str) -> None:
    with pytest.raises(CloudCatalogueError, match=r"^test\.yaml: ") as err:
        CloudCatalogue.from_data({"version": 1, "entries": [entry]}, "test.yaml")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a mapping"),
        ({"entries": [good_entry()]}, "'version' must be 1"),
        ({"version": 1, "entries": []}, "'entries' must be a non-empty list"),
        ({"version": 1, "entries": [good_entry()], "extra": 1}, "unknown top-level key 'extra'"),
    ],
)
def test_bad_documents(doc: object, message: str) -> None:
    with pytest.raises(CloudCatalogueError, match=message):
        CloudCatalogue.from_data(doc, "test.yaml")


def test_duplicate_domain_across_entries() -> None:
    doc = {"version": 1, "entries": [good_entry(), good_entry(vendor="dahua", kind="cloud")]}
    with pytest.raises(
        CloudCatalogueError, match=r"entry 1 \(dahua\), field 'domains': 'a.example.com' is already"
    ):
        CloudCatalogue.from_data(doc, "test.yaml")


def test_broken_files(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("version: 1\nentries: [\n", encoding="utf-8")
    with pytest.raises(CloudCatalogueError, match=r"bad\.yaml: not valid YAML"):
        CloudCatalogue.load(str(bad_yaml))
    with pytest.raises(CloudCatalogueError, match="cannot read"):
        CloudCatalogue.load(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    doc = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    doc["entries"][3]["ports"] = ["123/icmp"]
    broken.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(
        CloudCatalogueError, match=r"broken.yaml: entry 3 \(ezviz\), field 'ports': '123/icmp'"
    ):
        CloudCatalogue.load(str(broken))
