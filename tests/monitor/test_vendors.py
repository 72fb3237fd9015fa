"""Tests for the MAC → vendor table (monitor.vendors.oui) and tools/refresh_vendors.py."""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from monitor.vendors.oui import (
    CAMERA_KEYS,
    SOURCE_LOCAL,
    SOURCE_MULTICAST,
    SOURCE_NETADDR,
    SOURCE_TABLE,
    SOURCE_UNKNOWN,
    TableRow,
    Vendor,
    VendorTable,
    canonical_vendor,
    format_mac,
    format_prefix,
    parse_mac,
    parse_prefix,
    read_rows,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGE_TABLE = REPO / "monitor" / "vendors" / "data" / "vendors.csv"
IEEE_SAMPLE = REPO / "tests" / "data" / "ieee_sample"
HEADER = "prefix,bits,vendor,manufacturer,registry,source,organization\n"


@pytest.fixture(scope="module")
def table() -> VendorTable:
    return VendorTable.load()


def _load_refresh_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("refresh_vendors", REPO / "tools" / "refresh_vendors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


refresh_tool = _load_refresh_tool()


# ---------------------------------------------------------------------------------------------
# The blocks docs/design.md §7 says netaddr (IEEE MA-L of 2024-05) lacks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mac", "key", "manufacturer"),
    [
        ("80:48:9F:12:34:56", "hikvision", "Hikvision"),
        ("A4:29:02:12:34:56", "hikvision", "Hikvision"),
        ("A4:A4:59:12:34:56", "hikvision", "Hikvision"),
        ("30:DD:AA:12:34:56", "dahua", "Dahua"),
        ("34:C6:DD:12:34:56", "ezviz", "EZVIZ"),
        ("1C:4D:89:12:34:56", "imou", "Imou"),
        ("BC:29:78:12:34:56", "hikvision", "Hikvision"),  # Prama Hikvision India
    ],
)
def test_design_blocks_resolve_from_our_table(
    table: VendorTable, mac: str, key: str, manufacturer: str
) -> None:
    vendor = table.lookup(mac)
    assert vendor.key == key
    assert vendor.manufacturer == manufacturer
    assert vendor.source == SOURCE_TABLE
    assert vendor.registry_name  # the registry's own spelling is kept


def test_netaddr_known_hikvision_block(table: VendorTable) -> None:
    vendor = table.lookup("44:19:B6:00:00:01")
    assert vendor == Vendor(
        "hikvision", "Hikvision", "Hangzhou Hikvision Digital Technology Co.,Ltd.", SOURCE_NETADDR
    )


@pytest.mark.parametrize(
    ("mac", "key", "registry_name"),
    [
        ("F8:CE:07:00:00:01", "dahua", "ZHEJIANG DAHUA TECHNOLOGYCO.,LTD"),  # typo in the registry
        ("24:B1:05:00:00:01", "hikvision", "Prama Hikvision India Private Limited"),
        ("20:BB:BC:00:00:01", "ezviz", "Hangzhou Ezviz Software Co.,Ltd."),
        ("A8:31:62:00:00:01", "imou", "Hangzhou Huacheng Network Technology Co.,Ltd"),
    ],
)
def test_netaddr_names_are_normalised(table: VendorTable, mac: str, key: str, registry_name: str) -> None:
    vendor = table.lookup(mac)
    assert (vendor.key, vendor.registry_name, vendor.source) == (key, registry_name, SOURCE_NETADDR)


def test_unknown_oui(table: VendorTable) -> None:
    assert table.lookup("FC:FF:FC:00:00:01") == Vendor(None, None, None, SOURCE_UNKNOWN)


def test_non_camera_vendor_gets_cleaned_name(table: VendorTable) -> None:
    vendor = table.lookup("00:00:0C:00:00:01")
    assert vendor.key is None
    assert vendor.manufacturer == "Cisco Systems"
    assert vendor.source == SOURCE_NETADDR


# ---------------------------------------------------------------------------------------------
# Organisation name normalisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("org", "expected"),
    [
        ("Hangzhou Hikvision Digital Technology Co.,Ltd.", ("hikvision", "Hikvision")),
        ("HIKVISION", ("hikvision", "Hikvision")),
        ("Hangzhou Hikvision Digital Technologyco.,Ltd.", ("hikvision", "Hikvision")),
        ("  Hangzhou   Hikvision Digital\tTechnology Co.,Ltd. ", ("hikvision", "Hikvision")),
        ("Prama Hikvision India Private Limited", ("hikvision", "Hikvision")),
        ("Zhejiang Dahua Technology Co., Ltd.", ("dahua", "Dahua")),
        ("ZHEJIANG DAHUA TECHNOLOGYCO.,LTD", ("dahua", "Dahua")),
        ("Zhejiang Dahua Technologyco.,Ltd", ("dahua", "Dahua")),
        ("Hangzhou Ezviz Software Co.,Ltd.", ("ezviz", "EZVIZ")),
        ("Zhejiang Uniview Technologies Co.,Ltd.", ("uniview", "Uniview")),
        ("Hangzhou Xiongmai Information Technology Co.,Ltd", ("xiongmai", "Xiongmai")),
        ("Tiandy Technologies", ("tiandy", "Tiandy")),
        ("Tiandy Technologies CO.,LTD", ("tiandy", "Tiandy")),
        ("Zhejiang Huacheng Technology", ("imou", "Imou")),
        ("hangzhou huacheng network technology co., ltd", ("imou", "Imou")),
        ("Huawei", ("huawei", "Huawei")),
        ("HUAWEI TECHNOLOGIES CO.,LTD", ("huawei", "Huawei")),
        ("Axis Communications AB", ("axis", "Axis")),
        ("Bosch Security Systems B.V.", ("bosch", "Bosch Security")),
        ("Hanwha Vision Co., Ltd.", ("hanwha", "Hanwha Vision")),
        ("SAMSUNG TECHWIN CO.,LTD", ("hanwha", "Hanwha Vision")),
        ("Xiamen Milesight IoT Co., Ltd.", ("milesight", "Milesight")),
        ("Reolink Innovation Limited", ("reolink", "Reolink")),
        ("TP-LINK TECHNOLOGIES CO.,LTD.", ("tplink", "TP-Link")),
        ("Ubiquiti Inc", ("ubiquiti", "Ubiquiti")),
    ],
)
def test_canonical_vendor_known(org: str, expected: tuple[str, str]) -> None:
    assert canonical_vendor(org) == expected


@pytest.mark.parametrize(
    ("org", "display"),
    [
        # Near misses of the camera rules: unrelated companies.
        ("Shanghai Dahua Scale Factory", "Shanghai Dahua Scale Factory"),
        ("Axis-Shield PoC AS", "Axis-Shield PoC"),
        ("AXIS CORPORATION", "AXIS"),
        ("Robert Bosch Healthcare Systems, Inc.", "Robert Bosch Healthcare Systems"),
        ("Kedah Electronics Engineering, LLC", "Kedah Electronics Engineering"),
        ("PELCOMBE GROUP LTD.", "PELCOMBE GROUP"),
        ("Hangzhou Hikrobot Technology Co., Ltd.", "Hangzhou Hikrobot Technology"),
        # Legal forms stripped, typo unglued, nothing else touched.
        ("Cisco Systems, Inc", "Cisco Systems"),
        ("Dongguan Auklink TechnologyCo.,Ltd", "Dongguan Auklink Technology"),
        ("Beijing Hanbang Technology Corp.", "Beijing Hanbang Technology"),
        ("AB", "AB"),
    ],
)
def test_canonical_vendor_unknown(org: str, display: str) -> None:
    assert canonical_vendor(org) == (None, display)


@pytest.mark.parametrize("org", ["", "   "])
def test_canonical_vendor_empty(org: str) -> None:
    assert canonical_vendor(org) == (None, None)


def test_watched_vendors_are_camera_keys() -> None:
    assert {"hikvision", "dahua", "ezviz", "imou", "uniview", "xiongmai", "tiandy", "axis"} <= CAMERA_KEYS
    assert "huawei" not in CAMERA_KEYS  # canonicalised, but too many non-camera blocks to copy


# ---------------------------------------------------------------------------------------------
# Special address kinds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mac", ["02:00:00:00:00:01", "46:19:B6:00:00:01", "DA:A1:19:12:34:56"])
def test_locally_administered(table: VendorTable, mac: str) -> None:
    assert table.lookup(mac) == Vendor(None, None, None, SOURCE_LOCAL)


@pytest.mark.parametrize(
    "mac",
    ["01:00:5E:00:00:FB", "33:33:00:00:00:01", "FF:FF:FF:FF:FF:FF", "01:80:C2:00:00:00", "45:19:B6:00:00:01"],
)
def test_multicast(table: VendorTable, mac: str) -> None:
    # 33:33 (IPv6 multicast) also has the local bit set: the group bit wins.
    assert table.lookup(mac) == Vendor(None, None, None, SOURCE_MULTICAST)


# ---------------------------------------------------------------------------------------------
# Longest prefix
# ---------------------------------------------------------------------------------------------


def _write_table(path: Path, *lines: str) -> Path:
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_longest_prefix_wins(tmp_path: Path) -> None:
    csv_path = _write_table(
        tmp_path / "t.csv",
        "44:19:B6,24,hikvision,Hikvision,MA-L,test,",
        "44:19:B6:1,28,dahua,Dahua,MA-M,test,",
        "44:19:B6:12:3,36,axis,Axis,MA-S,test,",
    )
    table = VendorTable.load(str(csv_path))
    assert table.lookup("44:19:B6:12:34:56").key == "axis"
    assert table.lookup("44:19:B6:12:44:56").key == "dahua"
    assert table.lookup("44:19:B6:1F:FF:FF").key == "dahua"
    assert table.lookup("44:19:B6:22:34:56").key == "hikvision"
    assert {table.lookup(m).source for m in ("44:19:B6:12:34:56", "44:19:B6:22:34:56")} == {SOURCE_TABLE}


def test_36_bit_block_inside_netaddr_block_of_another_vendor(tmp_path: Path) -> None:
    table = VendorTable.load(str(_write_table(tmp_path / "t.csv", "44:19:B6:AB:C,36,axis,Axis,MA-S,test,")))
    assert table.lookup("44:19:B6:AB:C1:23") == Vendor("axis", "Axis", None, SOURCE_TABLE)
    # The neighbouring 36-bit block still falls through to netaddr's 24-bit Hikvision entry.
    neighbour = table.lookup("44:19:B6:AB:D1:23")
    assert (neighbour.key, neighbour.source) == ("hikvision", SOURCE_NETADDR)


def test_ma_m_block_in_ieee_parent(table: VendorTable) -> None:
    # A4:DA:22 is an MA-M parent: netaddr only knows "IEEE Registration Authority" for it.
    assert table.lookup("A4:DA:22:21:23:45").key == "wyze"
    other = table.lookup("A4:DA:22:31:23:45")
    assert other == Vendor(None, None, "IEEE Registration Authority", SOURCE_NETADDR)
    # 34:46:63 was assigned as an MA-M parent after netaddr's data was cut: only our row knows it.
    assert table.lookup("34:46:63:21:23:45").key == "amcrest"
    assert table.lookup("34:46:63:31:23:45").source == SOURCE_UNKNOWN


def test_netaddr_iab_blocks(table: VendorTable) -> None:
    # netaddr answers 36-bit IAB lookups inside 00:50:C2 and 40:D8:55.
    vendor = table.lookup("00:50:C2:B0:41:23")
    assert (vendor.key, vendor.registry_name, vendor.source) == ("ubiquiti", "Ubiquiti Inc", SOURCE_NETADDR)
    assert table.lookup("00:50:C2:F7:11:23").manufacturer == "RF Code"


def test_the_iab_parents_written_out_are_netaddrs() -> None:
    # monitor/vendors/oui.py writes them out so that start-up need not import netaddr.
    import netaddr.eui

    from monitor.vendors import oui

    assert frozenset(netaddr.eui.IAB.IAB_EUI_VALUES) == oui._NETADDR_IAB_OUIS


def test_table_without_netaddr(tmp_path: Path) -> None:
    table = VendorTable.load(
        str(_write_table(tmp_path / "t.csv", "80:48:9F,24,hikvision,Hikvision,MA-L,t,")), use_netaddr=False
    )
    assert table.lookup("80:48:9F:00:00:01").key == "hikvision"
    assert table.lookup("44:19:B6:00:00:01").source == SOURCE_UNKNOWN


def test_lookup_input_types(table: VendorTable) -> None:
    expected = table.lookup("44:19:B6:00:00:01")
    assert table.lookup(0x4419B6000001) == expected
    assert table.lookup(bytes.fromhex("4419b6000001")) == expected
    assert table.lookup("4419.b600.0001") == expected
    with pytest.raises(ValueError):
        table.lookup("44:19:B6")
    with pytest.raises(ValueError):
        table.lookup(b"\x44\x19\xb6")
    with pytest.raises(ValueError):
        table.lookup(1 << 48)


def test_cache_is_bounded() -> None:
    table = VendorTable(read_rows(), cache_size=32)
    rng = random.Random(7)
    for _ in range(2000):
        table.lookup(rng.getrandbits(48) & ~(0x03 << 40))  # unicast, globally administered
    assert 0 < table.cache_usage() <= 64
    table.cache_clear()
    assert table.cache_usage() == 0


# ---------------------------------------------------------------------------------------------
# MAC text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "44:19:B6:00:00:01",
        "44-19-b6-00-00-01",
        "4419.b600.0001",
        "4419B6000001",
        " 44:19:b6:00:00:01\n",
        "44:19:B6:0:0:1",
    ],
)
def test_parse_mac_forms(text: str) -> None:
    assert parse_mac(text) == 0x4419B6000001


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("44:19:B6:00:00", "expected 6 octets"),
        ("44:19:B6:00:00:01:02", "expected 6 octets"),
        ("44:19-B6:00:00:01", "mixed separators"),
        ("44:19:G6:00:00:01", "bad group"),
        ("44:19:B6:00:000:01", "bad group"),
        ("44:19::00:00:01", "bad group"),
        ("4419.b600.001", "3 groups of 4"),
        ("4419b600000", "12 hex digits"),
        ("not a mac", "12 hex digits"),
    ],
)
def test_parse_mac_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_mac(text)


def test_format_mac() -> None:
    assert format_mac(0x4419B6000001) == "44-19-b6-00-00-01"
    assert format_mac(bytes.fromhex("4419B6000001")) == "44-19-b6-00-00-01"
    assert format_mac(0) == "00-00-00-00-00-00"
    with pytest.raises(ValueError):
        format_mac(-1)
    with pytest.raises(ValueError):
        format_mac(b"\x00" * 5)


def test_format_parse_round_trip() -> None:
    rng = random.Random(1)
    for value in [0, (1 << 48) - 1, *(rng.getrandbits(48) for _ in range(200))]:
        text = format_mac(value)
        assert parse_mac(text) == value
        assert parse_mac(text.upper().replace("-", ":")) == value
        assert format_mac(value.to_bytes(6, "big")) == text


@pytest.mark.parametrize(
    ("text", "bits", "value"),
    [("80:48:9F", 24, 0x80489F), ("34:46:63:2", 28, 0x3446632), ("70:B3:D5:E0:0", 36, 0x70B3D5E00)],
)
def test_prefix_format(text: str, bits: int, value: int) -> None:
    assert parse_prefix(text, bits) == value
    assert format_prefix(value, bits) == text
    with pytest.raises(ValueError):
        parse_prefix(text, 36 if bits != 36 else 24)


# ---------------------------------------------------------------------------------------------
# The package table
# ---------------------------------------------------------------------------------------------


def test_package_table_is_well_formed() -> None:
    rows = read_rows()
    assert len(rows) >= 7
    blocks = [(r.prefix, r.bits) for r in rows]
    assert len(blocks) == len(set(blocks)), "duplicate prefixes"
    text_prefixes = [
        line.split(",", 1)[0]
        for line in PACKAGE_TABLE.read_text().splitlines()[1:]
        if not line.startswith("#")
    ]
    for row in rows:
        assert row.source.strip(), f"{row.prefix_text} has no source"
        assert row.vendor is not None and row.manufacturer is not None
        assert row.organization, f"{row.prefix_text} has no organisation name"
        # Key and display name are what the canonicaliser gives for the registry's name.
        assert canonical_vendor(row.organization) == (row.vendor, row.manufacturer)
        assert row.prefix_text in text_prefixes  # written in canonical form
    assert len(VendorTable(rows)) == len(rows)


def test_package_table_has_no_ma_m_ma_s_rows_outside_their_parents() -> None:
    # A 28/36-bit row only makes sense inside a registry parent block, never inside a vendor's MA-L.
    rows = read_rows()
    ma_l = {r.prefix for r in rows if r.bits == 24}
    for row in rows:
        if row.bits > 24:
            assert row.prefix >> (row.bits - 24) not in ma_l


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("80:48:9F,24,hikvision,Hikvision,MA-L,,", "needs a source"),
        ("80:48:9F,28,hikvision,Hikvision,MA-L,x,", "does not match"),
        ("80:48:9,24,hikvision,Hikvision,MA-L,x,", "6 hex digits"),
        ("80:48:9F,24,Hikvision,Hikvision,MA-L,x,", "lowercase"),
        ("80:48:9F,twenty,hikvision,Hikvision,MA-L,x,", "bits must be"),
    ],
)
def test_bad_table_rows(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_rows(_write_table(tmp_path / "t.csv", line))


def test_duplicate_prefix_rejected(tmp_path: Path) -> None:
    path = _write_table(
        tmp_path / "t.csv",
        "80:48:9F,24,hikvision,Hikvision,MA-L,a,",
        "80:48:9f,24,hikvision,Hikvision,MA-L,b,",
    )
    with pytest.raises(ValueError, match=r"t\.csv:3: duplicate prefix 80:48:9F/24 \(first on line 2\)"):
        read_rows(path)


def test_six_column_table_loads(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "# comment\nprefix,bits,vendor,manufacturer,registry,source\n80:48:9F,24,hikvision,Hikvision,MA-L,x\n"
    )
    assert read_rows(path) == [TableRow(0x80489F, 24, "hikvision", "Hikvision", "MA-L", "x", None)]


# ---------------------------------------------------------------------------------------------
# tools/refresh_vendors.py
# ---------------------------------------------------------------------------------------------


def _sample_files(*names: str) -> list[str]:
    return [str(IEEE_SAMPLE / name) for name in names]


@pytest.fixture
def table_copy(tmp_path: Path) -> Path:
    path = tmp_path / "vendors.csv"
    shutil.copyfile(PACKAGE_TABLE, path)
    return path


def _by_block(rows: list[TableRow]) -> dict[tuple[str, int], TableRow]:
    return {(r.prefix_text, r.bits): r for r in rows}


def test_refresh_round_trip(table_copy: Path) -> None:
    before = read_rows(table_copy)
    sample = _sample_files("oui.csv", "mam.csv", "oui36.csv", "iab.csv")
    assert refresh_tool.main([*sample, "--table", str(table_copy), "--quiet"]) == 0
    after = _by_block(read_rows(table_copy))

    # Camera makers from the IEEE files, typo and joint-venture names normalised.
    assert after[("44:19:B6", 24)] == TableRow(
        0x4419B6,
        24,
        "hikvision",
        "Hikvision",
        "MA-L",
        "ieee:oui.csv",
        "Hangzhou Hikvision Digital Technology Co.,Ltd.",
    )
    assert after[("F8:CE:07", 24)].vendor == "dahua"
    assert after[("24:B1:05", 24)].vendor == "hikvision"
    assert after[("90:6A:94", 24)].vendor == "imou"
    assert after[("B8:A4:4F", 24)].vendor == "axis"
    assert after[("58:E8:76:0", 28)].source == "ieee:mam.csv"
    assert after[("00:50:C2:B0:4", 36)] == TableRow(
        0x0050C2B04, 36, "ubiquiti", "Ubiquiti", "IAB", "ieee:iab.csv", "Ubiquiti Networks Inc."
    )
    # Not camera makers, or not the camera maker the name resembles.
    for block in [
        ("00:00:0C", 24),
        ("00:E0:FC", 24),
        ("40:2C:76:1", 28),
        ("70:B3:D5:E0:0", 36),
        ("70:B3:D5:98:7", 36),
    ]:
        assert block not in after
    # Hand-added rows survive; the two the IEEE sample now lists are superseded by the registry's rows.
    superseded = {("A4:DA:22:2", 28), ("58:E8:76:0", 28)}
    for row in before:
        block = (row.prefix_text, row.bits)
        if block in superseded:
            assert after[block].source == "ieee:mam.csv"
        else:
            assert after[block] == row
    assert len(after) == len(before) - len(superseded) + 10
    # The comment block survives and the result loads.
    assert table_copy.read_text().startswith("# camwatch vendor table")
    table = VendorTable.load(str(table_copy))
    assert table.lookup("44:19:B6:00:00:01").source == SOURCE_TABLE
    assert table.lookup("80:48:9F:00:00:01").key == "hikvision"


def test_refresh_is_idempotent(table_copy: Path) -> None:
    sample = _sample_files("oui.csv", "mam.csv", "oui36.csv", "iab.csv")
    assert refresh_tool.main([*sample, "--table", str(table_copy), "-q"]) == 0
    first = table_copy.read_text()
    assert refresh_tool.main([*sample, "--table", str(table_copy), "-q"]) == 0
    assert table_copy.read_text() == first


def test_refresh_only_replaces_registries_it_was_given(table_copy: Path, tmp_path: Path) -> None:
    assert refresh_tool.main([*_sample_files("oui.csv", "mam.csv"), "--table", str(table_copy), "-q"]) == 0
    # A later MA-L-only refresh with fewer rows drops stale MA-L IEEE rows but keeps the MA-M ones.
    oui = tmp_path / "oui.csv"
    lines = (IEEE_SAMPLE / "oui.csv").read_text().splitlines()
    oui.write_text("\n".join(line for line in lines if ",4419B6," not in line) + "\n")
    assert refresh_tool.main([str(oui), "--table", str(table_copy), "-q"]) == 0
    after = _by_block(read_rows(table_copy))
    assert ("44:19:B6", 24) not in after
    assert after[("F8:CE:07", 24)].source == "ieee:oui.csv"
    assert after[("A4:DA:22:2", 28)].source == "ieee:mam.csv"


def test_refresh_keys_option(table_copy: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    args = [*_sample_files("oui.csv"), "--table", str(table_copy), "--output", str(output), "-q"]
    assert refresh_tool.main([*args, "--keys", "all"]) == 0
    rows = _by_block(read_rows(output))
    assert rows[("00:E0:FC", 24)].vendor == "huawei"
    assert ("00:00:0C", 24) not in rows  # unknown organisations are never copied
    assert refresh_tool.main([*args, "--keys", "dahua"]) == 0
    fresh = [r for r in read_rows(output) if r.source.startswith("ieee:")]
    assert {r.vendor for r in fresh} == {"dahua"}
    assert table_copy.read_bytes() == PACKAGE_TABLE.read_bytes()  # --output leaves --table alone


def test_refresh_rejects_malformed_files(table_copy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "oui.csv"
    bad.write_text("Registry,Assignment,Organization Name,Organization Address\nMA-L,4419B,Short,x\n")
    assert refresh_tool.main([str(bad), "--table", str(table_copy), "-q"]) == 2
    bad.write_text("prefix,vendor\n44:19:B6,hikvision\n")
    assert refresh_tool.main([str(bad), "--table", str(table_copy), "-q"]) == 2
    bad.write_text("Registry,Assignment,Organization Name,Organization Address\n")
    assert refresh_tool.main([str(bad), "--table", str(table_copy), "-q"]) == 1
    assert table_copy.read_bytes() == PACKAGE_TABLE.read_bytes()


def test_fast_netaddr_lookup_agrees_with_netaddrs_api() -> None:
    """Our direct read of netaddr's registry files gives what netaddr's own API gives."""
    import random

    import netaddr

    from monitor.vendors import oui as oui_module

    files = oui_module._netaddr_oui_files()
    assert files is not None, "netaddr's oui.idx/oui.txt not found: the fast path is not used"
    keys = [int(line.split(b",")[0]) for line in files[0].split(b"\n") if line]
    rng = random.Random(7)
    sample = [*rng.sample(keys, 300), 0x4419B6, 0xBC5181, 0xFFFFFE]

    def via_api(key: int) -> str | None:
        try:
            return str(netaddr.OUI(key).registration().org) or None
        except netaddr.NotRegisteredError:
            return None

    assert [oui_module._netaddr_oui_org(k) for k in sample] == [via_api(k) for k in sample]
