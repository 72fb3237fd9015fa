"""Device inventory keyed by MAC address, with vendor attribution and its evidence (docs/design.md §4.4)."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from monitor.alerts import iso_timestamp
from monitor.iana import LOCAL_NETWORKS
from monitor.vendors.oui import VendorTable, format_mac

MAX_IPS = 16
MAX_PEERS = 1024
MAX_EVIDENCE = 64
# A device's peers are a tuple up to this many (most devices have one or two: 56 to 72 bytes where a set was
# 216), a set beyond.
FEW_PEERS = 8
# The OUI evidence of this many vendors is kept, one object for all their devices (emptied beyond).
MAX_OUI_EVIDENCE = 4096
_NO_PROTOCOLS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: str
    detail: str
    ip: str | None = field(default=None, compare=False)  # the address the evidence was sent from


# How much an attribution is worth: a later signal replaces the vendor only when it is stronger.
STRENGTH_NONE = 0
STRENGTH_OUI = 1
STRENGTH_BANNER = 2  # HTTP/RTSP/SSDP banners, realms, certificates, DHCP vendor class
STRENGTH_DISCOVERY = 3  # the device describing itself: SADP, DHIP, WS-Discovery
DISCOVERY_KINDS = frozenset({"sadp", "dhip", "wsd"})


class Device:
    """What the site knows of one MAC address."""

    __slots__ = (
        "announced",
        "evidence",
        "firmware",
        "first_seen_ns",
        "ips",
        "last_seen_ns",
        "mac",
        "manufacturer",
        "model",
        "peers",
        "protocols",
        "router",
        "serial",
        "vendor",
        "vendor_strength",
        "watched",
    )

    def __init__(self, mac: int, ts: int) -> None:
        self.mac = mac
        self.first_seen_ns = ts
        self.last_seen_ns = ts
        self.ips: list[str] = []
        self.vendor: str | None = None
        self.manufacturer: str | None = None
        self.vendor_strength = STRENGTH_NONE
        # A router forwards other hosts' packets: its MAC is no other device's identity.
        self.router = False
        self.watched = False
        self.announced = False
        self.evidence: list[Evidence] = []
        self.model: str | None = None
        self.firmware: str | None = None
        self.serial: str | None = None
        # Read as collections; written through add_protocol and add_peer, which give the device its own set
        # when it needs one (most devices speak no protocol the analyzers name, and have one or two peers).
        self.protocols: frozenset[str] | set[str] = _NO_PROTOCOLS
        self.peers: tuple[str, ...] | set[str] = ()

    @property
    def mac_str(self) -> str:
        return format_mac(self.mac)

    def add_evidence(self, kind: str, detail: str, ip: str | None = None) -> None:
        self.keep_evidence(Evidence(kind, detail, ip))

    def keep_evidence(self, ev: Evidence) -> None:
        if ev not in self.evidence and len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(ev)

    def add_protocol(self, name: str) -> None:
        protocols = self.protocols
        if name not in protocols:
            if isinstance(protocols, frozenset):
                self.protocols = {name}
            else:
                protocols.add(name)

    def add_peer(self, ip: str) -> None:
        """Note an address the device exchanged traffic with (at most MAX_PEERS)."""
        peers = self.peers
        if isinstance(peers, set):
            if len(peers) < MAX_PEERS:
                peers.add(ip)
        elif ip not in peers:
            self.peers = (*peers, ip) if len(peers) < FEW_PEERS else {*peers, ip}

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "mac": self.mac_str,
            "ips": list(self.ips),
            "vendor": self.vendor,
            "manufacturer": self.manufacturer,
            "watched": self.watched,
            "evidence": [{"kind": e.kind, "detail": e.detail} for e in self.evidence],
        }
        if self.router:
            rec["router"] = True
        for name in ("model", "firmware", "serial"):
            value = getattr(self, name)
            if value is not None:
                rec[name] = value
        rec["first_seen"] = iso_timestamp(self.first_seen_ns)
        rec["last_seen"] = iso_timestamp(self.last_seen_ns)
        rec["protocols"] = sorted(self.protocols)
        rec["peers"] = len(self.peers)
        return rec


def is_unicast_mac(mac: int) -> bool:
    """A real station address: 48 bits, not zero, not group (multicast/broadcast)."""
    return 0 < mac < 1 << 48 and not (mac >> 40) & 0x01


_LOCAL_NETS = tuple(ipaddress.ip_network(n) for n in LOCAL_NETWORKS)


@lru_cache(maxsize=65_536)
def is_local_ip(ip: str) -> bool:
    """An address a station can own on the site (private, shared, link-local, ULA)."""
    addr = ipaddress.ip_address(ip)
    return any(addr in net for net in _LOCAL_NETS if net.version == addr.version)


_LOCALLY_ADMINISTERED = Evidence("oui", "locally administered address: no vendor from the MAC")


class Inventory:
    """Devices by MAC, bounded: a flood of spoofed MACs evicts the least recently seen."""

    def __init__(self, vendors: VendorTable, max_devices: int = 50_000) -> None:
        self._vendors = vendors
        self._max = max_devices
        self._devices: OrderedDict[int, Device] = OrderedDict()
        self.evicted = 0
        # The OUI evidence by its detail: one (frozen) object for the devices of a vendor, where each had
        # its own and its own string (about 130 bytes a device).
        self._oui_evidence: dict[str, Evidence] = {}

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Any:
        return iter(self._devices.values())

    def get(self, mac: int) -> Device | None:
        return self._devices.get(mac)

    def observe(self, mac: int, ts: int) -> tuple[Device, bool]:
        """The device for `mac` (created and attributed by OUI if new) and whether it is new."""
        dev = self._devices.get(mac)
        if dev is not None:
            if ts > dev.last_seen_ns:
                dev.last_seen_ns = ts
            if ts < dev.first_seen_ns:
                dev.first_seen_ns = ts
            return dev, False
        dev = Device(mac, ts)
        self._attribute_by_oui(dev)
        self._devices[mac] = dev
        if len(self._devices) > self._max:
            self._devices.popitem(last=False)
            self.evicted += 1
        return dev, True

    def _attribute_by_oui(self, dev: Device) -> None:
        vendor = self._vendors.lookup(dev.mac)
        if vendor.key is not None or vendor.manufacturer is not None:
            dev.vendor = vendor.key
            dev.manufacturer = vendor.manufacturer
            dev.vendor_strength = STRENGTH_OUI
            dev.keep_evidence(self._oui(f"{vendor.registry_name or vendor.manufacturer} ({vendor.source})"))
        elif vendor.source == "locally-administered":
            dev.keep_evidence(_LOCALLY_ADMINISTERED)

    def _oui(self, detail: str) -> Evidence:
        memo = self._oui_evidence
        ev = memo.get(detail)
        if ev is None:
            if len(memo) >= MAX_OUI_EVIDENCE:
                memo.clear()
            ev = memo[detail] = Evidence("oui", detail)
        return ev

    def reattribute(self, dev: Device, keep: set[str]) -> None:
        """Start the device's attribution again from its MAC, keeping only the evidence sent from the
        addresses in ``keep`` (a device found to be a router had other hosts' evidence attached)."""
        kept = [e for e in dev.evidence if e.kind != "oui" and e.ip in keep]
        dev.evidence = []
        dev.vendor = dev.manufacturer = None
        dev.vendor_strength = STRENGTH_NONE
        dev.model = dev.firmware = dev.serial = None
        self._attribute_by_oui(dev)
        dev.evidence.extend(kept)

    def touch(self, mac: int, ts: int) -> None:
        dev = self._devices.get(mac)
        if dev is not None and ts > dev.last_seen_ns:
            dev.last_seen_ns = ts
            self._devices.move_to_end(mac)

    def add_ip(self, dev: Device, ip: str) -> bool:
        """Remember an address the device sends from (IPv4 or IPv6, private or public); True if new.

        At most ``MAX_IPS``, in the order first sent from: an IPv6 host takes a new temporary address a day
        (RFC 8981), so a full list forgets its oldest address (which comes back, as new, when used again)
        rather than refusing the one in use."""
        ips = dev.ips
        if ip in ips:
            return False
        if len(ips) >= MAX_IPS:
            del ips[0]
        ips.append(ip)
        return True

    def state(self) -> list[dict[str, Any]]:
        """Everything needed to resume after a restart (JSON-ready; times in ns)."""
        return [
            {
                "mac": d.mac,
                "first_seen_ns": d.first_seen_ns,
                "last_seen_ns": d.last_seen_ns,
                "ips": list(d.ips),
                "vendor": d.vendor,
                "manufacturer": d.manufacturer,
                "watched": d.watched,
                "announced": d.announced,
                "router": d.router,
                "vendor_strength": d.vendor_strength,
                "evidence": [[e.kind, e.detail, e.ip] for e in d.evidence],
                "model": d.model,
                "firmware": d.firmware,
                "serial": d.serial,
                "protocols": sorted(d.protocols),
                "peers": sorted(d.peers),
            }
            for d in self._devices.values()
        ]

    def restore(self, state: list[dict[str, Any]]) -> int:
        """Load devices saved by `state` (known devices are not announced again); returns how many.

        Entries that do not have the expected shape are skipped: a damaged state file must not stop
        the agent, and the devices it held are rediscovered (announced again) from traffic.
        """
        loaded = 0
        for item in state:
            try:
                dev = Device(int(item["mac"]), int(item["first_seen_ns"]))
                dev.last_seen_ns = int(item["last_seen_ns"])
                dev.ips = [str(ip) for ip in item["ips"]][:MAX_IPS]
                dev.vendor = item["vendor"] if isinstance(item["vendor"], str) else None
                dev.manufacturer = item["manufacturer"] if isinstance(item["manufacturer"], str) else None
                dev.watched = bool(item["watched"])
                dev.announced = bool(item["announced"])
                dev.router = item.get("router") is True
                strength = item.get("vendor_strength")
                dev.vendor_strength = strength if type(strength) is int else STRENGTH_OUI
                dev.evidence = [
                    Evidence(str(e[0]), str(e[1]), e[2] if len(e) > 2 and isinstance(e[2], str) else None)
                    for e in item["evidence"][:MAX_EVIDENCE]
                ]
                for name in ("model", "firmware", "serial"):
                    value = item.get(name)
                    setattr(dev, name, value if isinstance(value, str) else None)
                for p in item.get("protocols", []):
                    dev.add_protocol(str(p))
                for p in item.get("peers", [])[:MAX_PEERS]:
                    dev.add_peer(str(p))
            except (KeyError, TypeError, ValueError):
                continue
            self._devices[dev.mac] = dev
            loaded += 1
        while len(self._devices) > self._max:
            self._devices.popitem(last=False)
        return loaded

    def records(self) -> list[dict[str, Any]]:
        return [d.to_record() for d in sorted(self._devices.values(), key=lambda d: d.mac)]
