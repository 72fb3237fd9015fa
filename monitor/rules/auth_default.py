"""``auth.default_credentials``: a login to a watched device uses the vendor's factory password.

Only a password sent in cleartext can be checked: HTTP or RTSP ``Basic``, an ONVIF ``PasswordText``
token, a Dahua ``Plain`` JSON-RPC login. The analyzers compare it with the vendors' factory passwords
(``monitor/vendors/data/default_credentials.yaml``, salted hashes) and keep only which entry matched
(``monitor/analyzers/logins.py``): the password, its encoding and the ``Authorization`` header are in no
event, alert, log line or file (the evidence pcap has them blanked).

The alert waits for the device's answer (at most ``HOLD_NS``): accepted, the device still has its
factory password (change it now); refused, someone tried it (who?). One alert per device, client and
factory default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from monitor.alerts import HIGH, NS, Alert, Rule
from monitor.analyzers.logins import FAILURE, SUCCESS
from monitor.events import AppRequest, AppResponse, Event
from monitor.evidence import snapshot
from monitor.rules import RuleModule, describe
from monitor.rules._common import Bounded, carried, peer_alert, protocol_name
from monitor.site import Site, Watched

DEFAULT_CREDENTIALS = Rule(
    "auth.default_credentials",
    "Login to a watched device with the vendor's factory password",
    HIGH,
    ("authentication", "network"),
    ("info",),
)
RULES = (DEFAULT_CREDENTIALS,)

HOLD_NS: Final = 5 * NS
MAX_PENDING: Final = 4096


@dataclass(slots=True)
class _Login:
    request: AppRequest
    device: Watched


@dataclass(frozen=True, slots=True)
class DecideDefault(Event):
    """Time to report the factory-password logins whose answer did not come."""


class DefaultCredentialsRule(RuleModule):
    """Reports each login with a factory password, with what the device answered."""

    consumes = (AppRequest, AppResponse, DecideDefault)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._pending: Bounded[tuple[int, int], _Login] = Bounded(MAX_PENDING)

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, AppRequest):
            login = event.login
            if login is None or login.default is None:
                return ()
            device = self.site.watched(event.flow, not event.from_src)
            if device is None:
                return ()
            self._pending.put((id(event.flow), event.seq), _Login(event, device))
            self.site.schedule(DecideDefault(event.ts_ns + HOLD_NS + 1))
            return ()
        if isinstance(event, AppResponse):
            request = event.request
            if request is None:
                return ()
            pending = self._pending.pop((id(request.flow), request.seq))
            if pending is None:
                return ()
            return (self._alert(pending, event.auth, event.ts_ns),)
        if isinstance(event, DecideDefault):
            due = [(k, p) for k, p in self._pending.items() if p.request.ts_ns + HOLD_NS < event.ts_ns]
            for key, _ in due:
                self._pending.pop(key)
            return [self._alert(p, None, p.request.ts_ns + HOLD_NS) for _, p in due]
        return ()

    def _alert(self, pending: _Login, auth: str | None, ts_ns: int) -> Alert:
        req, device = pending.request, pending.device
        login = req.login
        assert login is not None and login.default is not None
        default = login.default
        flow = req.flow
        client = (flow.src if req.from_src else flow.dst)[0]
        cam_ip = (flow.dst if req.from_src else flow.src)[0]
        outcome = {SUCCESS: "success", FAILURE: "failure"}.get(auth or "", "unknown")
        who = describe(device.device, cam_ip, device.mac)
        account = login.account or default.account
        maker = device.device.manufacturer if device.device is not None else None
        # Another vendor's factory password (admin/12345 on a Dahua): a well-known default, weak, but not
        # this device's own factory setting.
        vendor = default.vendor.lower()
        own = maker is None or vendor in maker.lower() or maker.lower() in vendor
        which = (
            f"the vendor's factory password ({default.description})"
            if own
            else f"a well-known default password, another vendor's ({default.description})"
        )
        head = (
            f"{client} logged in to {who} as {account!r} with {which} over "
            f"{protocol_name(carried(req.protocol, flow))} {login.scheme}"
        )
        if outcome == "success":
            kept = "it still has its factory password" if own else "its password is a well-known default"
            message = (
                f"{head}, and the device accepted it: {kept}. Change it now, and check what {client} did."
            )
        elif outcome == "failure":
            message = (
                f"{head}, and the device refused it: someone is trying factory passwords; check who {client} "
                "is and block it."
            )
        else:
            message = (
                f"{head}; the device's answer was not seen. Change the password if it is still the factory "
                f"one, and check who {client} is."
            )
        fields = (
            ("event.outcome", outcome),
            ("user.name", account),
            (
                "camwatch.default_credential",
                {"id": default.id, "vendor": default.vendor, "description": default.description,
                 "source": default.source, "scheme": login.scheme},
            ),
        )  # fmt: skip
        return peer_alert(
            DEFAULT_CREDENTIALS,
            flow,
            req.from_src,
            device,
            self.site.observer,
            ts_ns,
            message,
            (client, default.id),
            protocol=req.protocol,
            fields=fields,
            evidence=snapshot(flow, ts_ns),
            start_ns=req.ts_ns,
        )
