"""The asset register's reader: good rows kept, every bad row named with its line and fix."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from monitor.register import REMOVED, SCHEDULED, AssetRegister, RegisterError, parse_mac

GOOD = (
    "mac,name,location,model,owner,status,replace_by,notes\n"
    "44:19:b6:00:01:01,Gate,North gate,DS-2CD2043,Facilities,scheduled,2026-03-31,\n"
    '44-19-B6-00-01-02,Yard,"Yard, pole 3",,,removed,,"taken down, 2025"\n'
    "4419.b600.0103,Door,,,,,,\n"
)


def lines(register: AssetRegister) -> list[tuple[int, str | None, bool]]:
    return [(p.line, p.column, p.skipped) for p in register.problems]


def test_a_good_register_is_read_whole() -> None:
    reg = AssetRegister.parse(GOOD.encode(), "reg.csv")
    assert reg.problems == ()
    assert len(reg) == 3 and reg.rows == 3
    gate = reg.get(parse_mac("44:19:b6:00:01:01") or 0)
    assert gate is not None
    assert (gate.name, gate.location, gate.model, gate.owner) == (
        "Gate",
        "North gate",
        "DS-2CD2043",
        "Facilities",
    )
    assert (gate.status, gate.replace_by, gate.line) == (SCHEDULED, date(2026, 3, 31), 2)
    yard = reg.get(0x4419B6000102)
    assert yard is not None and yard.location == "Yard, pole 3" and yard.notes == "taken down, 2025"
    assert reg.removed == frozenset({0x4419B6000102})
    door = reg.get(0x4419B6000103)
    assert door is not None and door.status == "active" and door.replace_by is None
    assert reg.by_status() == {"active": 1, "scheduled": 1, "removed": 1}


def test_overdue_is_still_on_site_after_its_date() -> None:
    text = (
        "mac,status,replace_by\n"
        "44:19:b6:00:01:01,scheduled,2026-03-31\n"
        "44:19:b6:00:01:02,removed,2026-01-01\n"  # removed in time: not overdue
        "44:19:b6:00:01:03,active,2025-12-31\n"
        "44:19:b6:00:01:04,active,\n"
    )
    reg = AssetRegister.parse(text)
    assert [a.mac & 0xFF for a in reg.overdue(date(2026, 4, 1))] == [3, 1]  # earliest date first
    assert [a.mac & 0xFF for a in reg.overdue(date(2026, 3, 31))] == [3]  # due today is not late yet


def test_bad_macs_dates_statuses_and_columns_are_named_and_good_rows_kept() -> None:
    text = (
        "MAC,Name,Locaton,status,Replace By,colour\n"  # line 1: a misspelt and an unknown column
        "44:19:b6:00:01:01,Gate,x,scheduled,2026-03-31,red\n"  # 2: good
        "zz:19:b6:00:01:02,Bad,,active,,\n"  # 3: bad MAC: skipped
        "44:19:b6:00:01:03,Door,,decommissioned,31/12/2026,\n"  # 4: bad status and date: kept
        "\n"  # 5: blank
        "44-19-b6-00-01-01,Again,,,,\n"  # 6: duplicate: skipped
        "01:00:5e:00:00:01,Group,,,,\n"  # 7: multicast: skipped
        "44:19:b6:00:01:04,Cal,,actve,2026-02-30,\n"  # 8: typo status, impossible date: kept
        ",NoMac,,,,\n"  # 9: empty MAC: skipped
    )
    reg = AssetRegister.parse(text.encode(), "reg.csv")
    assert sorted(a.mac & 0xFF for a in reg) == [1, 3, 4]
    assert reg.rows == 7
    assert lines(reg) == [
        (1, None, False),
        (1, None, False),
        (3, "mac", True),
        (4, "status", False),
        (4, "replace_by", False),
        (6, "mac", True),
        (7, "mac", True),
        (8, "status", False),
        (8, "replace_by", False),
        (9, "mac", True),
    ]
    text_of = reg.describe_problems()
    assert text_of[0] == (
        "reg.csv: line 1: unknown column 'Locaton' (its values are ignored); did you mean 'location'? "
        "rename or remove it (known columns: mac, name, location, model, owner, status, replace_by, notes)"
    )
    assert "unknown column 'colour'" in text_of[1]
    assert "'zz:19:b6:00:01:02' is not a MAC address: the row is skipped" in text_of[2]
    assert "did you mean 'removed'?" in text_of[3]
    assert "write it as 2026-12-31 (YYYY-MM-DD)" in text_of[4]  # day first: 31 cannot be a month
    assert "listed again (first on line 2)" in text_of[5]
    assert "group (multicast) address" in text_of[6]
    assert "did you mean 'active'?" in text_of[7]
    assert "'2026-02-30' is not a day of the calendar" in text_of[8]
    assert "mac: is empty: the row is skipped" in text_of[9]
    door = reg.get(0x4419B6000103)
    assert door is not None and door.status == "active" and door.replace_by is None and door.name == "Door"
    first = reg.get(0x4419B6000101)
    assert first is not None and first.name == "Gate"  # the duplicate did not replace it


def test_an_ambiguous_day_month_date_is_not_guessed() -> None:
    reg = AssetRegister.parse("mac,replace_by\n44:19:b6:00:01:01,03/04/2026\n")
    assert len(reg) == 1
    assert "which of the first two numbers is the day cannot be told" in reg.describe_problems()[0]


def test_without_a_mac_column_no_row_is_read() -> None:
    reg = AssetRegister.parse("name,location\nGate,North\n", "reg.csv")
    assert len(reg) == 0
    assert reg.describe_problems() == [
        "reg.csv: line 1: has no 'mac' column, so no device can be read; the first line names the columns, "
        "e.g. mac,name,location,model,owner,status,replace_by,notes"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_register_says_so(text: str) -> None:
    reg = AssetRegister.parse(text, "reg.csv")
    assert len(reg) == 0
    assert [p.line for p in reg.problems] == [0]
    assert "is empty" in reg.problems[0].problem


def test_a_header_only_register_is_an_empty_site_without_problems() -> None:
    reg = AssetRegister.parse("mac,name,location,model,owner,status,replace_by,notes\n")
    assert len(reg) == 0 and reg.problems == () and reg.overdue(date(2030, 1, 1)) == []


def test_spreadsheet_exports_are_read() -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark; comma-decimal locales write ';'.
    data = "\ufeffmac;name;location\r\n44:19:b6:00:01:01;Gate;Nord, Tor 2\r\n".encode()
    reg = AssetRegister.parse(data)
    asset = reg.get(0x4419B6000101)
    assert reg.problems == () and asset is not None and asset.location == "Nord, Tor 2"


def test_text_that_is_not_utf8_is_named_and_still_read() -> None:
    data = "mac,name\n44:19:b6:00:01:01,Caf\xe9\n".encode("latin-1")
    reg = AssetRegister.parse(data, "reg.csv")
    assert len(reg) == 1
    assert [(p.line, "CSV UTF-8" in p.fix) for p in reg.problems] == [(2, True)]


def test_a_quoted_field_over_two_lines_keeps_the_line_numbers_right() -> None:
    text = 'mac,notes\n44:19:b6:00:01:01,"two\nlines"\nnot-a-mac,x\n'
    reg = AssetRegister.parse(text)
    assert len(reg) == 1
    assert [p.line for p in reg.problems] == [4]


def test_extra_fields_are_named() -> None:
    reg = AssetRegister.parse("mac,name\n44:19:b6:00:01:01,Gate,North gate\n")
    assert len(reg) == 1
    assert [p.line for p in reg.problems] == [2]
    assert "quote values that contain the delimiter" in reg.problems[0].fix


def test_comment_lines_are_skipped() -> None:
    reg = AssetRegister.parse("# site depot-7\nmac,name\n# removed last week:\n44:19:b6:00:01:01,Gate\n")
    assert reg.problems == () and len(reg) == 1 and reg.get(0x4419B6000101) is not None


def test_load_reads_the_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "register.csv"
    path.write_text(GOOD)
    assert len(AssetRegister.load(path)) == 3
    with pytest.raises(RegisterError, match="does not exist"):
        AssetRegister.load(tmp_path / "missing.csv")


def test_asset_to_ecs_carries_the_fields_people_read() -> None:
    reg = AssetRegister.parse(GOOD)
    gate = reg.get(0x4419B6000101)
    assert gate is not None
    assert gate.to_ecs() == {
        "status": "scheduled",
        "name": "Gate",
        "location": "North gate",
        "model": "DS-2CD2043",
        "owner": "Facilities",
        "replace_by": "2026-03-31",
    }
    yard = reg.get(0x4419B6000102)
    assert yard is not None and yard.status == REMOVED


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("44:19:B6:00:00:01", 0x4419B6000001),
        ("44-19-b6-00-00-01", 0x4419B6000001),
        ("4419.b600.0001", 0x4419B6000001),
        ("4419b6000001", 0x4419B6000001),
        (" 44:19:b6:00:00:01 ", 0x4419B6000001),
        ("44:19:b6:00:00", None),
        ("44:19-b6:00:00:01", None),
        ("44:19:b6:00:00:0g", None),
    ],
)
def test_parse_mac(text: str, mac: int | None) -> None:
    assert parse_mac(text) == mac
