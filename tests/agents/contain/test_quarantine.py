"""The quarantine book: escalation, the cap, never-block hosts, expiry, and its file."""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import pytest

from agents.contain.quarantine import (
    QuarantineBook,
    QuarantineEntry,
    QuarantineSettings,
    load_book,
    save_book,
)

ip = ipaddress.ip_address
HOUR = 3600.0
SETTINGS = QuarantineSettings(durations=(HOUR, 6 * HOUR, 24 * HOUR), window=7 * 24 * HOUR, max_devices=2)
NEVER = {ip("10.20.0.2")}


def quarantine(book: QuarantineBook, device: str, address: str, now: float, automatic: bool = True) -> float:
    decision = book.decide(device, [ip(address)], now, SETTINGS, NEVER, automatic=automatic)
    assert decision.refused is None, decision.refused
    book.add(
        QuarantineEntry(
            device, (ip(address),), now, now + decision.seconds, "agent", "r", level=decision.level
        )
    )
    return decision.seconds


def test_durations_escalate_within_the_window_and_start_again_after_it() -> None:
    book = QuarantineBook()
    t = 1_000_000.0
    assert quarantine(book, "cam1", "10.20.0.11", t) == HOUR
    book.expire(t + HOUR)
    assert quarantine(book, "cam1", "10.20.0.11", t + 2 * HOUR) == 6 * HOUR
    book.expire(t + 9 * HOUR)
    assert quarantine(book, "cam1", "10.20.0.11", t + 10 * HOUR) == 24 * HOUR
    book.expire(t + 40 * HOUR)
    assert quarantine(book, "cam1", "10.20.0.11", t + 41 * HOUR) == 24 * HOUR  # the last one repeats
    assert book.active["cam1"].level == 4
    book.expire(t + 100 * HOUR)
    # Another device starts at the first step; so does this one once its quarantines are out of the window.
    assert quarantine(book, "cam2", "10.20.0.12", t + 100 * HOUR) == HOUR
    assert quarantine(book, "cam1", "10.20.0.11", t + 41 * HOUR + 8 * 24 * HOUR) == HOUR


def test_the_cap_counts_devices_quarantined_now() -> None:
    book = QuarantineBook()
    quarantine(book, "cam1", "10.20.0.11", 0)
    quarantine(book, "cam2", "10.20.0.12", 0)
    refused = book.decide("cam3", [ip("10.20.0.13")], 10, SETTINGS, NEVER, automatic=True)
    assert refused.refused is not None and "max_devices: 2" in refused.refused
    # An entry whose time is up does not count; an operator replacing an entry does not add one.
    assert book.decide("cam3", [ip("10.20.0.13")], HOUR + 1, SETTINGS, NEVER, automatic=True).refused is None
    assert (
        book.decide("cam1", [ip("10.20.0.11")], 10, SETTINGS, NEVER, automatic=False, seconds=60).seconds
        == 60
    )


def test_never_block_hosts_repeats_and_unknown_addresses_are_refused() -> None:
    book = QuarantineBook()
    never = book.decide("rec", [ip("10.20.0.2")], 0, SETTINGS, NEVER, automatic=False)
    assert never.refused is not None and "never-block" in never.refused
    assert (
        book.decide("x", [], 0, SETTINGS, NEVER, automatic=True).refused
        == "no address of the device is known"
    )
    quarantine(book, "cam1", "10.20.0.11", 0)
    again = book.decide("cam1", [ip("10.20.0.11")], 10, SETTINGS, NEVER, automatic=True)
    assert again.refused is not None and again.refused.startswith(
        "already quarantined until 1970-01-01T01:00:00Z"
    )


def test_find_release_and_expire() -> None:
    book = QuarantineBook()
    quarantine(book, "44-19-b6-00-00-01", "10.20.0.11", 0)
    assert book.find("44:19:B6:00:00:01") is book.find("10.20.0.11") is not None
    assert book.find("10.20.0.99") is None and book.find("not a device") is None
    quarantine(book, "ip:10.20.0.50", "10.20.0.50", 0)  # a device known by its address only
    assert book.release("ip:10.20.0.50") is not None and book.find("10.20.0.50") is None
    assert [str(t.address) for t in book.timed(10)] == ["10.20.0.11"] and book.timed(10)[
        0
    ].remaining == HOUR - 10
    assert book.expire(HOUR - 1) == [] and len(book.expire(HOUR)) == 1
    quarantine(book, "44-19-b6-00-00-01", "10.20.0.11", 2 * HOUR)
    released = book.release("10.20.0.11")
    assert released is not None and book.active == {} and len(book.history["44-19-b6-00-00-01"]) == 2


def test_the_book_file_round_trips_and_a_damaged_one_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "quarantine.json"
    assert load_book(path).active == {}
    book = QuarantineBook()
    quarantine(book, "cam1", "10.20.0.11", 5)
    save_book(path, book)
    again = load_book(path)
    assert again.active == book.active and again.history == book.history
    data = json.loads(path.read_text())
    data["active"][0]["addresses"] = "10.20.0.11"
    path.write_text(json.dumps(data))
    assert load_book(path).active == {}
    assert not path.exists() and len(list(tmp_path.glob("quarantine.json.damaged-*"))) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "not a version 1 quarantine book"),
        ({"active": {}}, "'active' must be a list"),
        ({"active": [{"device": 1}]}, r"active\[0\]: device: 1 is not valid"),
    ],
)
def test_parse_says_what_is_wrong(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QuarantineBook.parse({"version": 1, "active": [], "history": {}, **change})


def test_a_refusal_says_its_cause_and_keeps_the_operators_reason_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cause of a refusal is where the command line says "refused:"; the --reason given is labelled
    (it once came first, and read as the cause). Neither refusal reaches nft."""
    from agents.contain.audit import AuditLog
    from agents.contain.cli import EXIT_REFUSED, _report
    from agents.contain.control import Controller
    from agents.contain.files import ContainmentFiles
    from agents.contain.nft import Nft

    files = ContainmentFiles.at(tmp_path)
    controller = Controller(files, Nft(("false",)), AuditLog(files), "enforce", SETTINGS)
    record = controller.release("44:19:b6:00:01:01", "cli:op", "done")
    assert (record.outcome, record.reason) == ("refused", "it is not quarantined (reason given: done)")
    assert _report(record, io.StringIO()) == EXIT_REFUSED
    assert capsys.readouterr().err == (
        "camwatch: release 44:19:b6:00:01:01 refused: it is not quarantined (reason given: done)\n"
    )
    record = controller.quarantine(None, "cam9", [], "cli:op", "looks odd", automatic=False)
    assert record.reason == "no address of the device is known (reason given: looks odd)"
    _report(record, io.StringIO())
    assert capsys.readouterr().err == (
        "camwatch: quarantine cam9 refused: no address of the device is known (reason given: looks odd)\n"
    )


def test_a_dry_run_quarantine_says_dry_run_once(tmp_path: Path) -> None:
    from agents.contain.audit import AuditLog
    from agents.contain.cli import EXIT_OK, _report
    from agents.contain.control import Controller
    from agents.contain.files import ContainmentFiles
    from agents.contain.nft import Nft

    files = ContainmentFiles.at(tmp_path)
    controller = Controller(files, Nft(("false",)), AuditLog(files), "dry-run", SETTINGS, clock=lambda: 0.0)
    record = controller.quarantine(None, "cam1", [ip("10.20.0.11")], "cli:op", "test", automatic=False)
    out = io.StringIO()
    assert _report(record, out) == EXIT_OK
    assert out.getvalue() == "quarantine cam1 dry-run, would last until 1970-01-01T01:00:00Z: test\n"
