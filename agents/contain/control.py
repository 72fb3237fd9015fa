"""Containment's changes, each under the lock and in the audit log: apply, remove, quarantine, release,
expire. The agent (agents/contain/agent.py) and `camwatch contain` (agents/contain/cli.py) both make
their changes through a :class:`Controller`, so they follow the same rules and leave the same records.

Safety, in the order it is checked:

- a plan that cannot be made (a never-block host the policy would cut off) is refused: nothing changes;
- `nft -c` must accept the script before it is loaded: a ruleset that cannot be proven to load is never
  loaded, and the previous one stays in force;
- the load is one nft transaction: when it fails, the previous ruleset is still in force;
- in dry-run mode nothing is loaded or changed in the kernel; the audit log says what would have been done;
- after `camwatch contain remove` the agent does not apply again (the removal would otherwise be undone
  at the next check) until `camwatch contain apply`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from agents.contain.audit import AuditLog, AuditRecord
from agents.contain.files import ContainmentFiles
from agents.contain.nft import Nft, NftError, TableState
from agents.contain.plan import ContainmentPlan
from agents.contain.quarantine import (
    QuarantineBook,
    QuarantineEntry,
    QuarantineSettings,
    load_book,
    save_book,
)
from agents.contain.render import (
    LearnedAddress,
    delete_elements,
    quarantine_elements,
    render_remove,
    render_ruleset,
)
from monitor.policy import IPAddress

__all__ = ["ApplyResult", "Controller"]

log = logging.getLogger(__name__)

MODES: Final = ("off", "dry-run", "enforce")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an apply did: ``outcome`` as the audit log says it, ``script`` what was (or would be) loaded."""

    outcome: str
    record: AuditRecord
    script: str = ""


class _NeverBlock:
    def __init__(self, plan: ContainmentPlan | None) -> None:
        self._nets = plan.never_block if plan is not None else ()

    def __contains__(self, ip: object) -> bool:
        return any(getattr(ip, "version", 0) == n.version and ip in n for n in self._nets)


class Controller:
    """One place that changes camwatch's table, its quarantine book and its audit log."""

    def __init__(
        self,
        files: ContainmentFiles,
        nft: Nft,
        audit: AuditLog,
        mode: str,
        quarantine: QuarantineSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        self.files = files
        self.nft = nft
        self.audit = audit
        self.mode = mode
        self.settings = quarantine
        self.clock = clock

    # -- the ruleset ------------------------------------------------------------------------------

    def apply(
        self,
        plan: ContainmentPlan,
        actor: str,
        reason: str,
        learned: Iterable[LearnedAddress] = (),
        *,
        check_only: bool | None = None,
    ) -> ApplyResult:
        """Load ``plan`` (enforce) or only check it (dry-run, or ``check_only``), carrying the quarantined
        addresses of the book and ``learned``. Never raises for nft's refusal: the outcome says it."""
        dry = self.mode != "enforce" if check_only is None else check_only
        with self.files.locked():
            book = self._book_with_expiry(actor)
            script = render_ruleset(plan, book.timed(self.clock()), learned)
            fields = {"mode": self.mode, "plan": plan.digest}
            try:
                self.nft.check(script)
            except NftError as exc:
                record = self.audit.new(
                    "apply",
                    "refused",
                    actor,
                    _because(f"nft -c refused the ruleset: {exc}", reason),
                    **fields,
                )
                log.error("containment: the ruleset was not loaded (nft -c refused it): %s", exc)
                return ApplyResult("refused", record, script)
            if dry:
                record = self.audit.new(
                    "apply",
                    "dry-run",
                    actor,
                    f"{reason}; checked with nft -c, not loaded",
                    **fields,
                )
                return ApplyResult("dry-run", record, script)
            try:
                self.nft.load(script)
            except NftError as exc:
                record = self.audit.new(
                    "apply",
                    "failed",
                    actor,
                    _because(f"nft failed, the previous ruleset stays: {exc}", reason),
                    **fields,
                )
                log.error("containment: loading the ruleset failed, the previous one stays: %s", exc)
                return ApplyResult("failed", record, script)
            self.files.clear_removed()
            record = self.audit.new("apply", "applied", actor, reason, **fields)
            log.info("containment: ruleset %s loaded (%s)", plan.digest, reason)
            return ApplyResult("applied", record, script)

    def remove(self, actor: str, reason: str) -> AuditRecord:
        """Delete camwatch's table (containment off, quarantines lifted) and note that it was removed on
        purpose, so the agent does not load it again until `camwatch contain apply`."""
        with self.files.locked():
            state = self.nft.table()
            try:
                self.nft.load(render_remove())
            except NftError as exc:
                return self.audit.new(
                    "remove", "failed", actor, _because(f"nft failed: {exc}", reason), mode=self.mode
                )
            self.files.write_removed(actor, self.clock())
            book = load_book(self.files.book)
            lifted = list(book.active.values())
            book.active.clear()
            self._save(book)
            for entry in lifted:
                self.audit.new(
                    "release",
                    "applied",
                    actor,
                    "containment removed",
                    device=entry.device,
                    addresses=tuple(map(str, entry.addresses)),
                    mode=self.mode,
                )
            outcome = "applied" if state is not None else "unchanged"
            return self.audit.new(
                "remove", outcome, actor, reason, mode=self.mode, plan=state.digest if state else None
            )

    # -- quarantine -------------------------------------------------------------------------------

    def quarantine(
        self,
        plan: ContainmentPlan | None,
        device: str,
        addresses: Iterable[IPAddress],
        actor: str,
        reason: str,
        *,
        rule: str | None = None,
        incident: str | None = None,
        automatic: bool,
        seconds: float | None = None,
    ) -> AuditRecord:
        """Quarantine ``device`` (its ``addresses``) for the escalated duration, or ``seconds``."""
        addrs = tuple(sorted(set(addresses), key=lambda a: (a.version, int(a))))
        fields = {
            "device": device,
            "addresses": tuple(map(str, addrs)),
            "rule": rule,
            "incident": incident,
            "mode": self.mode,
        }
        with self.files.locked():
            book = self._book_with_expiry(actor)
            now = self.clock()
            decision = book.decide(
                device, addrs, now, self.settings, _NeverBlock(plan), automatic=automatic, seconds=seconds
            )
            if decision.refused is not None:
                log.warning("containment: quarantine of %s refused: %s", device, decision.refused)
                return self.audit.new(
                    "quarantine", "refused", actor, _because(decision.refused, reason), **fields
                )
            until = now + decision.seconds
            timed = {"expires": until, "level": decision.level}
            if self.mode != "enforce":
                return self.audit.new("quarantine", "dry-run", actor, reason, **fields, **timed)
            try:
                state = self.nft.table()
                if state is None:
                    raise NftError("camwatch's table is not loaded (run `camwatch contain apply` first)")
                self.nft.load(quarantine_elements(addrs, decision.seconds))
            except NftError as exc:
                log.error("containment: quarantine of %s failed: %s", device, exc)
                return self.audit.new(
                    "quarantine", "failed", actor, _because(f"nft failed: {exc}", reason), **fields
                )
            book.add(
                QuarantineEntry(device, addrs, now, until, actor, reason, rule, incident, decision.level)
            )
            self._save(book)
            log.warning(
                "containment: %s (%s) quarantined until %s, level %d: %s",
                device,
                ", ".join(map(str, addrs)),
                _iso(until),
                decision.level,
                reason,
            )
            return self.audit.new("quarantine", "applied", actor, reason, **fields, **timed)

    def release(self, device: str, actor: str, reason: str) -> AuditRecord:
        """End ``device``'s quarantine now (a MAC or one of its addresses)."""
        with self.files.locked():
            book = self._book_with_expiry(actor)
            entry = book.find(device)
            if entry is None:
                return self.audit.new(
                    "release",
                    "refused",
                    actor,
                    _because("it is not quarantined", reason),
                    device=device,
                    mode=self.mode,
                )
            fields = {
                "device": entry.device,
                "addresses": tuple(map(str, entry.addresses)),
                "mode": self.mode,
            }
            if self.mode == "enforce" or self.nft.table() is not None:
                try:
                    self.nft.load(delete_elements("quarantine", entry.addresses))
                except NftError as exc:
                    return self.audit.new(
                        "release", "failed", actor, _because(f"nft failed: {exc}", reason), **fields
                    )
            book.release(entry.device)
            self._save(book)
            log.warning("containment: %s released (%s)", entry.device, reason)
            return self.audit.new("release", "applied", actor, reason, rule=entry.rule, **fields)

    def expire(self, actor: str = "agent") -> list[QuarantineEntry]:
        """Forget the quarantines whose time is up (the kernel dropped their elements already); each is
        written to the audit log."""
        with self.files.locked():
            book = load_book(self.files.book)
            before = dict(book.active)
            self._book_with_expiry(actor, book)
            return [entry for device, entry in before.items() if device not in book.active]

    def book(self) -> QuarantineBook:
        """The quarantine book as it is on disk (read without the lock: for reports)."""
        return load_book(self.files.book)

    def table(self) -> TableState | None:
        return self.nft.table()

    # -- helpers ----------------------------------------------------------------------------------

    def _book_with_expiry(self, actor: str, book: QuarantineBook | None = None) -> QuarantineBook:
        """The book without the entries whose time is up, each written to the audit log as expired."""
        book = book if book is not None else load_book(self.files.book)
        expired = book.expire(self.clock())
        if expired:
            self._save(book)
        for entry in expired:
            log.warning("containment: quarantine of %s ended (expired)", entry.device)
            self.audit.new(
                "expire",
                "applied",
                "expiry" if actor == "agent" else actor,
                f"quarantine ended after {entry.until - entry.since:.0f} s",
                device=entry.device,
                addresses=tuple(map(str, entry.addresses)),
                rule=entry.rule,
                incident=entry.incident,
                expires=entry.until,
                level=entry.level,
                mode=self.mode,
            )
        return book

    def _save(self, book: QuarantineBook) -> None:
        created = not self.files.book.exists()
        save_book(self.files.book, book)
        if created:
            self.files.hand_over(self.files.book)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _because(cause: str, reason: str) -> str:
    """An audit reason for a change that did not happen: the cause first, then why it was asked for (the
    operator's ``--reason``, the alert, the agent's trigger), so that neither is taken for the other."""
    return f"{cause} (reason given: {reason})"
