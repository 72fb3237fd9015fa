"""``auth.bruteforce``: many failed logins from one client to a watched device in a short time.

A failed login is an answer the analyzers read as ``failure`` (``monitor/analyzers/logins.py``): an
HTTP or RTSP 401/403 to a request that carried credentials, an ONVIF ``NotAuthorized`` fault to a
request with a WS-Security token, a Dahua JSON-RPC login answered ``"result": false`` at its second
step. A first 401 asking for credentials, a Digest nonce gone stale, or the first step of a Dahua
login are challenges, not failures: a recorder's normal challenge-response never counts.

``THRESHOLD`` failures within ``WINDOW_NS`` make a guessing burst; the alert is held ``HOLD_NS`` more
so that it carries the burst's count (and whether a login from that client then succeeded), once per
client and device (the gate's ``event.id``). Per-pair state is bounded (``MAX_PAIRS``, least recently
used forgotten first, counted): a flood of spoofed clients cannot grow it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from monitor.alerts import HIGH, NS, Alert, Rule
from monitor.analyzers.logins import FAILURE, SUCCESS
from monitor.events import AppResponse, Event
from monitor.evidence import Evidence, combine, snapshot
from monitor.flows import Flow
from monitor.rules import RuleModule, describe
from monitor.rules._common import Bounded, carried, peer_alert, protocol_name
from monitor.site import Site, Watched

AUTH_BRUTEFORCE = Rule(
    "auth.bruteforce",
    "Password guessing against a watched device",
    HIGH,
    ("authentication", "network"),
    ("start",),
)
RULES = (AUTH_BRUTEFORCE,)

THRESHOLD: Final = 10
WINDOW_NS: Final = 60 * NS
HOLD_NS: Final = 10 * NS
# A pair quiet this long is forgotten: the next failures are a new attack, judged afresh.
QUIET_NS: Final = 3600 * NS
MAX_PAIRS: Final = 4096
MAX_ACCOUNTS: Final = 8
EVIDENCE_FLOWS: Final = 4


@dataclass(slots=True)
class _Pair:
    """One client's failures against one device."""

    recent: deque[int] = field(default_factory=lambda: deque(maxlen=THRESHOLD))
    total: int = 0
    first_ns: int = 0
    last_ns: int = 0
    accounts: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    flows: deque[tuple[Flow, int]] = field(default_factory=lambda: deque(maxlen=EVIDENCE_FLOWS))
    burst_ns: int | None = None  # when the burst crossed the threshold (the alert is due HOLD_NS later)
    reported: bool = False
    succeeded: str | None = None  # an account that then logged in
    last: AppResponse | None = None
    device: Watched | None = None


@dataclass(frozen=True, slots=True)
class ReportBruteforce(Event):
    """Time to report the burst of ``key`` (device key, client address)."""

    key: tuple[str, str]


class BruteforceRule(RuleModule):
    """Counts failed logins per client and device; reports a burst once, with its count."""

    consumes = (AppResponse, ReportBruteforce)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.pairs: Bounded[tuple[str, str], _Pair] = Bounded(MAX_PAIRS)

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, AppResponse):
            self._answer(event)
            return ()
        if isinstance(event, ReportBruteforce):
            return self._report(event.key)
        return ()

    def _answer(self, resp: AppResponse) -> None:
        if resp.auth not in (FAILURE, SUCCESS):
            return
        flow = resp.flow
        device = self.site.watched(flow, resp.from_src)
        if device is None:
            return
        cam_ip = (flow.src if resp.from_src else flow.dst)[0]
        client = (flow.dst if resp.from_src else flow.src)[0]
        key = (device.key(cam_ip), client)
        pair = self.pairs.get(key)
        request = resp.request
        account = request.login.account if request is not None and request.login is not None else None
        if resp.auth == SUCCESS:
            if pair is not None and pair.burst_ns is not None and pair.succeeded is None:
                pair.succeeded = account or "?"
            return
        if pair is not None and resp.ts_ns - pair.last_ns > QUIET_NS:
            pair = None  # a new attack after a quiet hour: judged afresh (the gate holds back a repeat)
        if pair is None:
            pair = _Pair(first_ns=resp.ts_ns)
            self.pairs.put(key, pair)
        pair.total += 1
        pair.last_ns = resp.ts_ns
        pair.recent.append(resp.ts_ns)
        pair.flows.append((flow, resp.ts_ns))
        pair.last, pair.device = resp, device
        if account and account not in pair.accounts and len(pair.accounts) < MAX_ACCOUNTS:
            pair.accounts.append(account)
        protocol = carried(resp.protocol, flow)
        if protocol not in pair.protocols:
            pair.protocols.append(protocol)
        if (
            pair.burst_ns is None
            and len(pair.recent) == THRESHOLD
            and pair.recent[-1] - pair.recent[0] <= WINDOW_NS
        ):
            pair.burst_ns = resp.ts_ns
            pair.first_ns = pair.recent[0]
            pair.total = THRESHOLD  # the burst is counted from its first failure in the window
            self.site.schedule(ReportBruteforce(resp.ts_ns + HOLD_NS, key))

    def _report(self, key: tuple[str, str]) -> Sequence[Alert]:
        pair = self.pairs.get(key)
        if pair is None or pair.reported or pair.last is None or pair.device is None:
            return ()  # forgotten under a flood of clients, or already said
        pair.reported = True
        resp = pair.last
        flow = resp.flow
        device = pair.device
        cam_ip, client = (flow.src if resp.from_src else flow.dst)[0], key[1]
        seconds = (pair.last_ns - pair.first_ns) / NS
        accounts = ", ".join(repr(a) for a in pair.accounts) or "accounts not visible"
        protocols = ", ".join(protocol_name(p) for p in pair.protocols)
        said = (
            f"then a login as {pair.succeeded!r} succeeded: treat the device as compromised and change its "
            "passwords"
            if pair.succeeded is not None
            else "none succeeded so far"
        )
        who = describe(device.device, cam_ip, device.mac)
        if self.site.policy.is_viewer(client) and len(pair.accounts) <= 1:
            # The recorder retrying one account: a password changed on the device and not on the recorder is
            # the usual cause; blocking it would stop the recording.
            then = f"; then a login as {pair.succeeded!r} succeeded" if pair.succeeded is not None else ""
            message = (
                f"{client}, the site's recorder/VMS (an allowed viewer), failed to log in to {who} "
                f"{pair.total} times in {seconds:.0f} s over {protocols} ({accounts}){then}: its stored "
                "password for the device is probably out of date (was the device's password changed?); "
                "update it on the recorder. If nobody changed it, check the recorder: it may be used to "
                "guess passwords."
            )
        else:
            message = (
                f"{client} failed to log in to {who} {pair.total} times in {seconds:.0f} s over {protocols} "
                f"({accounts}): password guessing; {said}. Block {client} and make sure the device does not "
                "use a default or weak password."
            )
        fields: tuple[tuple[str, Any], ...] = (
            ("event.outcome", SUCCESS if pair.succeeded is not None else FAILURE),
            (
                "camwatch.bruteforce",
                {
                    "failures": pair.total,
                    "seconds": round(seconds, 3),
                    "accounts": list(pair.accounts),
                    "protocols": list(pair.protocols),
                },
            ),
        )
        parts: list[Evidence | None] = [snapshot(f, ts) for f, ts in pair.flows]
        return (
            peer_alert(
                AUTH_BRUTEFORCE,
                flow,
                not resp.from_src,
                device,
                self.site.observer,
                pair.burst_ns + HOLD_NS if pair.burst_ns is not None else resp.ts_ns,
                message,
                (client,),
                fields=fields + ((("user.name", pair.accounts[0]),) if pair.accounts else ()),
                evidence=combine(parts),
                start_ns=pair.first_ns,
            ),
        )
