"""``egress.unexpected_destination``: a watched device opens a flow outside its allowlist.

The allowlist is the policy's (``SitePolicy.egress_allowed``): addresses, and DNS names. A name rule
covers an address when the device itself resolved it from that name: the rule keeps, per device, the
names of the DNS answers the device received (``DnsAnswer``), each good for its TTL plus the policy's
``name_grace`` (``monitor/names.py``). A flow's TLS server name (SNI) counts too: when neither the
address nor a resolved name allows a new flow but a name rule lists its port, the flow is held for
:data:`NAME_WAIT_NS` of capture time, for its ClientHello; the alert goes out then unless the server
name is allowed (its timestamp stays the flow's start). Policies without name rules are judged on the
flow's first packet, as before.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.decode import PROTO_SCTP, PROTO_TCP, PROTO_UDP
from monitor.devices import Device
from monitor.events import DnsAnswer, Event, FlowStarted, TlsServerName
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.names import ResolvedNames
from monitor.rules import RuleModule, describe
from monitor.site import Site
from monitor.vendors.oui import format_mac

EGRESS_UNEXPECTED = Rule("egress.unexpected_destination", "Camera connected to an unexpected destination", 3)
RULES = (EGRESS_UNEXPECTED,)

_PORTED = (PROTO_TCP, PROTO_UDP, PROTO_SCTP)
#: How long a new flow waits for its TLS server name when only a name could allow it: a ClientHello
#: follows the handshake within a round trip; 3 s covers slow links (satellite, a busy mobile uplink).
NAME_WAIT_NS = 3_000_000_000
#: Flows held at once for their server name; beyond it a flow is judged at once (a flood of new flows
#: to name-ruled ports must not grow memory).
MAX_WAITING = 10_000


@dataclass(frozen=True, slots=True)
class Opened:
    """A flow opened by a watched device, as the egress rule sees it: the opener and the destination."""

    flow: Flow
    ip: str
    port: int
    mac: int
    device: Device | None
    dst_ip: str
    dst_port: int
    transport: str

    @property
    def key(self) -> Hashable:
        """The device's identity for its DNS answers: its MAC, or its address when no MAC is known."""
        return self.mac or self.ip


def opened_by_watched(site: Site, flow: Flow) -> Opened | None:
    """The flow as its opener's egress, or None when the opener is not watched."""
    opener_is_src = flow.opener_is_src
    if opener_is_src:
        (o_ip, o_port), (r_ip, r_port) = flow.src, flow.dst
    else:
        (o_ip, o_port), (r_ip, r_port) = flow.dst, flow.src
    # The device decides, not the address it left from: a camera watched because its IPv4 address is in a
    # monitored network is watched from its global IPv6 address too (the site model's Site.watched, as the
    # DNS, P2P and UPnP rules ask it).
    watched = site.watched(flow, opener_is_src)
    if watched is None:
        return None
    o_mac = site.side_mac(flow, opener_is_src)
    opener = site.inventory.get(o_mac) if o_mac else None
    return Opened(flow, o_ip, o_port, o_mac, opener, r_ip, r_port, transport_name(flow.proto))


def answer_key(site: Site, event: DnsAnswer) -> Hashable | None:
    """The identity of the device that received a DNS answer, if it is watched (else None)."""
    flow = event.flow
    receiver_is_src = not event.from_src
    if site.watched(flow, receiver_is_src) is None:
        return None
    # The same identity as Opened.key: the host's MAC (never a router's), else its address.
    return site.side_mac(flow, receiver_is_src) or (flow.src if receiver_is_src else flow.dst)[0]


@dataclass(frozen=True, slots=True)
class NameWaitOver(Event):
    """A flow held for its TLS server name has waited long enough."""

    flow: Flow


class EgressRule(RuleModule):
    """Judged on each flow's first packet (or its TLS server name, for name rules): who opened it, and
    where to."""

    consumes = (FlowStarted, DnsAnswer, TlsServerName, NameWaitOver)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        policy = site.policy
        #: What each watched device resolved (only when the policy has name rules: nothing to match else).
        self.names: ResolvedNames | None = (
            ResolvedNames(policy.name_grace_ns) if policy.has_name_rules else None
        )
        site.resolved_names = self.names  # the other rules match name allow rules against them too
        # Flows waiting for their TLS server name -> the server name seen so far.
        self._waiting: dict[Flow, str | None] = {}
        self.not_waited = 0  # flows judged at once because MAX_WAITING were waiting for their name

    def evictions(self) -> dict[str, int]:
        return {
            "resolved_names": self.names.evicted if self.names is not None else 0,
            "name_waits": self.not_waited,
        }

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, FlowStarted):
            return self._started(event.flow)
        if isinstance(event, DnsAnswer):
            self._answer(event)
            return ()
        if isinstance(event, TlsServerName):
            self._server_name(event)
            return ()
        if isinstance(event, NameWaitOver):
            return self._wait_over(event.flow)
        return ()

    def _started(self, flow: Flow) -> Sequence[Alert]:
        site = self.site
        opened = opened_by_watched(site, flow)
        if opened is None:
            return ()
        policy = site.policy
        allowed, _reason = policy.egress_allowed(opened.dst_ip, opened.dst_port, opened.transport)
        if allowed:
            return ()
        if self.names is not None:
            names = self.names.names_for(opened.key, opened.dst_ip, flow.start_ns)
            if (
                names
                and policy.egress_allowed(opened.dst_ip, opened.dst_port, opened.transport, names=names)[0]
            ):
                return ()
            if flow.proto in (PROTO_TCP, PROTO_UDP) and policy.names_may_allow(
                opened.dst_port, opened.transport
            ):
                if len(self._waiting) < MAX_WAITING:
                    # Only its TLS server name could still allow it: wait for the ClientHello.
                    self._waiting[flow] = None
                    site.schedule(NameWaitOver(flow.start_ns + NAME_WAIT_NS, flow))
                    return ()
                self.not_waited += 1
        return (egress_alert(site, opened),)

    def _answer(self, event: DnsAnswer) -> None:
        if self.names is None:
            return
        key = answer_key(self.site, event)
        if key is None:
            return
        for resolved in event.addresses:
            self.names.add(key, resolved.address, resolved.names, resolved.ttl, event.ts_ns)

    def _server_name(self, event: TlsServerName) -> None:
        flow = event.flow
        if flow not in self._waiting or event.from_src != flow.opener_is_src:
            return
        opened = opened_by_watched(self.site, flow)
        if opened is None:
            return
        allowed, _ = self.site.policy.egress_allowed(
            opened.dst_ip, opened.dst_port, opened.transport, names=(event.name,)
        )
        if allowed:
            del self._waiting[flow]
        else:
            self._waiting[flow] = event.name

    def _wait_over(self, flow: Flow) -> Sequence[Alert]:
        if flow not in self._waiting:
            return ()  # its server name allowed it
        server_name = self._waiting.pop(flow)
        opened = opened_by_watched(self.site, flow)
        if opened is None:
            return ()
        return (egress_alert(self.site, opened, server_name),)


def egress_alert(site: Site, opened: Opened, server_name: str | None = None) -> Alert:
    """``egress.unexpected_destination`` for a flow its watched opener should not have opened."""
    flow = opened.flow
    ported = flow.proto in _PORTED
    mac = format_mac(opened.mac) if opened.mac else None
    transport, r_ip, r_port = opened.transport, opened.dst_ip, opened.dst_port
    port_txt = f"{transport}/{r_port}" if ported else transport
    domain = flow.domain or server_name  # the DNS name from before the flow, else the TLS server name
    dest = r_ip if domain is None else f"{r_ip} ({domain})"
    message = (
        f"{describe(opened.device, opened.ip, opened.mac)} opened {port_txt} to {dest}, which is outside its "
        f"allowlist: check whether this device may reach that destination and block it at the site firewall "
        f"if not."
    )
    return Alert(
        rule=EGRESS_UNEXPECTED,
        timestamp_ns=flow.start_ns,
        event_id=incident_id(EGRESS_UNEXPECTED.id, site.observer, mac or opened.ip, r_ip, r_port, transport),
        observer=site.observer,
        message=message,
        source=Endpoint(opened.ip, opened.port if ported else None, mac),
        destination=Endpoint(r_ip, r_port if ported else None, None, domain),
        transport=transport,
        # Judged on the flow's first packet: its protocol is not known yet (and must not depend on
        # how much of the flow the engine had seen when it ran).
        protocol=None,
        community_id=flow.community_id(),
        device_id=mac,
        manufacturer=opened.device.manufacturer if opened.device is not None else None,
    )
